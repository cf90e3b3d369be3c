// The SQLite broker on a full disk must never lose work without a trace (docs/reliability.md,
// "When storage is full"): the file sits on a tmpfs of a few MB, a filler file takes the space
// left, and enqueues fail with BrokerFullError naming the disk (HTTP: 503 saying so); a worker
// whose outcomes cannot be stored keeps them and tries again; once the filler is deleted every
// accepted run ends exactly once, and the file passes PRAGMA integrity_check.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { describe, it } from 'node:test';
import { z } from 'zod';
import type { Broker, BrokerInspector } from '../../src/broker/types.ts';
import { createServer } from '../../src/http/index.ts';
import { BrokerFullError, createErrand } from '../../src/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { drainAndReconcile, heldTask } from '../fixtures/storage-full.ts';
import { requires } from '../fixtures/prereq.ts';
import { waitFor } from '../helpers.ts';

/** Mounts a tmpfs of `size` at a new dir; undefined with the reason when mounting is not permitted. */
function mountTmpfs(size: string): { dir: string; unmount(): void } | string {
  const dir = mkdtempSync(join(tmpdir(), 'errand-full-'));
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    return `mount -t tmpfs failed (${(r.error?.message ?? r.stderr).trim()}): the test needs root (or CAP_SYS_ADMIN) to mount a small disk`;
  }
  return {
    dir,
    unmount() {
      spawnSync('umount', ['-l', dir], { timeout: 10_000 });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Writes `path` until it holds `bytes` or the disk is full (ENOSPC); returns the bytes written. */
function fillDisk(path: string, bytes = Number.POSITIVE_INFINITY): number {
  const fd = openSync(path, 'w');
  const block = Buffer.alloc(16 * 1024, 1);
  let written = 0;
  try {
    while (written < bytes) written += writeSync(fd, block);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    closeSync(fd);
  }
  return written;
}

const probe = mountTmpfs('1m');
const missing = typeof probe === 'string' ? probe : undefined;
if (typeof probe !== 'string') probe.unmount();

describe('SQLite on a full disk', () => {
  it('refuses enqueues with BrokerFullError (HTTP 503), keeps outcomes, and ends every accepted run once after space is freed', {
    skip: requires('a tmpfs mount', missing),
  }, async () => {
    const disk = mountTmpfs('4m');
    if (typeof disk === 'string') throw new Error(disk);
    const file = join(disk.dir, 'errand.db');
    const app = createErrand({ broker: `sqlite:${file}`, logger: quietLogger });
    const { executions, count, open, held } = heldTask(app);
    const fill = app.task('fill', { input: z.object({ pad: z.string() }), queue: 'fill' }, (_input, ctx) => {
      count(ctx.runId);
      return 1;
    });
    const broker = (await app.broker()) as Broker & BrokerInspector;
    const worker = app.worker({ queues: ['held'], concurrency: 5, leaseMs: 1000, pruneEvery: 3_600_000 });
    const http = await createServer({ errand: app, logger: false, docs: false });
    const pad = 'x'.repeat(2000);
    const filler = join(disk.dir, 'filler');
    try {
      await worker.start();
      const helds = await Promise.all(Array.from({ length: 5 }, () => held.enqueue({})));
      await waitFor(() => helds.every((h) => executions.get(h.id) === 1), { timeoutMs: 20_000, message: 'the held runs to start' });

      // The disk fills up: a filler file takes half of it, then runs the rest, until the file cannot grow.
      const accepted: string[] = [];
      let refusal: unknown;
      fillDisk(filler, 2 * 1024 * 1024);
      for (let i = 0; refusal === undefined && i < 5000; i++) {
        try {
          accepted.push((await fill.enqueue({ pad })).id);
        } catch (err) {
          refusal = err;
        }
      }
      assert.ok(refusal instanceof BrokerFullError, `refused with ${String(refusal)}`);
      assert.equal(refusal.storage, 'disk');
      assert.match(refusal.message, /SQLite file .*errand\.db cannot grow: the disk that holds it is full/);
      const res = await http.inject({ method: 'POST', url: '/tasks/fill', payload: { pad } });
      assert.equal(res.statusCode, 503, res.body);
      assert.ok(res.headers['retry-after']);
      assert.match(res.json().detail, /out of disk space/);

      // The held runs finish while the disk is full: their outcomes are kept and tried again. (Their
      // leases cannot be renewed either: every write fails. No other worker reserves on their
      // queue here; one that did once space is back could recover them first, as after a broker
      // outage longer than the lease: docs/reliability.md.)
      open();
      await waitFor(() => worker.activeCount === 0, { timeoutMs: 10_000, message: 'the held handlers to return' });
      await new Promise((r) => setTimeout(r, 3000)); // three leases
      const states = await Promise.all(helds.map(async (h) => (await broker.getRun(h.id))?.state));

      // Space is freed: every accepted run ends exactly once.
      unlinkSync(filler);
      await drainAndReconcile(app, broker, { accepted, held: helds.map((h) => h.id) }, executions, 20);
      console.log(
        `[fault-figures] sqlite disk full: ${accepted.length} runs accepted before the refusal; held runs while full: ${states.join(', ')}`,
      );
    } finally {
      open();
      await worker.stop({ graceMs: 0 });
      await http.close();
      await app.close();
      try {
        const db = new DatabaseSync(file, { readOnly: true });
        try {
          assert.deepEqual(
            db
              .prepare('PRAGMA integrity_check')
              .all()
              .map((r) => r.integrity_check),
            ['ok'],
          );
        } finally {
          db.close();
        }
      } finally {
        disk.unmount();
      }
    }
  });
});
