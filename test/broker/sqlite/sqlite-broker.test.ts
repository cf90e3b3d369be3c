/**
 * What is particular to the embedded SQLite broker (the shared semantics are checked by
 * test/conformance): the file set-up (WAL, synchronous, schema version, migrations), several real
 * processes on one file, wake-ups through the folder watch alone, rows corrupted by hand, listings
 * that stay index-driven, the inspector methods, and a process that exits once the broker is closed.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectBroker } from '../../../src/broker/connect.ts';
import { loadSqlite, requireNumberedParameters } from '../../../src/broker/sqlite/load-sqlite.ts';
import { MIGRATIONS, SCHEMA_VERSION } from '../../../src/broker/sqlite/schema.ts';
import { SqliteBroker, type SqliteBrokerOptions } from '../../../src/broker/sqlite/sqlite-broker.ts';
import { SQL } from '../../../src/broker/sqlite/statements.ts';
import { DEBOUNCE_SCAN } from '../../../src/broker/sqlite/transitions.ts';
import type { NewRun, RunError } from '../../../src/broker/types.ts';
import { BrokerUnavailableError, ConfigError } from '../../../src/core/errors.ts';
import { newRunId } from '../../../src/core/ids.ts';

const NODE = new URL('../../../node_modules/.bin/node', import.meta.url).pathname;
const PEER = new URL('../../fixtures/sqlite-peer.ts', import.meta.url).pathname;
const LONG_SAFETY = 60_000;

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function dbPath(): string {
  const dir = mkdtempSync(join(tmpdir(), 'errand-sqlite-test-'));
  dirs.push(dir);
  return join(dir, 'errand.db');
}

const opened: SqliteBroker[] = [];
function open(path: string, options: Partial<SqliteBrokerOptions> = {}): SqliteBroker {
  const b = new SqliteBroker({ path, ...options });
  opened.push(b);
  return b;
}
after(async () => {
  for (const b of opened) await b.close();
});

function run(queue: string, now: number, over: Partial<NewRun> = {}): NewRun {
  return { id: newRunId(queue), task: 'test.task', queue, input: '{"n":1}', priority: 0, runAt: now, ...over };
}

interface Peer {
  child: ChildProcess;
  lines: string[];
  exited: Promise<{ code: number | null; stderr: string }>;
  line(predicate: (l: string) => boolean, what: string): Promise<string>;
}

/** Starts `test/fixtures/sqlite-peer.ts` in another process. */
/** Every peer process, killed at the end so that a failed test never leaves one holding the run open. */
const peers = new Set<ReturnType<typeof spawn>>();
after(() => {
  for (const child of peers) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

function peer(...args: string[]): Peer {
  const child = spawn(NODE, [PEER, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  peers.add(child);
  const lines: string[] = [];
  let stderr = '';
  let buffer = '';
  const waiters = new Set<() => void>();
  child.stdout?.on('data', (chunk: Buffer) => {
    buffer += chunk.toString();
    const parts = buffer.split('\n');
    buffer = parts.pop() ?? '';
    lines.push(...parts);
    for (const w of [...waiters]) w();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = new Promise<{ code: number | null; stderr: string }>((resolve) => {
    child.on('exit', (code) => {
      for (const w of [...waiters]) w();
      resolve({ code, stderr });
    });
  });
  const line = (predicate: (l: string) => boolean, what: string) =>
    new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`peer ${args[0]}: no ${what} within 20 s; stderr: ${stderr}`)), 20_000);
      const check = () => {
        const found = lines.find(predicate);
        if (found !== undefined) {
          clearTimeout(timer);
          waiters.delete(check);
          resolve(found);
        } else if (child.exitCode !== null) {
          clearTimeout(timer);
          waiters.delete(check);
          reject(new Error(`peer ${args[0]} exited (${child.exitCode}) before ${what}; stderr: ${stderr}`));
        }
      };
      waiters.add(check);
      check();
    });
  return { child, lines, exited, line };
}

/** `promise`'s value, or `fallback` after `ms` (the timer never outlives the race). */
async function orAfter<T, F>(promise: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<F>((resolve) => (timer = setTimeout(() => resolve(fallback), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

async function exitOf(p: Peer, what: string, timeoutMs = 20_000): Promise<{ code: number | null; stderr: string }> {
  const r = await orAfter(p.exited, timeoutMs, null);
  if (r === null) {
    p.child.kill('SIGKILL');
    throw new Error(`${what}: the process did not exit within ${timeoutMs} ms`);
  }
  return r;
}

describe('SQLite broker: the file', () => {
  it('is in WAL mode, synchronous NORMAL by default (FULL on request), with a busy timeout and the schema version', async () => {
    const path = dbPath();
    const b = open(path);
    const info = b.storageInfo();
    assert.equal(info.journalMode, 'wal');
    assert.equal(info.synchronous, 'normal');
    assert.ok(info.busyTimeoutMs >= 1000, `busy timeout ${info.busyTimeoutMs}`);
    assert.equal(info.schemaVersion, SCHEMA_VERSION);
    const full = open(path, { synchronous: 'full' });
    assert.equal(full.storageInfo().synchronous, 'full');
    const other = new DatabaseSync(path);
    try {
      assert.equal(
        (other.prepare('PRAGMA journal_mode').get() as { journal_mode: string }).journal_mode,
        'wal',
        'WAL is a property of the file',
      );
      const versions = other.prepare('SELECT version FROM errand_schema ORDER BY version').all() as { version: number }[];
      assert.deepStrictEqual(
        versions.map((v) => v.version),
        MIGRATIONS.map((m) => m.version),
        'every migration recorded once',
      );
    } finally {
      other.close();
    }
  });

  it('refuses bad options and a file written by a newer Errand', async () => {
    assert.throws(() => new SqliteBroker({ path: '' }), ConfigError);
    assert.throws(() => new SqliteBroker({ path: ':memory:', synchronous: 'fast' as 'full' }), ConfigError);
    assert.throws(() => new SqliteBroker({ path: ':memory:', maxLeaseLosses: 0 }), ConfigError);
    const path = dbPath();
    await open(path).close();
    const db = new DatabaseSync(path);
    db.prepare('INSERT INTO errand_schema (version, description, applied_at) VALUES (?, ?, ?)').run(SCHEMA_VERSION + 1, 'future', 0);
    db.close();
    assert.throws(
      () => new SqliteBroker({ path }),
      (err: Error) => err instanceof ConfigError && /newer than this Errand/.test(err.message),
    );
  });

  it('migrates a version 2 file: idempotency keys move under the queue of their run', async () => {
    const path = dbPath();
    const db = new DatabaseSync(path);
    db.exec('PRAGMA journal_mode = WAL');
    db.exec('CREATE TABLE errand_schema (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at INTEGER NOT NULL)');
    for (const m of MIGRATIONS.filter((x) => x.version <= 2)) {
      db.exec(m.sql);
      db.prepare('INSERT INTO errand_schema VALUES (?, ?, 0)').run(m.version, m.description);
    }
    const t0 = Date.now();
    const id = newRunId('mails', t0);
    db.prepare('INSERT INTO idempotency (task, key, run_id, expires_at) VALUES (?, ?, ?, ?)').run('test.task', 'k1', id, t0 + 60_000);
    // The run the key names (a key naming a missing run would be taken by the next enqueue).
    db.prepare(
      "INSERT INTO runs (id, queue, state, task, priority, seq, input, enqueued_at, run_at) VALUES (?, 'mails', 'queued', 'test.task', 0, 1, '{}', ?, ?)",
    ).run(id, t0, t0);
    db.close();

    const b = open(path);
    assert.equal(b.storageInfo().schemaVersion, SCHEMA_VERSION);
    const [same] = await b.enqueue([run('mails', t0, { idempotencyKey: 'k1', idempotencyTtl: 60_000 })], t0 + 1);
    assert.deepStrictEqual(same, { id, created: false, state: 'queued' }, 'the old key still holds, in its queue');
    const [other] = await b.enqueue([run('other', t0, { idempotencyKey: 'k1', idempotencyTtl: 60_000 })], t0 + 1);
    assert.equal(other?.created, true, 'and only there');
  });

  it('migrates a version 15 file: flow keys keep their place in the ring and their GCRA time (v16)', async () => {
    const path = dbPath();
    const db = new DatabaseSync(path);
    db.exec('PRAGMA journal_mode = WAL');
    db.exec('CREATE TABLE errand_schema (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at INTEGER NOT NULL)');
    for (const m of MIGRATIONS.filter((x) => x.version <= 15)) {
      db.exec(m.sql);
      db.prepare('INSERT INTO errand_schema VALUES (?, ?, 0)').run(m.version, m.description);
    }
    // As version 15 left them: two ready keys of one group, one a start per second; key a started
    // last at t0 + 4000 (its GCRA time, in flow_rates, is t0 + 5000), key b never.
    const t0 = Date.now();
    db.prepare("INSERT INTO flow_groups (queue, grp, conc, turn) VALUES ('fq', 'g', 0, 1)").run();
    const key = db.prepare("INSERT INTO flow_keys (queue, grp, key, queued, conc, rate, turn) VALUES ('fq', 'g', ?, 1, 0, '1000,1', ?)");
    key.run('a', 2);
    key.run('b', 3);
    db.prepare("INSERT INTO flow_rates (queue, grp, key, tat) VALUES ('fq', 'g', 'a', ?)").run(t0 + 5000);
    const ids = { a: newRunId('fq', t0), b: newRunId('fq', t0) };
    const insert = db.prepare(`INSERT INTO runs (id, queue, state, task, priority, seq, input, enqueued_at, run_at, flow_group, flow_key,
      flow_kc, flow_gc, flow_krate) VALUES (?, 'fq', 'queued', 'test.task', 0, ?, '{}', ?, ?, 'g', ?, 0, 0, '1000,1')`);
    insert.run(ids.a, 1, t0, t0, 'a');
    insert.run(ids.b, 2, t0, t0, 'b');
    db.close();

    const b = open(path);
    assert.equal(b.storageInfo().schemaVersion, SCHEMA_VERSION);
    const first = await b.reserve({ workerId: 'w', queues: ['fq'], max: 10, leaseMs: 60_000, now: t0 });
    assert.deepStrictEqual(
      first.runs.map((r) => r.id),
      [ids.b],
      'both keys in the ring; key a held by the GCRA time it had',
    );
    assert.equal(first.nextAt, t0 + 5000, 'key a may start again at its GCRA time');
    const later = await b.reserve({ workerId: 'w', queues: ['fq'], max: 10, leaseMs: 60_000, now: t0 + 5000 });
    assert.deepStrictEqual(
      later.runs.map((r) => r.id),
      [ids.a],
    );
  });

  it('a write lock held too long by another connection: BrokerUnavailableError naming the file; reads go on', async () => {
    const path = dbPath();
    const b = open(path, { busyTimeoutMs: 100 });
    const t0 = Date.now();
    const first = run('lock', t0);
    await b.enqueue([first], t0);
    const other = new DatabaseSync(path);
    other.exec('BEGIN IMMEDIATE');
    try {
      await assert.rejects(
        b.enqueue([run('lock', t0)], t0),
        (err: Error) => err instanceof BrokerUnavailableError && err.message.includes(path) && /locked/.test(err.message),
      );
      assert.equal((await b.getRun(first.id))?.state, 'queued', 'readers are never blocked by the writer (WAL)');
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
    assert.equal((await b.enqueue([run('lock', t0)], t0))[0]?.created, true, 'and it works again once the lock is gone');
    await b.close();
    await assert.rejects(b.getRun(first.id), BrokerUnavailableError);
  });

  it('connects from a sqlite: URL, creating the folder', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'errand-sqlite-url-'));
    dirs.push(dir);
    const b = await connectBroker(`sqlite:${join(dir, 'sub', 'errand.db')}`);
    try {
      assert.equal(b.kind, 'sqlite');
      await b.ping();
    } finally {
      await b.close();
    }
    const mem = await connectBroker('sqlite::memory:');
    await mem.ping();
    await mem.close();
  });

  it('drops the ExperimentalWarning about SQLite while loading node:sqlite, and no other warning', async () => {
    const seen: string[] = [];
    const onWarning = (w: Error) => seen.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    const original = process.getBuiltinModule;
    process.getBuiltinModule = ((id: string) => {
      process.emitWarning('SQLite is an experimental feature and might change at any time', 'ExperimentalWarning');
      process.emitWarning('Something else is experimental', 'ExperimentalWarning');
      process.emitWarning('SQLite thing, but a deprecation', 'DeprecationWarning');
      return original(id);
    }) as typeof process.getBuiltinModule;
    try {
      assert.equal(typeof loadSqlite().DatabaseSync, 'function');
    } finally {
      process.getBuiltinModule = original;
    }
    process.emitWarning('SQLite is an experimental feature and might change at any time', 'ExperimentalWarning');
    await sleep(10);
    process.off('warning', onWarning);
    assert.deepStrictEqual(seen, [
      'ExperimentalWarning: Something else is experimental',
      'DeprecationWarning: SQLite thing, but a deprecation',
      'ExperimentalWarning: SQLite is an experimental feature and might change at any time',
    ]);
  });
});

describe('SQLite broker: a Node.js whose node:sqlite cannot bind numbered parameters', () => {
  it("is refused with a ConfigError naming the versions to use (Node.js 22.13 to 22.19 and 24.0 to 24.6 answer 'column index out of range')", () => {
    // node:sqlite as those releases behave: `?1` is not bound.
    class DatabaseSync {
      prepare() {
        return {
          get: () => {
            throw new Error('column index out of range');
          },
        };
      }
      close() {}
    }
    assert.throws(
      () => requireNumberedParameters({ DatabaseSync } as unknown as Parameters<typeof requireNumberedParameters>[0], 'v22.19.0'),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message ===
          'The SQLite broker needs Node.js 22.20 or newer (22 LTS), or 24.7 or newer: the node:sqlite of Node.js v22.19.0 cannot bind ' +
            'numbered parameters (?1). Upgrade Node.js, or use the Redis broker (REDIS_URL).',
    );
    // This Node.js binds them: nothing thrown.
    requireNumberedParameters(loadSqlite());
  });
});

describe('SQLite broker: several processes on one file', () => {
  it('two worker processes reserving concurrently never get the same run, and together get every run', async () => {
    const path = dbPath();
    const b = open(path);
    const peers = [peer('race', path, 'p1', 'race'), peer('race', path, 'p2', 'race')];
    await Promise.all(peers.map((p) => p.line((l) => l === 'ready', '"ready"')));
    await sleep(200); // both are now asleep in waitForWork: the enqueue below wakes them through the file
    const t0 = Date.now();
    const runs = Array.from({ length: 3000 }, (_, i) => run('race', t0, { priority: i % 3 }));
    await b.enqueue(runs, t0);
    const got = await Promise.all(peers.map(async (p) => JSON.parse(await p.line((l) => l.startsWith('['), 'ids')) as string[]));
    for (const p of peers) assert.equal((await exitOf(p, 'race peer')).code, 0);
    const all = got.flat();
    assert.equal(new Set(all).size, all.length, 'no run delivered twice');
    assert.deepStrictEqual(new Set(all), new Set(runs.map((r) => r.id)), 'every run delivered');
    // Usually both processes take runs; one may also wake after the other drained the queue, which
    // is fine: what must hold is that no run goes out twice and none is missed.
    assert.deepStrictEqual((await b.counts(['race'])).race, {
      waiting: 0,
      queued: 0,
      scheduled: 0,
      active: 0,
      succeeded: 3000,
      failed: 0,
      cancelled: 0,
    });
    for (const id of [runs[0]!.id, runs[1500]!.id, runs[2999]!.id]) {
      const rec = await b.getRun(id);
      assert.equal(rec?.attempts, 1, `${id} ran once`);
    }
  });

  it('waitForWork is woken by an enqueue in another process through the file watch (not the safety timer)', async () => {
    const path = dbPath();
    const b = open(path, { safetyWakeMs: LONG_SAFETY });
    await b.reserve({ workerId: 'w', queues: ['wake'], max: 1, leaseMs: 1000, now: Date.now() });
    const ac = new AbortController();
    let woke = false;
    const waiting = b.waitForWork(['wake'], null, ac.signal).then(() => {
      woke = true;
    });
    await sleep(100);
    assert.equal(woke, false, 'nothing to wake for yet');
    const p = peer('enqueue', path, 'wake', newRunId('wake'));
    assert.equal((await exitOf(p, 'enqueue peer')).code, 0);
    // The safety timer (LONG_SAFETY) is longer than this wait: woken at all, it was by the file watch.
    await orAfter(waiting, 15_000, null);
    ac.abort();
    assert.ok(woke, 'woken by the other process');
    const { runs } = await b.reserve({ workerId: 'w', queues: ['wake'], max: 1, leaseMs: 1000, now: Date.now() });
    assert.equal(runs.length, 1);
  });

  it('an enqueue in another process between reserve and waitForWork is not lost', async () => {
    const path = dbPath();
    const b = open(path, { safetyWakeMs: LONG_SAFETY });
    await b.reserve({ workerId: 'w', queues: ['gap'], max: 1, leaseMs: 1000, now: Date.now() });
    assert.equal((await exitOf(peer('enqueue', path, 'gap', newRunId('gap')), 'enqueue peer')).code, 0);
    await sleep(100); // the file event has come and gone with no waiter
    const ac = new AbortController();
    const outcome = await orAfter(
      b.waitForWork(['gap'], null, ac.signal).then(() => 'woken'),
      5000,
      'slept',
    );
    ac.abort();
    assert.equal(outcome, 'woken');
  });

  it('watch and onCancel hear of changes made in another process', async () => {
    const path = dbPath();
    const b = open(path, { safetyWakeMs: LONG_SAFETY });
    const t0 = Date.now();
    const settled = run('w', t0);
    const cancelled = run('w', t0);
    await b.enqueue([settled, cancelled], t0);
    let calls = 0;
    const stop = await b.watch(settled.id, () => calls++);
    const p = peer('settle', path, 'w');
    assert.equal((await exitOf(p, 'settle peer')).code, 0);
    for (let i = 0; i < 200 && calls === 0; i++) await sleep(25);
    stop();
    assert.ok(calls > 0, 'the watcher was called');
    assert.equal((await b.getRun(settled.id))?.state, 'succeeded');

    await b.reserve({ workerId: 'here', queues: ['w'], max: 1, leaseMs: 60_000, now: t0 });
    const heard: string[] = [];
    const stopCancel = b.onCancel((ids) => heard.push(...ids));
    assert.equal((await exitOf(peer('cancel', path, cancelled.id), 'cancel peer')).code, 0);
    for (let i = 0; i < 200 && heard.length === 0; i++) await sleep(25);
    stopCancel();
    assert.deepStrictEqual(heard, [cancelled.id]);
  });

  it('close() leaves nothing behind: the process exits by itself, with or without close()', async () => {
    const path = dbPath();
    open(path);
    const closing = peer('idle-close', path, 'q');
    const r1 = await exitOf(closing, 'a process that closed its broker', 10_000);
    assert.equal(r1.code, 0, r1.stderr);
    assert.ok(closing.lines.includes('closed'));
    const idle = peer('open-only', path);
    const r2 = await exitOf(idle, 'a process with an open, idle broker', 10_000);
    assert.equal(r2.code, 0, r2.stderr);
    assert.ok(!/ExperimentalWarning/.test(r1.stderr + r2.stderr), `no ExperimentalWarning: ${r1.stderr}${r2.stderr}`);
  });
});

describe('SQLite broker: corrupt rows', () => {
  it('reserve fails corrupt runs with reason corrupt, hands out the good ones, and never throws', async () => {
    const path = dbPath();
    const b = open(path);
    const t0 = Date.now();
    const runs = Array.from({ length: 7 }, () => run('bad', t0));
    await b.enqueue(runs, t0);
    const [nullTask, blobInput, textPriority, hugeTime, nullAttempts, badHistory, good] = runs.map((r) => r.id) as string[];
    const db = new DatabaseSync(path, { timeout: 5000 });
    db.prepare('UPDATE runs SET task = NULL WHERE id = ?').run(nullTask!);
    db.prepare("UPDATE runs SET input = X'00FF10' WHERE id = ?").run(blobInput!);
    db.prepare("UPDATE runs SET priority = 'high' WHERE id = ?").run(textPriority!);
    db.prepare('UPDATE runs SET enqueued_at = 9007199254740993 * 512 WHERE id = ?').run(hugeTime!);
    db.prepare('UPDATE runs SET attempts = NULL WHERE id = ?').run(nullAttempts!);
    db.prepare("UPDATE runs SET history = '{not json' WHERE id = ?").run(badHistory!);
    const bare = newRunId('bad');
    db.prepare("INSERT INTO runs (id, queue, state) VALUES (?, 'bad', 'queued')").run(bare);
    db.close();

    const { runs: got } = await b.reserve({ workerId: 'w1', queues: ['bad'], max: 3, leaseMs: 60_000, now: t0 + 1 });
    assert.deepStrictEqual(
      got.map((r) => r.id).sort(),
      [badHistory, good].sort(),
      'the good runs (a garbled history is rebuilt, not fatal), whatever the slots the corrupt ones took',
    );
    for (const id of [nullTask, blobInput, textPriority, hugeTime, nullAttempts, bare] as string[]) {
      const rec = await b.getRun(id);
      assert.ok(rec, `getRun(${id}) reads a corrupt run without throwing`);
      assert.equal(rec.state, 'failed', `${id} failed`);
      const err = JSON.parse(rec.error ?? '{}') as RunError;
      assert.equal(err.reason, 'corrupt');
      assert.match(err.message, /stored corrupt/);
    }
    assert.match(JSON.parse((await b.getRun(nullTask!))?.error ?? '{}').message, /task is NULL/);
    assert.match(JSON.parse((await b.getRun(blobInput!))?.error ?? '{}').message, /input is a blob/);
    assert.match(JSON.parse((await b.getRun(textPriority!))?.error ?? '{}').message, /priority is text "high"/);
    const repaired = await b.getRun(badHistory!);
    assert.equal(repaired?.history.length, 1, 'a fresh history with the current attempt');
    const again = await b.reserve({ workerId: 'w1', queues: ['bad'], max: 10, leaseMs: 60_000, now: t0 + 2 });
    assert.deepStrictEqual(again.runs, [], 'nothing left, nothing thrown');
    assert.equal((await b.counts(['bad'])).bad?.failed, 6);
  });
});

describe('SQLite broker: weighted keys (one pass per call)', () => {
  const keyed = (key: string, weight: number, n: number, now: number) =>
    Array.from({ length: n }, (_, i) => run('wq', now, { input: JSON.stringify({ key, i }), flow: { group: 'g', key, weight } }));
  const names = (runs: { input: string }[]) =>
    runs.map((r) => {
      const { key, i } = JSON.parse(r.input) as { key: string; i: number };
      return `${key}:${i}`;
    });

  it('the only ready key is served whole turns in one go, and its streak goes on from where the last turn stopped', async () => {
    const b = open(dbPath());
    const t0 = Date.now();
    await b.enqueue(keyed('a', 3, 12, t0), t0);
    const one = await b.reserve({ workerId: 'w1', queues: ['wq'], max: 8, leaseMs: 60_000, now: t0 });
    assert.deepStrictEqual(names(one.runs), ['a:0', 'a:1', 'a:2', 'a:3', 'a:4', 'a:5', 'a:6', 'a:7']);
    // 3 + 3 + 2: a's last turn has one run left when b comes.
    await b.enqueue(keyed('b', 1, 5, t0 + 1), t0 + 1);
    const two = await b.reserve({ workerId: 'w1', queues: ['wq'], max: 4, leaseMs: 60_000, now: t0 + 2 });
    assert.deepStrictEqual(names(two.runs), ['a:8', 'b:0', 'a:9', 'a:10']);
  });

  it("a corrupt run of a weighted key takes no slot, and the keys' counts stay exact", async () => {
    const path = dbPath();
    const b = open(path);
    const t0 = Date.now();
    const a = keyed('a', 3, 5, t0);
    await b.enqueue([...a, ...keyed('b', 2, 5, t0)], t0);
    const db = new DatabaseSync(path, { timeout: 5000 });
    db.prepare('UPDATE runs SET task = NULL WHERE id = ?').run(a[1]!.id);
    const { runs } = await b.reserve({ workerId: 'w1', queues: ['wq'], max: 5, leaseMs: 60_000, now: t0 + 1 });
    // a's turn of 3 took a:1 too (failed, corrupt): the call's last slot goes to the next turn, a's.
    assert.deepStrictEqual(names(runs), ['a:0', 'a:2', 'b:0', 'b:1', 'a:3']);
    assert.equal((await b.getRun(a[1]!.id))?.state, 'failed');
    const keys = db.prepare("SELECT key, queued, active, streak FROM flow_keys WHERE queue = 'wq' ORDER BY key").all();
    db.close();
    assert.deepStrictEqual(
      keys.map((k) => ({ ...k })),
      [
        { key: 'a', queued: 1, active: 3, streak: 1 },
        { key: 'b', queued: 3, active: 2, streak: 0 },
      ],
    );
  });
});

describe('SQLite broker: listings and inspection', () => {
  it('lists newest first with every filter, pages without gaps or repeats', async () => {
    const b = open(dbPath());
    const t0 = Date.now();
    const all: NewRun[] = [];
    for (let i = 0; i < 120; i++) all.push(run(i % 3 ? 'qa' : 'qb', t0, { task: i % 2 ? 't.one' : 't.two' }));
    for (let i = 0; i < all.length; i += 40) await b.enqueue(all.slice(i, i + 40), t0);
    const { runs } = await b.reserve({ workerId: 'w', queues: ['qa', 'qb'], max: 50, leaseMs: 60_000, now: t0 });
    await b.settle(
      'w',
      runs.map((r, i) =>
        i % 4 === 0
          ? { id: r.id, attempt: 1, outcome: 'failed' as const, error: '{}', retentionMs: 60_000 }
          : { id: r.id, attempt: 1, outcome: 'succeeded' as const, result: '1', retentionMs: 60_000 },
      ),
      t0,
    );
    const records = await Promise.all(all.map(async (r) => (await b.getRun(r.id))!));
    const filters = [
      {},
      { queue: 'qa' },
      { task: 't.one' },
      { state: 'failed' as const },
      { state: 'queued' as const },
      { queue: 'qb', state: 'succeeded' as const },
      { task: 't.two', state: 'queued' as const },
      { queue: 'qa', task: 't.one' },
      { queue: 'qa', task: 't.two', state: 'succeeded' as const },
    ];
    for (const f of filters) {
      const expected = records
        .filter(
          (r) =>
            (!('queue' in f) || r.queue === f.queue) && (!('task' in f) || r.task === f.task) && (!('state' in f) || r.state === f.state),
        )
        .map((r) => r.id)
        .reverse();
      const seen: string[] = [];
      let cursor: string | undefined;
      for (let page = 0; page < 100; page++) {
        const res = await b.listRuns({ ...f, limit: 7, ...(cursor ? { cursor } : {}) });
        assert.ok(res.runs.length <= 7);
        seen.push(...res.runs.map((r) => r.id));
        if (!res.next) break;
        cursor = res.next;
      }
      assert.deepStrictEqual(seen, expected, `listRuns(${JSON.stringify(f)})`);
    }
    await assert.rejects(b.listRuns({ limit: 5, cursor: 'garbage' }), ConfigError);
  });

  it('every listing, counting and hot-path query is index-driven (no table scan, no sort of the runs)', async () => {
    const path = dbPath();
    await open(path).close();
    const db = new DatabaseSync(path);
    try {
      for (const [name, sql] of Object.entries(SQL)) {
        if (/^(BEGIN|COMMIT)/.test(sql) || !/\bruns\b/.test(sql)) continue;
        const named = [...sql.matchAll(/:(\w+)/g)].map((m) => m[1] as string);
        const positional = Math.max(0, ...[...sql.matchAll(/\?(\d+)/g)].map((m) => Number(m[1])), (sql.match(/\?(?!\d)/g) ?? []).length);
        const st = db.prepare(`EXPLAIN QUERY PLAN ${sql}`);
        const plan = (
          named.length ? st.all(Object.fromEntries(named.map((n) => [n, null]))) : st.all(...new Array(positional).fill(null))
        ) as { detail: string }[];
        const text = plan.map((p) => p.detail).join(' | ');
        if (name === 'countsAll') {
          assert.match(text, /COVERING INDEX runs_by_queue_state/, `${name}: ${text}`);
          continue;
        }
        assert.ok(!/SCAN runs\b(?! USING)/.test(text), `${name} scans the runs table: ${text}`);
        if (name !== 'promote') assert.ok(!/TEMP B-TREE/.test(text), `${name} sorts: ${text}`);
      }
    } finally {
      db.close();
    }
  });

  it('pause keeps a queue out of reserve until resumed (which wakes the waiters); purge and retryFailed work in bulk', async () => {
    const b = open(dbPath(), { safetyWakeMs: LONG_SAFETY });
    const t0 = Date.now();
    await b.enqueue([run('p', t0), run('p', t0), run('p', t0, { runAt: t0 + 10 })], t0);
    await b.pause('p');
    assert.deepStrictEqual(await b.pausedQueues(), ['p']);
    const paused = await b.reserve({ workerId: 'w', queues: ['p'], max: 10, leaseMs: 1000, now: t0 + 100 });
    assert.deepStrictEqual(paused, { runs: [], nextAt: null });
    const ac = new AbortController();
    const waiting = b.waitForWork(['p'], null, ac.signal).then(() => 'woken');
    await b.resume('p');
    assert.equal(await orAfter(waiting, 5000, 'slept'), 'woken');
    ac.abort();
    assert.deepStrictEqual(await b.pausedQueues(), []);
    const { runs } = await b.reserve({ workerId: 'w', queues: ['p'], max: 10, leaseMs: 1000, now: t0 + 100 });
    assert.equal(runs.length, 3);
    await b.settle(
      'w',
      runs.map((r) => ({ id: r.id, attempt: 1, outcome: 'failed' as const, error: '{}', retentionMs: 60_000 })),
      t0 + 200,
    );
    assert.equal(await b.retryFailed('p', 'no.such.task', t0 + 300), 0);
    assert.equal(await b.retryFailed('p', undefined, t0 + 300), 3);
    assert.deepStrictEqual((await b.counts(['p'])).p, {
      waiting: 0,
      queued: 3,
      scheduled: 0,
      active: 0,
      succeeded: 0,
      failed: 0,
      cancelled: 0,
    });
    await b.enqueue([run('p', t0, { runAt: t0 + 60_000 })], t0 + 300);
    assert.equal(await b.purge('p', t0 + 400), 4);
    assert.deepStrictEqual((await b.counts(['p'])).p, {
      waiting: 0,
      queued: 0,
      scheduled: 0,
      active: 0,
      succeeded: 0,
      failed: 0,
      cancelled: 0,
    });
    assert.deepStrictEqual(await b.listQueues(), ['p']);
  });

  it('keeps per-minute stats and a worker registry', async () => {
    const b = open(dbPath());
    const minute = Math.floor(Date.now() / 60_000) * 60_000;
    const t0 = minute + 1000;
    await b.enqueue([run('s', t0), run('s', t0), run('s', t0)], t0);
    const { runs } = await b.reserve({ workerId: 'w', queues: ['s'], max: 3, leaseMs: 60_000, now: t0 + 3 });
    const [a, c, d] = runs as unknown as [{ id: string }, { id: string }, { id: string }];
    await b.settle(
      'w',
      [
        { id: a.id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: 60_000 },
        { id: c.id, attempt: 1, outcome: 'failed', error: '{}', retentionMs: 60_000 },
        { id: d.id, attempt: 1, outcome: 'retry', error: '{}', runAt: t0 + 5000 },
      ],
      t0 + 40,
    );
    const stats = await b.stats(['s', 'none'], minute);
    assert.deepStrictEqual(stats.none, []);
    assert.equal(stats.s?.length, 1);
    const m = stats.s![0]!;
    assert.deepStrictEqual([m.minute, m.enqueued, m.succeeded, m.failed, m.retried], [minute, 3, 1, 1, 1]);
    assert.deepStrictEqual(m.wait, [0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 'three runs waited 3 ms (bucket <= 5 ms)');
    assert.deepStrictEqual(m.run, [0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 'three attempts ran 37 ms (bucket <= 50 ms)');

    const info = { id: 'w1', host: 'h', pid: 1, queues: ['s'], concurrency: 4, active: 2, startedAt: t0 };
    await b.heartbeat(info, 15_000, t0);
    await b.heartbeat({ ...info, id: 'w2' }, 15_000, t0);
    await b.removeWorker('w2');
    assert.deepStrictEqual(await b.listWorkers(t0 + 20_000), [{ ...info, lastSeen: t0, ttlMs: 15_000 }]);
    assert.deepStrictEqual(await b.listWorkers(t0 + 2 * 3_600_000), [], 'forgotten after an hour');
  });
});

describe('SQLite broker: debounce rows', () => {
  const keys = (path: string) => {
    const db = new DatabaseSync(path);
    try {
      return (db.prepare('SELECT key FROM debounce ORDER BY key').all() as { key: string }[]).map((r) => r.key);
    } finally {
      db.close();
    }
  };

  it('prune deletes the rows whose run no longer takes the burst (queued, started, finished) and keeps the others', async () => {
    const path = dbPath();
    const b = open(path);
    const t0 = Date.now();
    const debounced = (key: string, window: number) => run('d', t0, { runAt: t0 + window, debounce: { key, maxAt: null } });
    const [live, done, cancelled, due] = await b.enqueue(
      [debounced('live', 60_000), debounced('done', 10), debounced('cancelled', 60_000), debounced('due', 10)],
      t0,
    );
    await b.cancel(cancelled!.id, t0 + 1);
    // 'done' and 'due' are due: the reserve promotes both and leases one, which then succeeds.
    const { runs } = await b.reserve({ workerId: 'w', queues: ['d'], max: 1, leaseMs: 60_000, now: t0 + 20 });
    assert.equal(runs.length, 1);
    await b.settle('w', [{ id: runs[0]!.id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: 60_000 }], t0 + 30);
    assert.deepStrictEqual(keys(path), ['cancelled', 'done', 'due', 'live']);
    await b.prune(t0 + 40);
    assert.deepStrictEqual(keys(path), ['live'], 'only the row whose run is still scheduled');
    // The kept row still debounces: the next enqueue of its key moves its run.
    const [again] = await b.enqueue([debounced('live', 60_000)], t0 + 50);
    assert.deepStrictEqual([again?.id, again?.created], [live?.id, false]);
    for (const r of [done, due]) assert.ok(r?.created);
  });

  it('reads a bounded number of rows per prune call, going on where the last call stopped (rows of runs gone)', async () => {
    const path = dbPath();
    const b = open(path);
    await b.prune(Date.now()); // opens (creates) the file
    const db = new DatabaseSync(path);
    const total = 2 * DEBOUNCE_SCAN + 1234;
    try {
      db.exec('BEGIN');
      const put = db.prepare("INSERT INTO debounce (queue, task, key, run_id) VALUES ('q', 't', ?, 'q.gone')");
      for (let i = 0; i < total; i++) put.run(`k${String(i).padStart(6, '0')}`);
      db.exec('COMMIT');
    } finally {
      db.close();
    }
    const left = [total];
    for (let i = 0; i < 3; i++) {
      await b.prune(Date.now());
      left.push(keys(path).length);
    }
    assert.deepStrictEqual(left, [total, total - DEBOUNCE_SCAN, total - 2 * DEBOUNCE_SCAN, 0]);
  });
});
