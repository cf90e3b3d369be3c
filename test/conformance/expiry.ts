/**
 * The broker conformance suite, section: expiry (`NewRun.startBy`, docs/flow-control.md): a run
 * that never started is failed with reason `expired` by the first reserve of its queue past its
 * deadline, wherever it is in the queue (paused or not), never leased and no attempt counted; an
 * idle reserve reports the next deadline in `nextAt`. See `suite.ts`.
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

    test('runs deep in a backlog are failed at their deadline without being reached; the others stay in order', async () => {
      const b = await open();
      const t0 = Date.now();
      const flow = { group: 'conformance.expiry', key: 'deep', concurrency: 100 };
      const backlog = (
        await b.enqueue(
          Array.from({ length: 30 }, () => newRun(Q, t0)),
          t0,
        )
      ).map((x) => x.id);
      const plain = await enqueueOne(b, t0, { startBy: t0 + 100 });
      const flowBacklog = (
        await b.enqueue(
          Array.from({ length: 30 }, () => ({ ...newRun(Q, t0), flow })),
          t0,
        )
      ).map((x) => x.id);
      const limited = await enqueueOne(b, t0, { flow, startBy: t0 + 100 });
      const after = await enqueueOne(b, t0, { startBy: t0 + 100_000 });
      // One run taken, past both deadlines: neither expiring run was reached.
      const r = await reserveAll(b, 'w1', t0 + 101, { max: 1 });
      assert.equal(r.runs.length, 1);
      for (const id of [plain, limited]) {
        const info = await getRun(b, id);
        assert.equal(info.state, 'failed', `${id} failed at its deadline`);
        assert.equal(info.attempts, 0);
        assert.equal(parseError(info.error).reason, 'expired');
      }
      assert.equal((await getRun(b, after)).state, 'queued', 'a later deadline is not due yet');
      const counts = (await b.counts([Q]))[Q];
      assert.equal(counts?.failed, 2);
      assert.equal(counts?.queued, 30 + 30 + 1 - 1, 'the expired runs no longer count as queued');
      const inspector = b as Broker & Partial<BrokerInspector>;
      if (typeof inspector.flowCounts === 'function')
        assert.equal((await inspector.flowCounts([Q]))[Q]?.queued, 30 - (r.runs[0]?.id === flowBacklog[0] ? 1 : 0));
      // The rest drain in order, the expired runs skipped.
      const rest = await reserveAll(b, 'w1', t0 + 102, { max: 100 });
      const seen = [...r.runs, ...rest.runs].map((x) => x.id);
      assert.equal(seen.length, 61);
      assert.deepStrictEqual(new Set(seen), new Set([...backlog, ...flowBacklog, after]));
      assert.deepStrictEqual(
        seen.filter((id) => backlog.includes(id)),
        backlog,
        'FIFO',
      );
      assert.deepStrictEqual(
        seen.filter((id) => flowBacklog.includes(id)),
        flowBacklog,
        'FIFO within the key',
      );
    });

    test('an idle reserve reports the next deadline (nextAt), and a run held by its limit expires then', async () => {
      const b = await open();
      const t0 = Date.now();
      const flow = { group: 'conformance.expiry', key: 'held', concurrency: 1 };
      const first = await enqueueOne(b, t0, { flow });
      const held = await enqueueOne(b, t0, { flow, startBy: t0 + 200 });
      const r = await reserveAll(b, 'w1', t0, { max: 10, leaseMs: 60_000 });
      assert.deepStrictEqual(
        r.runs.map((x) => x.id),
        [first],
      );
      assert.equal(r.nextAt, t0 + 201, 'a millisecond after the deadline (a run exactly at it may start)');
      const idle = await reserveAll(b, 'w2', t0 + 201, { max: 10 });
      assert.deepStrictEqual(idle.runs, []);
      assert.equal(parseError((await getRun(b, held)).error).reason, 'expired');
      assert.equal(idle.nextAt, t0 + 60_000, 'then the lease of the active run');
      // Its slot still taken by the first run; freed once, by its settlement.
      await b.settle('w1', [{ id: first, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: 60_000 }], t0 + 300);
      const next = await enqueueOne(b, t0 + 300, { flow });
      assert.deepStrictEqual(
        (await reserveAll(b, 'w1', t0 + 300, { max: 10 })).runs.map((x) => x.id),
        [next],
      );
    });

    test('a run backed off past its deadline (its attempt given back) fails at the deadline, its key still waiting', async () => {
      const b = await open();
      const t0 = Date.now();
      const flow = { group: 'conformance.expiry', key: 'b' };
      const id = await enqueueOne(b, t0, { flow, startBy: t0 + 100 });
      const [r] = (await reserveAll(b, 'w1', t0, { max: 10 })).runs;
      assert.equal(r?.id, id);
      const st = await b.settle('w1', [{ id, attempt: 1, outcome: 'backoff', until: t0 + 10_000, scope: 'key' }], t0 + 10);
      assert.deepStrictEqual(st, ['ok']);
      const idle = await reserveAll(b, 'w1', t0 + 20, { max: 10 });
      assert.deepStrictEqual(idle.runs, []);
      assert.equal(idle.nextAt, t0 + 101, 'its deadline comes before its key may start again');
      await reserveAll(b, 'w1', t0 + 101, { max: 10 });
      const info = await getRun(b, id);
      assert.equal(info.state, 'failed');
      assert.equal(parseError(info.error).reason, 'expired');
      assert.equal(info.attempts, 0);
    });

    test("a purged run's deadline no longer counts: an idle reserve reports nothing to wake for (nextAt null)", async () => {
      const b = (await open()) as Broker & Partial<BrokerInspector>;
      assert.equal(typeof b.purge, 'function', 'every broker of the suite is an inspector');
      const t0 = Date.now();
      await enqueueOne(b, t0, { startBy: t0 + 3_600_000 });
      await enqueueOne(b, t0, { runAt: t0 + 1_000, startBy: t0 + 7_200_000 });
      assert.equal((await reserveAll(b, 'w1', t0, { max: 0 })).nextAt, t0 + 1_000, 'the scheduled run first');
      assert.equal(await b.purge?.(Q, t0 + 1), 2);
      const idle = await reserveAll(b, 'w1', t0 + 2, { max: 10 });
      assert.deepStrictEqual(idle.runs, []);
      assert.equal(idle.nextAt, null);
    });

    test('a paused queue still fails its runs at their deadline (and reports it in nextAt); the others stay queued', async () => {
      const b = (await open()) as Broker & Partial<BrokerInspector>;
      assert.equal(typeof b.pause, 'function', 'every broker of the suite is an inspector');
      const t0 = Date.now();
      const stays = await enqueueOne(b, t0);
      const expiring = await enqueueOne(b, t0, { startBy: t0 + 100 });
      const flowExpiring = await enqueueOne(b, t0, { flow: { group: 'conformance.expiry', key: 'p' }, startBy: t0 + 150 });
      await b.pause?.(Q);
      const before = await reserveAll(b, 'w1', t0 + 50, { max: 10 });
      assert.deepStrictEqual(before.runs, []);
      assert.equal(before.nextAt, t0 + 101);
      await reserveAll(b, 'w1', t0 + 200, { max: 10 });
      for (const id of [expiring, flowExpiring]) assert.equal(parseError((await getRun(b, id)).error).reason, 'expired');
      assert.equal((await getRun(b, stays)).state, 'queued');
      assert.equal((await b.counts([Q]))[Q]?.queued, 1);
      await b.resume?.(Q);
      assert.deepStrictEqual(
        (await reserveAll(b, 'w1', t0 + 300, { max: 10 })).runs.map((x) => x.id),
        [stays],
      );
    });
  });
}
