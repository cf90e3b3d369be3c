// Expiry (docs/flow-control.md): a task's `expiresIn` and the enqueue options `expiresIn` and
// `expiresAt` give each run a deadline to start; a run not started by then is dropped by the broker
// (failed, reason `expired`), its handler never called. The broker side: test/conformance/expiry.ts.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import type { Broker, BrokerInspector } from '../../src/broker/types.ts';
import { ConfigError, type Errand, InputError, RunFailedError } from '../../src/index.ts';
import { setups } from '../fixtures/brokers.ts';

const input = z.object({ n: z.number() });

describe('expiry: the options', () => {
  const make = setups('errand-expiry')[0]!;
  const app = make().app();
  after(() => app.close());

  it('sets each run a deadline from the task, the enqueue, or neither', () => {
    const t = app.task('expiring', { input, expiresIn: 60_000 }, () => 1);
    const now = Date.UTC(2030, 0, 1);
    assert.equal(t.prepare({ n: 1 }, {}, now).startBy, now + 60_000);
    assert.equal(t.prepare({ n: 1 }, { delay: 1000 }, now).startBy, now + 61_000, 'counted from when the run is due');
    assert.equal(t.prepare({ n: 1 }, { expiresIn: 5 }, now).startBy, now + 5);
    assert.equal(t.prepare({ n: 1 }, { expiresAt: new Date(now + 7) }, now).startBy, now + 7);
    assert.equal(app.task('plain_expiry', { input }, () => 1).prepare({ n: 1 }, {}, now).startBy, undefined);
  });

  it('refuses bad values, saying which option and why', () => {
    assert.throws(() => app.task('bad_expiry', { input, expiresIn: 0 }, () => 1), ConfigError);
    assert.throws(() => app.task('bad_expiry2', { input, expiresIn: -1 as number }, () => 1), /expiresIn/);
    const t = app.task('expiring2', { input }, () => 1);
    const now = Date.UTC(2030, 0, 1);
    const cases: [object, RegExp][] = [
      [{ expiresIn: 0 }, /expiresIn: must be a positive number of milliseconds/],
      [{ expiresAt: 'soon' }, /expiresAt: must be a valid Date or epoch milliseconds/],
      [{ expiresIn: 5, expiresAt: now + 9 }, /give either expiresIn or expiresAt, not both/],
      [{ expiresAt: now - 1 }, /expiresAt: is 2029-12-31T23:59:59\.999Z, before the run is due \(2030-01-01T00:00:00\.000Z\)/],
      [{ delay: 1000, expiresAt: now + 500 }, /before the run is due/],
    ];
    for (const [options, message] of cases) {
      assert.throws(
        () => t.prepare({ n: 1 }, options as never, now),
        (err: unknown) => err instanceof InputError && message.test(err.message),
        JSON.stringify(options),
      );
    }
  });
});

for (const make of setups('errand-expiry')) {
  const setup = make();
  describe(`expiry with a worker on ${setup.name}`, () => {
    let app: Errand;
    const apps: Errand[] = [];
    const open = () => {
      app = setup.app();
      apps.push(app);
      return app;
    };
    after(async () => {
      for (const a of apps) await a.close();
      await setup.cleanup();
    });

    it('a run past its deadline when a worker comes is dropped, never run; one within it runs', async () => {
      open();
      const ran: number[] = [];
      const t = app.task('report', { input, queue: 'expiry' }, async ({ n }) => {
        ran.push(n);
        return n;
      });
      const stale = await t.enqueue({ n: 1 }, { expiresIn: 20 });
      const fresh = await t.enqueue({ n: 2 }, { expiresIn: 3_600_000 });
      await sleep(50); // past the first run's deadline, before any worker
      const worker = await app.worker({ queues: ['expiry'], concurrency: 2 }).start();
      try {
        assert.equal(await fresh.result({ timeout: 30_000 }), 2);
        await assert.rejects(stale.result({ timeout: 30_000 }), (err: unknown) => err instanceof RunFailedError);
      } finally {
        await worker.stop();
      }
      assert.deepStrictEqual(ran, [2], 'the expired run never reached its handler');
      const info = await stale.info();
      assert.equal(info.state, 'failed');
      assert.equal(info.attempts, 0);
      assert.equal(info.error?.reason, 'expired');
      assert.ok(info.startBy instanceof Date);
    });

    it('a run held back past its deadline (its key at its limit) fails then, while the run ahead of it still runs', async () => {
      open();
      let release = () => {};
      const blocked = new Promise<void>((resolve) => {
        release = resolve;
      });
      const t = app.task('held', { input, queue: 'expiry-held', limits: { key: () => 'one', concurrency: 1 } }, async ({ n }) => {
        if (n === 1) await blocked;
        return n;
      });
      const worker = await app.worker({ queues: ['expiry-held'], concurrency: 4 }).start();
      try {
        const ahead = await t.enqueue({ n: 1 });
        while ((await ahead.info()).state !== 'active') await sleep(5);
        const held = await t.enqueue({ n: 2 }, { expiresIn: 50 });
        // No enqueue, settlement or slot wakes the worker: it looks again at the deadline (nextAt).
        await assert.rejects(held.result({ timeout: 30_000 }), (err: unknown) => err instanceof RunFailedError);
        assert.equal((await held.info()).error?.reason, 'expired');
        assert.equal((await ahead.info()).state, 'active', 'the run ahead is still running');
        release();
        assert.equal(await ahead.result({ timeout: 30_000 }), 1);
      } finally {
        release();
        await worker.stop();
      }
    });

    it('a run in a paused queue fails at its deadline (the worker wakes for it), the others wait for the resume', async () => {
      open();
      const t = app.task('paused', { input, queue: 'expiry-paused' }, async ({ n }) => n);
      const broker = (await app.broker()) as Broker & BrokerInspector;
      await broker.pause('expiry-paused');
      const worker = await app.worker({ queues: ['expiry-paused'], concurrency: 2 }).start();
      try {
        const waits = await t.enqueue({ n: 1 });
        const expiring = await t.enqueue({ n: 2 }, { expiresIn: 50 });
        await assert.rejects(expiring.result({ timeout: 30_000 }), (err: unknown) => err instanceof RunFailedError);
        assert.equal((await expiring.info()).error?.reason, 'expired');
        assert.equal((await waits.info()).state, 'queued');
        await broker.resume('expiry-paused');
        assert.equal(await waits.result({ timeout: 30_000 }), 1);
      } finally {
        await worker.stop();
      }
    });
  });
}
