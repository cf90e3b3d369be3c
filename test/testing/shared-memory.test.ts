// errand/testing's memory brokers shared by name: two apps of one test (an API that enqueues and a
// worker that runs) on one storage in memory; unnamed brokers stay apart; reset() refuses a shared one;
// `connectBroker` opens the storage by its memory URI (how a worker thread reaches it: the conformance
// suite's peer for this broker, test/conformance/memory.test.ts), never as a file.
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { describe, it } from 'node:test';
import { connectBroker, sqliteFileOf } from '../../src/broker/connect.ts';
import { z } from 'zod';
import { ConfigError, createErrand } from '../../src/index.ts';
import { memoryBroker, memoryUri, TestBroker } from '../../src/testing/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';

describe('memory brokers shared by name', () => {
  it("an API app's enqueue is run by a worker app on a broker of the same name, and the API sees the result", async () => {
    const api = createErrand({ broker: new TestBroker({ name: 'shared-apps', logger: quietLogger }), logger: quietLogger });
    const work = createErrand({ broker: new TestBroker({ name: 'shared-apps', logger: quietLogger }), logger: quietLogger });
    const def = { input: z.object({ n: z.number() }), queue: 'jobs' };
    const double = api.task('double', def, async ({ n }) => n * 2);
    work.task('double', def, async ({ n }) => n * 2);
    const worker = work.worker({ queues: ['jobs'], concurrency: 1 });
    await worker.start();
    try {
      const run = await double.enqueue({ n: 21 });
      assert.equal(await run.result({ timeout: 20_000 }), 42, 'run by the other app, woken without polling');
    } finally {
      await worker.stop();
      await work.close();
      await api.close();
    }
  });

  it('unnamed brokers keep their storage to themselves', async () => {
    const a = memoryBroker({ logger: quietLogger });
    const b = memoryBroker({ logger: quietLogger });
    try {
      const now = Date.now();
      await a.enqueue([{ id: `q.${'0'.repeat(26)}`, task: 't', queue: 'q', input: '{}', priority: 0, runAt: now }], now);
      assert.deepStrictEqual((await b.counts(['q'])).q?.queued ?? 0, 0);
      assert.equal((await a.counts(['q'])).q?.queued, 1);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('the storage lasts while one broker of the name is open; reset() refuses a shared broker; a bad name is refused', async () => {
    const first = new TestBroker({ name: 'lasting', logger: quietLogger });
    const now = Date.now();
    const id = `q.${'1'.repeat(26)}`;
    await first.enqueue([{ id, task: 't', queue: 'q', input: '{}', priority: 0, runAt: now }], now);
    const second = new TestBroker({ name: 'lasting', logger: quietLogger });
    await first.close();
    assert.equal((await second.getRun(id))?.state, 'queued', 'still there while the second is open');
    await assert.rejects(second.reset(), (e: unknown) => e instanceof ConfigError && /shares its storage by name/.test(e.message));
    await second.close();
    const third = new TestBroker({ name: 'lasting', logger: quietLogger });
    assert.equal(await third.getRun(id), null, 'gone once the last one closed');
    await third.close();
    assert.throws(() => memoryBroker({ name: '' }), ConfigError);
  });

  it('connectBroker opens a memory URI as that memory storage, creating no file', async () => {
    const before = readdirSync('.');
    const url = `sqlite:${memoryUri('by-uri')}`;
    assert.equal(sqliteFileOf(url), undefined, 'a memory URI names no file');
    const named = new TestBroker({ name: 'by-uri', logger: quietLogger });
    const byUri = await connectBroker(url, { logger: quietLogger });
    try {
      const now = Date.now();
      const id = `q.${'2'.repeat(26)}`;
      await byUri.enqueue([{ id, task: 't', queue: 'q', input: '{}', priority: 0, runAt: now }], now);
      assert.equal((await named.getRun(id))?.state, 'queued', 'the broker of that name sees the run');
    } finally {
      await byUri.close();
      await named.close();
    }
    assert.deepStrictEqual(readdirSync('.'), before, 'no file was created in the working folder');
    assert.equal(existsSync(memoryUri('by-uri')), false);
  });
});
