// Garbage written straight into broker storage, many kinds at once, under a running worker: every
// affected run ends failed with a reason (corrupt, unknown_task, invalid_input) or, where the
// garbage is harmless, runs; the good runs around them succeed; the worker keeps going (a run
// enqueued afterwards succeeds, the worker is still running, nothing crashes). The broker tests
// cover each kind of corruption at the broker level (test/broker/redis/redis-broker.test.ts,
// test/broker/sqlite/sqlite-broker.test.ts) and test/worker/worker.test.ts the worker with bad
// input sent through enqueue; this file puts them together against a real worker, per broker.
// Redis: a redis-server of the test's own (its keys are overwritten by hand). SQLite: a temp file.
import assert from 'node:assert/strict';
import { DatabaseSync } from 'node:sqlite';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { z } from 'zod';
import type { Broker, RunError } from '../../src/broker/types.ts';
import { createServer } from '../../src/http/index.ts';
import { createErrand, type Errand, type RunEvent, type Worker } from '../../src/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { redisServerMissing, requires } from '../fixtures/prereq.ts';
import { type OwnRedis, startRedisServer } from '../fixtures/redis-servers.ts';
import { tempDir, waitFor } from '../helpers.ts';

const QUEUE = 'mail';
const LIMIT = { timeoutMs: 30_000, intervalMs: 25 };

/** What must become of a run: its final state, and for a failure the reason. */
interface Expect {
  id: string;
  what: string;
  state: 'succeeded' | 'failed';
  reason?: string;
}

function app(broker: string): { errand: Errand; enqueue: (n: number) => Promise<string> } {
  const errand = createErrand({ broker, logger: quietLogger });
  const send = errand.task('send', { input: z.object({ to: z.email(), n: z.number().int() }), queue: QUEUE, retries: 1 }, ({ n }) => n);
  return { errand, enqueue: async (n) => (await send.enqueue({ to: `u${n}@example.com`, n })).id };
}

/** Starts a worker, waits for every expectation, checks the worker kept going; returns the worker's crash-free events. */
async function runAndCheck(errand: Errand, broker: Broker, expects: Expect[], enqueueAfter: () => Promise<string>): Promise<void> {
  // A run of a task the worker does not define fails at once (it would be handed back for a while first).
  const worker: Worker = errand.worker({ concurrency: 4, leaseMs: 5000, unknownTaskWaitMs: 0 });
  const events: RunEvent[] = [];
  worker.on('run', (e: RunEvent) => events.push(e));
  const unhandled: unknown[] = [];
  const onUnhandled = (err: unknown) => unhandled.push(err);
  process.on('unhandledRejection', onUnhandled);
  await worker.start();
  try {
    for (const e of expects) {
      const rec = await waitFor(
        async () => {
          const r = await broker.getRun(e.id);
          return r && (r.state === 'succeeded' || r.state === 'failed') ? r : undefined;
        },
        { ...LIMIT, message: `run ${e.id} (${e.what}) to finish` },
      );
      assert.equal(rec.state, e.state, `${e.what}: ${rec.state} ${rec.error ?? ''}`);
      if (e.state === 'failed') {
        const err = JSON.parse(rec.error ?? '{}') as RunError;
        assert.equal(err.reason, e.reason, `${e.what}: reason ${err.reason} (${err.message})`);
        assert.ok(err.message.length > 0, `${e.what}: a message`);
      }
    }
    // The worker is still going: a run enqueued now succeeds.
    const later = await enqueueAfter();
    const rec = await waitFor(async () => (await broker.getRun(later))?.state === 'succeeded', {
      ...LIMIT,
      message: 'a run enqueued after the garbage to succeed',
    });
    assert.ok(rec);
    assert.equal(worker.state, 'running');
    assert.deepEqual(unhandled, [], 'no unhandled rejection');
    // And every one of them reads back, through the library and over HTTP, without a 5xx.
    const server = await createServer({ errand, logger: false, docs: false, dashboard: false });
    try {
      for (const e of expects) {
        await errand.getRun(e.id);
        const res = await server.inject({ method: 'GET', url: `/runs/${e.id}` });
        assert.equal(res.statusCode, 200, `GET /runs/{id} of ${e.what}: ${res.statusCode} ${res.body}`);
        assert.equal((res.json() as { state: string }).state, e.state, e.what);
      }
    } finally {
      await server.close();
    }
  } finally {
    process.off('unhandledRejection', onUnhandled);
    await worker.stop();
  }
}

describe('garbage in Redis storage, under a running worker', { skip: requires('redis-server binary', redisServerMissing()) }, () => {
  let server: OwnRedis | undefined;
  let errand: Errand | undefined;
  after(async () => {
    await errand?.close();
    await server?.stop();
  });

  it('each affected run fails with a reason (or runs, when the garbage is harmless); the rest run; the worker goes on', async () => {
    server = await startRedisServer(join(tempDir('errand-garbage'), 'redis'), []);
    const url = `redis://127.0.0.1:${server.port}`;
    const a = app(url);
    errand = a.errand;
    const broker = await errand.broker();
    const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await redis.connect();
    try {
      // Enqueued properly (no worker yet), then overwritten by hand.
      const ids: string[] = [];
      for (let n = 0; n < 20; n++) ids.push(await a.enqueue(n));
      const key = (id: string) => `errand:{${QUEUE}}:r:${id.slice(QUEUE.length + 1)}`;
      const expects: Expect[] = [];
      const garbage = async (i: number, what: string, write: (k: string) => Promise<unknown>, state: Expect['state'], reason?: string) => {
        await write(key(ids[i]!));
        expects.push({ id: ids[i]!, what, state, ...(reason ? { reason } : {}) });
      };
      await garbage(1, 'truncated JSON input', (k) => redis.hset(k, 'i', '{"to":"u1@example.com","n":'), 'failed', 'corrupt');
      await garbage(3, 'input of the wrong type (a string)', (k) => redis.hset(k, 'i', '"u3@example.com"'), 'failed', 'invalid_input');
      await garbage(4, 'input of the wrong type (null)', (k) => redis.hset(k, 'i', 'null'), 'failed', 'invalid_input');
      await garbage(5, 'a field of the wrong type', (k) => redis.hset(k, 'i', '{"to":42,"n":"five"}'), 'failed', 'invalid_input');
      await garbage(6, 'an unknown task name', (k) => redis.hset(k, 't', 'no_such_task'), 'failed', 'unknown_task');
      await garbage(7, 'binary garbage as input', (k) => redis.hset(k, 'i', Buffer.from([0xff, 0x00, 0xfe, 0x7b])), 'failed', 'corrupt');
      await garbage(9, 'the input field missing', (k) => redis.hdel(k, 'i'), 'failed', 'corrupt');
      await garbage(10, 'the task field missing', (k) => redis.hdel(k, 't'), 'failed', 'corrupt');
      await garbage(11, 'the state field missing', (k) => redis.hdel(k, 's'), 'failed', 'corrupt');
      await garbage(2, 'an unknown state code', (k) => redis.hset(k, 's', 'z'), 'failed', 'corrupt');
      await garbage(12, 'not a hash', (k) => redis.del(k).then(() => redis.set(k, 'garbage')), 'failed', 'corrupt');
      await garbage(13, 'not a hash (a list)', (k) => redis.del(k).then(() => redis.rpush(k, 'x', 'y')), 'failed', 'corrupt');
      // Harmless garbage: the run still runs.
      await garbage(14, 'a priority that is not a number', (k) => redis.hset(k, 'p', 'high'), 'succeeded');
      await garbage(15, 'an enqueue time that is not a number', (k) => redis.hset(k, 'e', 'yesterday'), 'succeeded');
      await garbage(16, 'a traceparent that is not one', (k) => redis.hset(k, 'c', 'not-a-traceparent'), 'succeeded');
      await garbage(17, 'a history that is not JSON', (k) => redis.hset(k, 'h', '{not json\n[1,'), 'succeeded');
      await garbage(18, 'attempts that are not a number', (k) => redis.hset(k, 'a', 'many'), 'succeeded');
      // A rid in the queue with no run at all, and a run hash no list points to.
      await redis.rpush(`errand:{${QUEUE}}:w:0`, '01ARZ3NDEKTSV4RRFFQ69G5FAV');
      await redis.hset(`errand:{${QUEUE}}:r:01ARZ3NDEKTSV4RRFFQ69G5FAW`, 's', 'q', 't', 'send', 'i', '{}');
      for (const i of [0, 8, 19]) expects.push({ id: ids[i]!, what: `good run ${i}`, state: 'succeeded' });

      await runAndCheck(errand, broker, expects, () => a.enqueue(100));
    } finally {
      redis.disconnect();
    }
  });
});

describe('garbage in the SQLite file, under a running worker', () => {
  let errand: Errand | undefined;
  after(async () => {
    await errand?.close();
  });

  it('each affected run fails with a reason (or runs, when the garbage is harmless); the rest run; the worker goes on', async () => {
    const path = join(tempDir('errand-garbage'), 'errand.db');
    const a = app(`sqlite:${path}`);
    errand = a.errand;
    const broker = await errand.broker();
    const ids: string[] = [];
    for (let n = 0; n < 20; n++) ids.push(await a.enqueue(n));
    const db = new DatabaseSync(path, { timeout: 5000 });
    const expects: Expect[] = [];
    const garbage = (i: number, what: string, sql: string, state: Expect['state'], reason?: string) => {
      db.prepare(`UPDATE runs SET ${sql} WHERE id = ?`).run(ids[i]!);
      expects.push({ id: ids[i]!, what, state, ...(reason ? { reason } : {}) });
    };
    try {
      garbage(1, 'truncated JSON input', `input = '{"to":"u1@example.com","n":'`, 'failed', 'corrupt');
      garbage(3, 'input of the wrong type (a string)', `input = '"u3@example.com"'`, 'failed', 'invalid_input');
      garbage(4, 'input of the wrong type (null)', `input = 'null'`, 'failed', 'invalid_input');
      garbage(5, 'a field of the wrong type', `input = '{"to":42,"n":"five"}'`, 'failed', 'invalid_input');
      garbage(6, 'an unknown task name', `task = 'no_such_task'`, 'failed', 'unknown_task');
      garbage(7, 'a blob as input', `input = X'FF00FE7B'`, 'failed', 'corrupt');
      garbage(9, 'input NULL', 'input = NULL', 'failed', 'corrupt');
      garbage(10, 'task NULL', 'task = NULL', 'failed', 'corrupt');
      garbage(11, 'priority as text', `priority = 'high'`, 'failed', 'corrupt');
      garbage(12, 'attempts NULL', 'attempts = NULL', 'failed', 'corrupt');
      garbage(13, 'a state that is none of the six', `state = 'bogus'`, 'failed', 'corrupt');
      // Harmless garbage: the run still runs.
      garbage(14, 'a traceparent that is not one', `traceparent = 'not-a-traceparent'`, 'succeeded');
      garbage(15, 'a history that is not JSON', `history = '{not json'`, 'succeeded');
      // A row with nothing but its id, queue and state.
      const bare = `${QUEUE}.01ARZ3NDEKTSV4RRFFQ69G5FAV`;
      db.prepare(`INSERT INTO runs (id, queue, state) VALUES (?, ?, 'queued')`).run(bare, QUEUE);
      expects.push({ id: bare, what: 'a row with NULL in every other column', state: 'failed', reason: 'corrupt' });
      for (const i of [0, 2, 8, 19]) expects.push({ id: ids[i]!, what: `good run ${i}`, state: 'succeeded' });
    } finally {
      db.close();
    }
    await runAndCheck(errand, broker, expects, () => a.enqueue(100));

    // The row with a bogus state reads as failed, so it can be replayed like one: it then runs.
    const server = await createServer({ errand, logger: false, docs: false, dashboard: false });
    const worker = errand.worker({ concurrency: 2 });
    try {
      const bogus = ids[13]!;
      assert.equal((await server.inject({ method: 'POST', url: `/runs/${bogus}/cancel` })).statusCode, 409, 'cancel: finished (failed)');
      const res = await server.inject({ method: 'POST', url: `/runs/${bogus}/retry` });
      assert.ok(res.statusCode < 300, `retry: ${res.statusCode} ${res.body}`);
      await worker.start();
      await waitFor(async () => (await broker.getRun(bogus))?.state === 'succeeded', { ...LIMIT, message: 'the replayed row to run' });
    } finally {
      await worker.stop();
      await server.close();
    }
  });
});
