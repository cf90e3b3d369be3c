/**
 * The broker conformance suite, section: expiry (`NewRun.startBy`, docs/flow-control.md): a run
 * that never started is failed with reason `expired` by the reserve that finds it past its
 * deadline, never leased and no attempt counted. See `suite.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import type { Broker, BrokerInspector, Reservation } from '../../src/broker/types.ts';
import { type ConformanceContext, LEASE, newRun, parseError, Q } from './context.ts';

export function expiryConformance(c: ConformanceContext): void {
  const { open, test, getRun, reserveAll, enqueueOne } = c;
  describe('expiry: a deadline to start', () => {
    test('a run reserved past its deadline is failed (expired), never started; one at its deadline starts', async () => {
      const b = await open();
      const t0 = Date.now();
      const late = await enqueueOne(b, t0, { startBy: t0 + 1_000 });
      const onTime = await enqueueOne(b, t0, { startBy: t0 + 1_001 });
      assert.equal((await getRun(b, late)).startBy, t0 + 1_000);
      const r = await reserveAll(b, 'w1', t0 + 1_001, { max: 10 });
      assert.deepStrictEqual(
        r.runs.map((x) => x.id),
        [onTime],
      );
      const info = await getRun(b, late);
      assert.equal(info.state, 'failed');
      assert.equal(info.attempts, 0, 'never started');
      assert.deepStrictEqual(info.history, []);
      assert.equal(info.startedAt, undefined);
      assert.equal(info.finishedAt, t0 + 1_001);
      const err = parseError(info.error);
      assert.equal(err.reason, 'expired');
      assert.equal(err.name, 'RunExpiredError');
      assert.match(err.message, new RegExp(`deadline \\(${t0 + 1_000}, epoch ms\\)`));
      assert.equal((await b.counts([Q]))[Q]?.failed, 1);
    });

    test('a delayed run due after its deadline is dropped when promoted', async () => {
      const b = await open();
      const t0 = Date.now();
      const id = await enqueueOne(b, t0, { runAt: t0 + 500, startBy: t0 + 600 });
      assert.equal((await getRun(b, id)).state, 'scheduled');
      assert.deepStrictEqual((await reserveAll(b, 'w1', t0 + 700, { max: 10 })).runs, []);
      assert.equal(parseError((await getRun(b, id)).error).reason, 'expired');
    });

    test('a run that started once runs its retries whatever the deadline; a released one (no attempt counted) expires', async () => {
      const b = await open();
      const t0 = Date.now();
      const retried = await enqueueOne(b, t0, { startBy: t0 + 100 });
      const released = await enqueueOne(b, t0, { startBy: t0 + 100 });
      const runs = (await reserveAll(b, 'w1', t0, { max: 10 })).runs;
      const r1 = runs.find((r) => r.id === retried) as Reservation;
      const r2 = runs.find((r) => r.id === released) as Reservation;
      await b.settle('w1', [{ id: r1.id, attempt: 1, outcome: 'retry', error: '{}', runAt: t0 + 50 }], t0 + 10);
      await b.release('w1', [{ id: r2.id, attempt: 1 }], t0 + 10);
      const again = await reserveAll(b, 'w1', t0 + 500, { max: 10 });
      assert.deepStrictEqual(
        again.runs.map((r) => [r.id, r.attempt]),
        [[retried, 2]],
      );
      assert.equal((await getRun(b, released)).state, 'failed');
      assert.equal(parseError((await getRun(b, released)).error).reason, 'expired');
    });

    test('an expired run can be replayed (retry): queued again without its deadline', async () => {
      const b = await open();
      const t0 = Date.now();
      const id = await enqueueOne(b, t0, { startBy: t0 + 10 });
      assert.deepStrictEqual((await reserveAll(b, 'w1', t0 + 20, { max: 10 })).runs, []);
      assert.deepStrictEqual(await b.retry(id, t0 + 30), { outcome: 'queued' });
      const info = await getRun(b, id);
      assert.equal(info.state, 'queued');
      assert.equal(info.startBy, undefined);
      const r = await b.reserve({ workerId: 'w1', queues: [Q], max: 10, leaseMs: LEASE, now: t0 + 1_000_000 });
      assert.deepStrictEqual(
        r.runs.map((x) => [x.id, x.attempt]),
        [[id, 1]],
      );
    });

    test('an expired run under flow control gives its place back: its key is not held', async () => {
      const b = await open();
      const t0 = Date.now();
      const flow = { group: 'conformance.expiry', key: 'k', concurrency: 1 };
      const [gone, next] = (
        await b.enqueue(
          [
            { ...newRun(Q, t0), flow, startBy: t0 + 10 },
            { ...newRun(Q, t0), flow },
          ],
          t0,
        )
      ).map((x) => x.id) as [string, string];
      const r = await reserveAll(b, 'w1', t0 + 20, { max: 10 });
      assert.deepStrictEqual(
        r.runs.map((x) => x.id),
        [next],
      );
      assert.equal(parseError((await getRun(b, gone)).error).reason, 'expired');
      const inspector = b as Broker & Partial<BrokerInspector>;
      if (typeof inspector.flowCounts === 'function') assert.equal((await inspector.flowCounts([Q]))[Q]?.queued, 0);
    });
  });
}
