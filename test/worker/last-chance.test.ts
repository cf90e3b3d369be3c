// A worker holds at most one run on its last chance (one lost lease short of maxLeaseLosses): a
// run that kills its worker must not take the runs beside it down with it, and every run of a dead
// worker loses its lease. A second such run is handed back (released: no attempt, no lost lease
// counted), and the worker reserves nothing more until its own is done (or a lease has passed),
// then takes it. On both brokers; the lost leases are made by a worker that never settles, with the
// broker's clock given.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { z } from 'zod';
import { connectBroker } from '../../src/broker/connect.ts';
import { createErrand, type Errand, type RunInfo } from '../../src/index.ts';
import { quietLogger, setups } from '../fixtures/brokers.ts';
import { waitFor } from '../helpers.ts';

/**
 * A task on `queue` whose run n=0 waits for `release()`, and two of its runs (n=0, then n=1) that
 * have lost `losses` leases (2: on their last chance under the default maxLeaseLosses of 3), in
 * the past, to a worker that never comes back.
 */
async function lastChanceRuns(app: Errand, queue: string, losses = 2) {
  let release: () => void = () => {};
  const gate = new Promise<void>((r) => {
    release = r;
  });
  const started: string[] = [];
  const task = app.task(queue, { input: z.object({ n: z.number() }), queue }, async ({ n }) => {
    started.push(`n${n}`);
    if (n === 0) await gate;
    return n;
  });
  const [a, b] = await task.enqueueMany([{ input: { n: 0 } }, { input: { n: 1 } }]);
  const broker = await app.broker();
  const t0 = Date.now() - 60_000;
  const ghost = { workerId: 'ghost', queues: [queue], leaseMs: 1 };
  for (let i = 0; i < losses; i++) assert.equal((await broker.reserve({ ...ghost, max: 2, now: t0 + 2 * i })).runs.length, 2);
  assert.equal((await broker.reserve({ ...ghost, max: 0, now: t0 + 2 * losses })).runs.length, 0);
  assert.deepEqual([(await a!.info()).leaseLosses, (await b!.info()).leaseLosses], [losses, losses]);
  return { task, a: a!, b: b!, started, release: () => release() };
}

for (const make of setups('errand-last-chance')) {
  const setup = make();
  describe(`runs on their last chance on ${setup.name}`, () => {
    it('never share a worker: the second is handed back and runs after the first', async () => {
      const app = setup.app({ maxLeaseLosses: 3 });
      const { a, b, started, release } = await lastChanceRuns(app, 'last_chance');
      const worker = app.worker({ queues: ['last_chance'], concurrency: 4 });
      await worker.start();
      try {
        await waitFor(() => started.includes('n0'), { timeoutMs: 20_000, message: 'the first to start' });
        const second = await waitFor(
          async () => ((i) => (i.history.some((h) => h.outcome === 'released') ? i : undefined))(await b.info()),
          { timeoutMs: 20_000, message: 'the second to be handed back' },
        );
        assert.equal(second.state, 'queued', 'handed back, not run beside the first');
        assert.deepEqual(started, ['n0']);
        release();
        await waitFor(async () => (await b.info()).state === 'succeeded', { timeoutMs: 20_000, message: 'the second to run after' });
        const [ia, ib] = [await a.info(), await b.info()];
        assert.deepEqual([ia.state, ib.state], ['succeeded', 'succeeded']);
        assert.equal(ib.leaseLosses, 2, 'handing back counts no lost lease');
        assert.deepEqual(started, ['n0', 'n1']);
      } finally {
        release();
        await worker.stop({ graceMs: 0 });
        await app.close();
      }
    });

    it('hold the worker back for a lease at most: other runs go on while its own last-chance run hangs', async () => {
      const app = setup.app({ maxLeaseLosses: 3 });
      const { task, a, b, release } = await lastChanceRuns(app, 'last_chance_hang');
      // A lease of 2 s: the hold lasts one; a shorter one could be lost under load by the hanging run itself.
      const worker = app.worker({ queues: ['last_chance_hang'], concurrency: 4, leaseMs: 2000 });
      await worker.start();
      try {
        await waitFor(async () => ((await b.info()).history.some((h) => h.outcome === 'released') ? true : undefined), {
          timeoutMs: 20_000,
          message: 'the second to be handed back',
        });
        // The first hangs; a run enqueued now still runs on this worker, a lease later at most.
        const c = await task.enqueue({ n: 2 });
        await waitFor(async () => (await c.info()).state === 'succeeded', { timeoutMs: 20_000, message: 'a new run to run meanwhile' });
        assert.equal((await a.info()).state, 'active', 'while the first still hangs');
        assert.equal((await b.info()).state, 'queued', 'the second still never beside it');
        release();
        await waitFor(async () => (await b.info()).state === 'succeeded', { timeoutMs: 20_000, message: 'the second to run after' });
      } finally {
        release();
        await worker.stop({ graceMs: 0 });
        await app.close();
      }
    });

    // maxLeaseLosses 2 (one lost lease is the last chance), given to a broker instance or to the app
    // that connects one: the worker's threshold is the broker's (it was the app's option, or its default).
    const ways = {
      'a broker instance made with maxLeaseLosses 2': async () => {
        const broker = await connectBroker(setup.url, { prefix: setup.prefix, logger: quietLogger, maxLeaseLosses: 2 });
        return createErrand({ broker, logger: quietLogger });
      },
      'an app made with maxLeaseLosses 2': async () => setup.app({ maxLeaseLosses: 2 }),
    };
    for (const [way, make] of Object.entries(ways)) {
      it(`take the threshold from the broker: ${way}`, async () => {
        const app = await make();
        assert.equal((await app.broker()).maxLeaseLosses, 2, 'through the guard');
        const queue = `last_chance_${way.startsWith('a broker') ? 'instance' : 'option'}`;
        const { a, b, started, release } = await lastChanceRuns(app, queue, 1);
        const worker = app.worker({ queues: [queue], concurrency: 4 });
        await worker.start();
        try {
          await waitFor(() => started.includes('n0'), { timeoutMs: 20_000, message: 'the first to start' });
          // Handed back, or (with the app's default of 3 as the threshold) run beside the first.
          const released = (i: RunInfo) => i.history.some((h) => h.outcome === 'released');
          const second = await waitFor(async () => ((i) => (released(i) || started.includes('n1') ? i : undefined))(await b.info()), {
            timeoutMs: 20_000,
            message: 'the second to be handed back (or to start)',
          });
          assert.deepEqual(started, ['n0'], 'the second never runs beside the first');
          assert.ok(released(second), 'handed back');
          release();
          await waitFor(async () => (await b.info()).state === 'succeeded', { timeoutMs: 20_000, message: 'the second to run after' });
          assert.deepEqual([(await a.info()).state, (await b.info()).leaseLosses], ['succeeded', 1]);
        } finally {
          release();
          await worker.stop({ graceMs: 0 });
          await app.close();
        }
      });
    }

    after(() => setup.cleanup());
  });
}
