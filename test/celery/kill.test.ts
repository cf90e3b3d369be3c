// Late acknowledgement on kombu's Redis transport, with real processes:
// - an Errand worker kill -9'd mid-task loses nothing: its deliveries stay in `unacked` and are
//   redelivered after the visibility timeout, and Python's AsyncResult.get() gets every result;
// - a live worker is not redelivered to, however long its handler runs (its deliveries are renewed),
//   and an ETA longer than the visibility timeout runs once (Celery's Redis pain, not copied).
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { createCeleryClient, createCeleryWorker } from '../../src/celery/index.ts';
import type { OwnRedis } from '../fixtures/redis-servers.ts';
import { waitFor } from '../helpers.ts';
import { celerySkip, FIXTURES, ownRedis, py } from './support.ts';

const skip = celerySkip();

function startWorker(url: string, env: Record<string, string>): { child: ChildProcess; ready: Promise<void> } {
  const child = spawn(process.execPath, [join(FIXTURES, 'worker.ts')], {
    env: { ...process.env, REDIS_URL: url, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (c: Buffer) => c.toString().includes('ready') && resolve());
    child.once('exit', (code) => reject(new Error(`worker exited with ${code} before it was ready`)));
  });
  return { child, ready };
}

describe('Celery late acknowledgement with killed workers', { skip }, () => {
  let server: OwnRedis;
  let url: string;
  let redis: Redis;
  const children: ChildProcess[] = [];

  before(async () => {
    ({ server, url } = await ownRedis('errand-celery-kill'));
    redis = new Redis(url);
  });
  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    redis?.disconnect();
    await server?.stop();
  });

  test('a worker kill -9d mid-task loses nothing: the messages are redelivered and every result reaches Python', async () => {
    const a = startWorker(url, { HANG: '1', VISIBILITY_MS: '2000', CONCURRENCY: '5' });
    children.push(a.child);
    await a.ready;
    const client = createCeleryClient({ url });
    const sent = await Promise.all([1, 2, 3, 4, 5].map((n) => client.sendTask('ts.slow', { args: [n] })));
    await waitFor(async () => (await redis.llen('ts.started')) === 5, { timeoutMs: 30_000, message: 'worker A to start all 5' });
    a.child.kill('SIGKILL');
    await once(a.child, 'exit');
    assert.equal(await redis.hlen('unacked'), 5, 'the killed worker left its deliveries unacknowledged');
    assert.equal(await redis.llen('celery'), 0);

    const b = startWorker(url, { VISIBILITY_MS: '2000' });
    children.push(b.child);
    await b.ready;
    for (const [i, r] of sent.entries()) {
      const out = await py(url, 'get', { id: r.id, timeout: 60 });
      assert.equal(out.ok, (i + 1) * 10, `task ${i + 1}`);
    }
    const starts = (await redis.lrange('ts.started', 0, -1)).map((l) => l.split(' '));
    assert.equal(starts.filter(([pid]) => pid === String(b.child.pid)).length, 5, 'each redelivered once to worker B');
    assert.equal(await redis.hlen('unacked'), 0);
    assert.equal(await redis.zcard('unacked_index'), 0);
    b.child.kill('SIGTERM');
    await once(b.child, 'exit');
    await client.close();
  });

  test('a long handler under a live worker, and an ETA past the visibility timeout, run once', async () => {
    await redis.del('ts.started', 'ts.long');
    const w1 = createCeleryWorker({ url, visibilityTimeoutMs: 1000 });
    const w2 = createCeleryWorker({ url, visibilityTimeoutMs: 1000 });
    for (const w of [w1, w2]) {
      w.register('ts.long', {}, async (_a, _k, ctx) => {
        await redis.rpush('ts.long', ctx.id);
        // Runs for several visibility timeouts (until the test lets it finish).
        await waitFor(async () => (await redis.get('ts.long.go')) === '1', { timeoutMs: 60_000, intervalMs: 100 });
        return 'done';
      });
      w.register('ts.later', {}, async (_a, _k, ctx) => {
        await redis.rpush('ts.later', ctx.id);
        return 'later';
      });
      await w.start();
    }
    const client = createCeleryClient({ url });
    const long = await client.sendTask('ts.long');
    const later = await client.sendTask('ts.later', { countdown: 3 });
    await waitFor(async () => (await redis.llen('ts.long')) === 1, { timeoutMs: 30_000 });
    await sleep(4000); // four visibility timeouts: a redelivery would have happened by now
    await redis.set('ts.long.go', '1');
    assert.equal(await long.get({ timeoutMs: 30_000 }), 'done');
    assert.equal(await later.get({ timeoutMs: 30_000 }), 'later');
    await sleep(1500); // room for a duplicate to show up
    assert.equal(await redis.llen('ts.long'), 1, 'the long task ran once');
    assert.equal(await redis.llen('ts.later'), 1, 'the ETA task ran once');
    await client.close();
    await Promise.all([w1.stop(), w2.stop()]);
  });
});
