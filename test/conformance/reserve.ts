/**
 * The broker conformance suite, section: `reserve`: leasing due runs by priority and age, per
 * queue; `nextAt`. See `suite.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { type ConformanceContext, Q, TASK, LEASE, RETAIN, newRun, ids, assertFields } from './context.ts';

export function reserveConformance(c: ConformanceContext): void {
  const { open, test, getRun, reserveAll, reserveOne, enqueueOne } = c;
  describe('reserve', () => {
    test('returns at most max runs', async () => {
      const b = await open();
      const t0 = Date.now();
      const runs = Array.from({ length: 5 }, () => newRun(Q, t0));
      await b.enqueue(runs, t0);
      const first = await b.reserve({ workerId: 'w1', queues: [Q], max: 2, leaseMs: LEASE, now: t0 });
      assert.deepStrictEqual(ids(first.runs), ids(runs.slice(0, 2)));
      const rest = await b.reserve({ workerId: 'w1', queues: [Q], max: 10, leaseMs: LEASE, now: t0 });
      assert.deepStrictEqual(ids(rest.runs), ids(runs.slice(2)));
      const none = await b.reserve({ workerId: 'w1', queues: [Q], max: 10, leaseMs: LEASE, now: t0 });
      assert.deepStrictEqual(none.runs, []);
    });

    test('marks runs active with attempt 1, startedAt = now and the worker; the reservation carries the run', async () => {
      const b = await open();
      const t0 = Date.now();
      const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
      const run = newRun(Q, t0, { priority: 3, input: '{"to":"a@example.com"}', traceparent });
      await b.enqueue([run], t0);
      const r = await reserveOne(b, 'w1', t0 + 10);
      assertFields(
        r,
        { id: run.id, task: TASK, queue: Q, input: run.input, attempt: 1, priority: 3, enqueuedAt: t0, startedAt: t0 + 10, traceparent },
        'reservation',
      );
      const rec = await getRun(b, run.id);
      assertFields(rec, { state: 'active', attempts: 1, startedAt: t0 + 10, worker: 'w1', leaseLosses: 0 }, 'run');
      assert.equal(rec.history.length, 1, 'one attempt in history');
      assertFields(rec.history[0], { attempt: 1, worker: 'w1', startedAt: t0 + 10 }, 'history[0]');
      assert.equal(rec.history[0]!.outcome, undefined, 'the running attempt has no outcome yet');
      assert.equal(rec.history[0]!.finishedAt, undefined, 'the running attempt has no finishedAt yet');
    });

    test('higher priority first, FIFO within a priority', async () => {
      const b = await open();
      const t0 = Date.now();
      const priorities = [0, 5, 0, -3, 5, 1000, -1000, 0];
      const runs = priorities.map((priority) => newRun(Q, t0, { priority }));
      await b.enqueue(runs, t0);
      const expected = runs
        .map((r, i) => ({ r, i }))
        .sort((x, y) => y.r.priority - x.r.priority || x.i - y.i)
        .map((x) => x.r.id);
      const { runs: got } = await reserveAll(b, 'w1', t0);
      assert.deepStrictEqual(ids(got), expected);
    });

    test('FIFO across separate enqueue calls', async () => {
      const b = await open();
      const t0 = Date.now();
      const order: string[] = [];
      for (let i = 0; i < 6; i++) order.push(await enqueueOne(b, t0 + i));
      const first = await b.reserve({ workerId: 'w1', queues: [Q], max: 3, leaseMs: LEASE, now: t0 + 10 });
      const second = await b.reserve({ workerId: 'w1', queues: [Q], max: 3, leaseMs: LEASE, now: t0 + 10 });
      assert.deepStrictEqual([...ids(first.runs), ...ids(second.runs)], order);
    });

    test('serves every requested queue, each in its own order, and nothing from other queues', async () => {
      const b = await open();
      const t0 = Date.now();
      const qa = [newRun('qa', t0), newRun('qa', t0, { priority: 2 }), newRun('qa', t0)];
      const qb = [newRun('qb', t0), newRun('qb', t0)];
      const qc = [newRun('qc', t0)];
      await b.enqueue([...qa, ...qb, ...qc], t0);

      const nothing = await reserveAll(b, 'w1', t0, { queues: ['qd'] });
      assert.deepStrictEqual(nothing.runs, [], 'a queue with no runs gives nothing');
      assert.equal(nothing.nextAt, null, 'and nothing pending');

      const { runs } = await reserveAll(b, 'w1', t0, { queues: ['qb', 'qa'] });
      assert.deepStrictEqual(new Set(ids(runs)), new Set(ids([...qa, ...qb])), 'every run of qa and qb, nothing else');
      assert.equal(runs.length, 5, 'no duplicates');
      assert.deepStrictEqual(
        ids(runs.filter((r) => r.queue === 'qa')),
        [qa[1]!.id, qa[0]!.id, qa[2]!.id],
        'qa in priority then FIFO order',
      );
      assert.deepStrictEqual(ids(runs.filter((r) => r.queue === 'qb')), ids(qb), 'qb in FIFO order');
      assertFields(await getRun(b, qc[0]!.id), { state: 'queued' }, 'qc run (not requested)');
    });

    test('a scheduled run is not reserved before runAt, and is reserved at runAt', async () => {
      const b = await open();
      const t0 = Date.now();
      const id = await enqueueOne(b, t0, { runAt: t0 + 1000 });
      const early = await reserveAll(b, 'w1', t0);
      assert.deepStrictEqual(early.runs, []);
      assert.equal(early.nextAt, t0 + 1000, 'nextAt is the scheduled runAt');
      assert.deepStrictEqual((await reserveAll(b, 'w1', t0 + 999)).runs, [], 'not reserved 1 ms before runAt');
      assertFields(await getRun(b, id), { state: 'scheduled' }, 'run before runAt');
      const due = await reserveAll(b, 'w1', t0 + 1000);
      assert.deepStrictEqual(ids(due.runs), [id], 'reserved at runAt');
      assertFields(due.runs[0], { attempt: 1, startedAt: t0 + 1000 }, 'reservation');
      assertFields(await getRun(b, id), { state: 'active', attempts: 1 }, 'run');
    });

    test('a due scheduled run takes its place by priority among queued runs', async () => {
      const b = await open();
      const t0 = Date.now();
      const low = await enqueueOne(b, t0, { priority: 0 });
      const high = await enqueueOne(b, t0, { priority: 10, runAt: t0 + 500 });
      const { runs } = await reserveAll(b, 'w1', t0 + 600);
      assert.deepStrictEqual(ids(runs), [high, low]);
    });

    test('nextAt: the earliest scheduled runAt or lease expiry in the requested queues; null when nothing is pending', async () => {
      const b = await open();
      const t0 = Date.now();
      assert.equal((await reserveAll(b, 'w1', t0)).nextAt, null, 'empty storage: nothing pending');

      await enqueueOne(b, t0, { runAt: t0 + 5000 });
      await enqueueOne(b, t0, { runAt: t0 + 3000 });
      await enqueueOne(b, t0, { runAt: t0 + 100 }, 'other-queue');
      const r1 = await reserveAll(b, 'w1', t0);
      assert.deepStrictEqual(r1.runs, []);
      assert.equal(r1.nextAt, t0 + 3000, 'earliest runAt of the requested queue (other queues ignored)');

      const active = await enqueueOne(b, t0);
      const r2 = await reserveAll(b, 'w1', t0, { leaseMs: 1000 });
      assert.deepStrictEqual(ids(r2.runs), [active]);
      const r3 = await reserveAll(b, 'w1', t0 + 1);
      assert.deepStrictEqual(r3.runs, []);
      assert.equal(r3.nextAt, t0 + 1000, 'the lease expiry is earlier than the scheduled runs');

      assert.deepStrictEqual(
        await b.settle('w1', [{ id: active, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN }], t0 + 2),
        ['ok'],
      );
      const r4 = await reserveAll(b, 'w1', t0 + 3);
      assert.equal(r4.nextAt, t0 + 3000, 'a settled run no longer counts');

      const both = await reserveAll(b, 'w1', t0 + 4, { queues: [Q, 'other-queue'] });
      assert.equal(both.nextAt, t0 + 100, 'several queues: the earliest of all');
    });
  });
}
