/**
 * Processes that open one SQLite file at the same moment (an API and its workers started together on
 * a fresh `DATA_DIR`): the embedded broker and the users store must both come up, whatever the others
 * are doing to the file. The deterministic cases hold the write lock from another thread at the exact
 * step that SQLite refuses without waiting on its busy handler (switching a new file to WAL while
 * another connection holds a write lock); the last case starts real processes together, many times.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { SqliteUserStore } from '../../../app/users/sqlite-store.ts';
import { SqliteBusyError } from '../../../src/broker/sqlite/busy.ts';
import { SqliteBroker } from '../../../src/broker/sqlite/sqlite-broker.ts';
import { tempDir } from '../../helpers.ts';

const NODE = new URL('../../../node_modules/.bin/node', import.meta.url).pathname;
const OPENER = new URL('../../fixtures/open-sqlite.ts', import.meta.url).pathname;

function tableExists(path: string, name: string): boolean {
  const db = new DatabaseSync(path);
  try {
    return db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name) !== undefined;
  } finally {
    db.close();
  }
}

describe('opening one SQLite file from several processes at once', () => {
  for (const which of ['users store', 'embedded broker'] as const) {
    const open = async (path: string, busyTimeoutMs?: number) => {
      if (which === 'users store') {
        const store = new SqliteUserStore({ path, busyTimeoutMs });
        await store.init();
        await store.close();
      } else {
        await new SqliteBroker({ path, busyTimeoutMs }).close();
      }
    };

    it(`the ${which} waits for another process's write lock on a new file, then opens it in WAL mode`, async () => {
      const path = join(tempDir('errand-sqlite-startup'), 'errand.db');
      const gate = new Int32Array(new SharedArrayBuffer(4));
      const holder = lockHolderWithGate(path, gate);
      await holder.locked;
      // The switch to WAL now answers SQLITE_BUSY at once (no busy handler): without retries the open
      // fails with "database is locked". Another thread lets the lock go while the open retries.
      const started = new Int32Array(new SharedArrayBuffer(4));
      const released = releaseGate(gate, started);
      Atomics.store(started, 0, 1);
      Atomics.notify(started, 0);
      await open(path);
      await released;
      await holder.done;
      assert.ok(tableExists(path, 'held_by_other_process'), "the other process's transaction was committed, not broken");
      const db = new DatabaseSync(path);
      try {
        assert.deepEqual({ ...(db.prepare('PRAGMA journal_mode').get() as object) }, { journal_mode: 'wal' });
      } finally {
        db.close();
      }
    });

    it(`the ${which} gives up past its busy timeout with an error naming the file and the step`, async () => {
      const path = join(tempDir('errand-sqlite-startup'), 'errand.db');
      const gate = new Int32Array(new SharedArrayBuffer(4));
      const holder = lockHolderWithGate(path, gate);
      await holder.locked;
      try {
        await assert.rejects(open(path, 100), (err: Error) => {
          const busy = err instanceof SqliteBusyError ? err : (err.cause as Error | undefined);
          assert.ok(busy instanceof SqliteBusyError, `a SqliteBusyError, got ${err.name}: ${err.message}`);
          assert.match(
            busy.message,
            /Cannot switch to WAL mode in the SQLite file .*errand\.db: other processes kept it locked for over 100 ms/,
          );
          return true;
        });
      } finally {
        Atomics.store(gate, 0, 1);
        Atomics.notify(gate, 0);
        await holder.done;
      }
    });
  }

  it('8 processes opening the broker and the users store on one new file at the same instant all come up, round after round', async () => {
    const dir = tempDir('errand-sqlite-startup');
    const processes = 8;
    const rounds = 20;
    // Far enough ahead for every process to have loaded its modules; each round is a new file.
    const startAt = Date.now() + 4000;
    const outputs = await Promise.all(
      Array.from({ length: processes }, () => {
        const child = spawn(NODE, [OPENER, dir, String(startAt), String(rounds), '150'], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d;
        });
        child.stderr.on('data', (d: Buffer) => {
          err += d;
        });
        return new Promise<{ code: number | null; out: string; err: string }>((resolve) =>
          child.on('close', (code) => resolve({ code, out, err })),
        );
      }),
    );
    for (const { code, out, err } of outputs) {
      assert.equal(code, 0, `the opener exited with ${code}: ${err}`);
      assert.deepEqual(JSON.parse(out), { failures: [] });
    }
  });
});

/** As `lockHolder`, with the gate given by the caller; `done` resolves once the holder committed and exited. */
function lockHolderWithGate(path: string, gate: Int32Array): { locked: Promise<void>; done: Promise<void> } {
  const worker = new Worker(
    `
    const { workerData, parentPort } = require('node:worker_threads');
    const { DatabaseSync } = process.getBuiltinModule('node:sqlite');
    const db = new DatabaseSync(workerData.path);
    db.exec('BEGIN IMMEDIATE');
    db.exec('CREATE TABLE held_by_other_process (x)');
    parentPort.postMessage('locked');
    Atomics.wait(workerData.gate, 0, 0);
    db.exec('COMMIT');
    db.close();
    `,
    { eval: true, workerData: { path, gate } },
  );
  const locked = new Promise<void>((resolve, reject) => {
    worker.once('message', () => resolve());
    worker.once('error', reject);
  });
  const done = new Promise<void>((resolve, reject) => {
    worker.once('exit', () => resolve());
    worker.once('error', reject);
  });
  return { locked, done };
}

/**
 * Opens the gate from another thread, a short pause after `started` is set (just before this thread
 * calls into SQLite and blocks there).
 */
function releaseGate(gate: Int32Array, started: Int32Array): Promise<void> {
  const flipper = new Worker(
    `
    const { workerData } = require('node:worker_threads');
    Atomics.wait(workerData.started, 0, 0);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 150);
    Atomics.store(workerData.gate, 0, 1);
    Atomics.notify(workerData.gate, 0);
    `,
    { eval: true, workerData: { gate, started } },
  );
  return new Promise((resolve, reject) => {
    flipper.once('exit', () => resolve());
    flipper.once('error', reject);
  });
}
