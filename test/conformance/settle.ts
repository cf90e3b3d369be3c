/**
 * The broker conformance suite, section: `settle` (and outcomes sent along with `reserve`):
 * succeeded, failed, retry, lost settlements; retention and `prune`. See `suite.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { newRunId } from '../../src/core/ids.ts';
import { type ConformanceContext, Q, LEASE, RETAIN, ZERO_COUNTS, newRun, ids, assertFields, errorText } from './context.ts';

export function settleConformance(c: ConformanceContext): void {
  const { open, test, getRun, reserveAll, reserveOne, enqueueOne } = c;
  describe('settle', () => {
    test('succeeded: result stored, finishedAt, expiresAt = now + retentionMs, history', async () => {
      const b = await open();
      const t0 = Date.now();
      const id = await enqueueOne(b, t0);
      await reserveOne(b, 'w1', t0 + 10);
      const result = '{ "sent" : true, "id": "m-1" }';
      assert.deepStrictEqual(await b.settle('w1', [{ id, attempt: 1, outcome: 'succeeded', result, retentionMs: RETAIN }], t0 + 20), [
        'ok',
      ]);
      const rec = await getRun(b, id);
      assertFields(
        rec,
        { state: 'succeeded', result, attempts: 1, startedAt: t0 + 10, finishedAt: t0 + 20, expiresAt: t0 + 20 + RETAIN, worker: 'w1' },
        'run',
      );
      assert.equal(rec.error, undefined, 'no error on a succeeded run');
      assert.equal(rec.history.length, 1);
      assertFields(
        rec.history[0],
        { attempt: 1, worker: 'w1', startedAt: t0 + 10, finishedAt: t0 + 20, outcome: 'succeeded' },
        'history[0]',
      );
      assert.deepStrictEqual((await reserveAll(b, 'w2', t0 + 10 * LEASE)).runs, [], 'a finished run is never reserved again');
    });

    test('succeeded with a null result', async () => {
      const b = await open();
      const t0 = Date.now();
      const id = await enqueueOne(b, t0);
      await reserveOne(b, 'w1', t0);
      assert.deepStrictEqual(await b.settle('w1', [{ id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN }], t0 + 1), [
        'ok',
      ]);
      const rec = await getRun(b, id);
      assertFields(rec, { state: 'succeeded' }, 'run');
      assert.ok(
        rec.result === undefined || rec.result === 'null',
        `a null result reads back absent or as the JSON text "null", got ${rec.result}`,
      );
    });

    test('failed: error stored, finishedAt, expiresAt = now + retentionMs, history', async () => {
      const b = await open();
      const t0 = Date.now();
      const id = await enqueueOne(b, t0);
      await reserveOne(b, 'w1', t0 + 10);
      const error = errorText('SMTP refused');
      assert.deepStrictEqual(await b.settle('w1', [{ id, attempt: 1, outcome: 'failed', error, retentionMs: 5000 }], t0 + 30), ['ok']);
      const rec = await getRun(b, id);
      assertFields(rec, { state: 'failed', error, attempts: 1, finishedAt: t0 + 30, expiresAt: t0 + 30 + 5000, worker: 'w1' }, 'run');
      assert.equal(rec.result, undefined, 'no result on a failed run');
      assert.equal(rec.history.length, 1);
      assertFields(
        rec.history[0],
        { attempt: 1, worker: 'w1', startedAt: t0 + 10, finishedAt: t0 + 30, outcome: 'failed', error },
        'history[0]',
      );
      assert.deepStrictEqual((await reserveAll(b, 'w2', t0 + 10 * LEASE)).runs, [], 'a failed run is never reserved again');
    });

    test('retry: scheduled at runAt, then reserved again with attempt 2; history records each attempt', async () => {
      const b = await open();
      const t0 = Date.now();
      const id = await enqueueOne(b, t0);
      await reserveOne(b, 'w1', t0 + 10, 1000);
      const e1 = errorText('timeout talking to SMTP');
      assert.deepStrictEqual(await b.settle('w1', [{ id, attempt: 1, outcome: 'retry', error: e1, runAt: t0 + 5000 }], t0 + 20), ['ok']);
      const rec1 = await getRun(b, id);
      assertFields(rec1, { state: 'scheduled', runAt: t0 + 5000, attempts: 1 }, 'run waiting to retry');
      assertFields(
        rec1.history[0],
        { attempt: 1, worker: 'w1', startedAt: t0 + 10, finishedAt: t0 + 20, outcome: 'retry', error: e1 },
        'history[0]',
      );

      const early = await reserveAll(b, 'w2', t0 + 4999);
      assert.deepStrictEqual(early.runs, [], 'not reserved before the retry runAt (and the old lease expiry does not count)');
      assert.equal(early.nextAt, t0 + 5000, 'nextAt is the retry runAt');
      const r2 = await reserveOne(b, 'w2', t0 + 5000);
      assertFields(r2, { id, attempt: 2, startedAt: t0 + 5000 }, 'second reservation');
      assertFields(await getRun(b, id), { state: 'active', attempts: 2, worker: 'w2', leaseLosses: 0 }, 'run on its second attempt');

      const e2 = errorText('still failing');
      assert.deepStrictEqual(await b.settle('w2', [{ id, attempt: 2, outcome: 'failed', error: e2, retentionMs: RETAIN }], t0 + 5100), [
        'ok',
      ]);
      const rec = await getRun(b, id);
      assertFields(rec, { state: 'failed', error: e2, attempts: 2, finishedAt: t0 + 5100, worker: 'w2' }, 'run');
      assert.equal(rec.history.length, 2, 'two attempts in history');
      assertFields(rec.history[0], { attempt: 1, worker: 'w1', outcome: 'retry' }, 'history[0]');
      assertFields(
        rec.history[1],
        { attempt: 2, worker: 'w2', startedAt: t0 + 5000, finishedAt: t0 + 5100, outcome: 'failed', error: e2 },
        'history[1]',
      );
    });

    test('a settlement from another worker or for a stale attempt is lost and changes nothing', async () => {
      const b = await open();
      const t0 = Date.now();
      const id = await enqueueOne(b, t0);
      await reserveOne(b, 'w1', t0);
      const before = await getRun(b, id);
      assert.deepStrictEqual(await b.settle('w2', [{ id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 1), [
        'lost',
      ]);
      assert.deepStrictEqual(
        await b.settle('w1', [{ id, attempt: 2, outcome: 'failed', error: errorText('x'), retentionMs: RETAIN }], t0 + 1),
        ['lost'],
      );
      assert.deepStrictEqual(await b.settle('w1', [{ id, attempt: 0, outcome: 'retry', error: errorText('x'), runAt: t0 + 9 }], t0 + 1), [
        'lost',
      ]);
      assert.deepStrictEqual(await getRun(b, id), before, 'the run is unchanged');
      assert.deepStrictEqual(await b.settle('w1', [{ id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 2), [
        'ok',
      ]);
    });

    test('settling twice: the second settlement is lost and changes nothing', async () => {
      const b = await open();
      const t0 = Date.now();
      const id = await enqueueOne(b, t0);
      await reserveOne(b, 'w1', t0);
      assert.deepStrictEqual(await b.settle('w1', [{ id, attempt: 1, outcome: 'succeeded', result: '"a"', retentionMs: RETAIN }], t0 + 1), [
        'ok',
      ]);
      const before = await getRun(b, id);
      assert.deepStrictEqual(
        await b.settle('w1', [{ id, attempt: 1, outcome: 'failed', error: errorText('late'), retentionMs: RETAIN }], t0 + 2),
        ['lost'],
      );
      assert.deepStrictEqual(await getRun(b, id), before);
    });

    test('a batch settles several runs with one status per item, in order', async () => {
      const b = await open();
      const t0 = Date.now();
      const runs = [newRun(Q, t0), newRun(Q, t0), newRun(Q, t0)];
      await b.enqueue(runs, t0);
      const got = await reserveAll(b, 'w1', t0);
      assert.equal(got.runs.length, 3);
      const [a, c, d] = ids(runs) as [string, string, string];
      const unknown = newRunId(Q);
      const statuses = await b.settle(
        'w1',
        [
          { id: a, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN },
          { id: unknown, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN },
          { id: c, attempt: 1, outcome: 'failed', error: errorText('no'), retentionMs: RETAIN },
          { id: d, attempt: 7, outcome: 'succeeded', result: '1', retentionMs: RETAIN },
          { id: d, attempt: 1, outcome: 'retry', error: errorText('again'), runAt: t0 + 1000 },
        ],
        t0 + 5,
      );
      assert.deepStrictEqual(statuses, ['ok', 'lost', 'ok', 'lost', 'ok']);
      assert.equal((await getRun(b, a)).state, 'succeeded');
      assert.equal((await getRun(b, c)).state, 'failed');
      assert.equal((await getRun(b, d)).state, 'scheduled');
      assert.equal(await b.getRun(unknown), null, 'settling an unknown id creates nothing');
    });
  });

  // ---------------------------------------------------------------------------------------------
  describe('reserve with outcomes sent along (settle)', () => {
    test('records the outcomes first, as settle does, then leases; statuses in order', async () => {
      const b = await open();
      const t0 = Date.now();
      const a = await enqueueOne(b, t0);
      const c = await enqueueOne(b, t0 + 1);
      const d = await enqueueOne(b, t0 + 2);
      assert.deepStrictEqual(ids((await reserveAll(b, 'w1', t0 + 10, { max: 2 })).runs), [a, c]);
      const error = errorText('refused');
      const res = await b.reserve({
        workerId: 'w1',
        queues: [Q],
        max: 5,
        leaseMs: LEASE,
        now: t0 + 20,
        settle: [
          { id: a, attempt: 1, outcome: 'succeeded', result: '{"ok":1}', retentionMs: RETAIN },
          { id: c, attempt: 1, outcome: 'failed', error, retentionMs: RETAIN },
        ],
      });
      assert.deepStrictEqual(res.settled, ['ok', 'ok']);
      assert.deepStrictEqual(ids(res.runs), [d], 'then leases what is queued');
      assertFields(await getRun(b, a), { state: 'succeeded', result: '{"ok":1}', finishedAt: t0 + 20, expiresAt: t0 + 20 + RETAIN }, 'a');
      assertFields(await getRun(b, c), { state: 'failed', error, finishedAt: t0 + 20 }, 'c');
      assertFields(await getRun(b, d), { state: 'active', worker: 'w1', attempts: 1, startedAt: t0 + 20 }, 'd');
      const counts = (await b.counts([Q]))[Q];
      assertFields(counts, { queued: 0, active: 1, succeeded: 1, failed: 1 }, 'counts');
    });

    test('a retry due at once can be leased again by the same call, attempt 2', async () => {
      const b = await open();
      const t0 = Date.now();
      const a = await enqueueOne(b, t0);
      await reserveOne(b, 'w1', t0 + 10);
      const res = await b.reserve({
        workerId: 'w1',
        queues: [Q],
        max: 1,
        leaseMs: LEASE,
        now: t0 + 20,
        settle: [{ id: a, attempt: 1, outcome: 'retry', error: errorText('again'), runAt: t0 + 20 }],
      });
      assert.deepStrictEqual(res.settled, ['ok']);
      assert.equal(res.runs.length, 1);
      assertFields(res.runs[0], { id: a, attempt: 2 }, 'the retried run');
      const rec = await getRun(b, a);
      assertFields(rec, { state: 'active', attempts: 2 }, 'run');
      assert.equal(rec.history[0]?.outcome, 'retry', 'the first attempt is in the history');
    });

    test('outcomes of leases not held are lost; outcomes of queues not reserved from are recorded', async () => {
      const b = await open();
      const t0 = Date.now();
      const x = await enqueueOne(b, t0);
      const y = await enqueueOne(b, t0, {}, 'conf_other');
      await reserveOne(b, 'w1', t0 + 10);
      await reserveOne(b, 'w1', t0 + 10, LEASE, ['conf_other']);
      const res = await b.reserve({
        workerId: 'w1',
        queues: [Q],
        max: 1,
        leaseMs: LEASE,
        now: t0 + 20,
        settle: [
          { id: y, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN },
          { id: x, attempt: 2, outcome: 'succeeded', result: null, retentionMs: RETAIN },
          { id: 'not a run id', attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN },
        ],
      });
      assert.deepStrictEqual(res.settled, ['ok', 'lost', 'lost']);
      assert.deepStrictEqual(res.runs, [], 'nothing queued');
      assert.equal((await getRun(b, y)).state, 'succeeded', "the other queue's run is settled");
      assertFields(await getRun(b, x), { state: 'active', attempts: 1, worker: 'w1' }, 'a wrong attempt changes nothing');
      const other = await b.reserve({
        workerId: 'w2',
        queues: [Q],
        max: 1,
        leaseMs: LEASE,
        now: t0 + 30,
        settle: [{ id: x, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN }],
      });
      assert.deepStrictEqual(other.settled, ['lost'], "another worker cannot settle w1's lease");
      assert.equal((await getRun(b, x)).state, 'active');
    });

    test('a call whose reply was lost, sent again: its outcomes report lost (recorded once), the runs it leased come back after their lease', async () => {
      const b = await open();
      const t0 = Date.now();
      const a = await enqueueOne(b, t0);
      const c = await enqueueOne(b, t0 + 1);
      const d = await enqueueOne(b, t0 + 2);
      await reserveOne(b, 'w1', t0 + 10);
      const request = {
        workerId: 'w1',
        queues: [Q],
        max: 1,
        leaseMs: LEASE,
        settle: [{ id: a, attempt: 1, outcome: 'succeeded' as const, result: '"once"', retentionMs: RETAIN }],
      };
      // The first call went through, but its reply never reached the worker, which sends it again.
      await b.reserve({ ...request, now: t0 + 20 });
      const again = await b.reserve({ ...request, now: t0 + 1000 });
      assert.deepStrictEqual(again.settled, ['lost'], 'the outcome was recorded by the first call: settling it again is harmless');
      assert.deepStrictEqual(ids(again.runs), [d], 'the run the lost reply leased is not leased twice');
      const rec = await getRun(b, a);
      assertFields(rec, { state: 'succeeded', result: '"once"', finishedAt: t0 + 20 }, 'recorded once, by the first call');
      assert.equal(rec.history.length, 1);
      const after = await reserveAll(b, 'w2', t0 + 20 + LEASE + 1);
      assert.deepStrictEqual(
        after.runs.map((r) => [r.id, r.attempt]),
        [[c, 2]],
        'the run leased by the lost reply is recovered when its lease expires',
      );
      assert.deepStrictEqual((await b.counts([Q]))[Q], { ...ZERO_COUNTS, active: 2, succeeded: 1 });
    });

    test('without outcomes, no statuses', async () => {
      const b = await open();
      const res = await reserveAll(b, 'w1', Date.now());
      assert.equal(res.settled, undefined);
    });
  });

  // ---------------------------------------------------------------------------------------------
  describe('retention', () => {
    test('retentionMs 0: the run is gone right after settle', async () => {
      const b = await open();
      const t0 = Date.now();
      const ok = await enqueueOne(b, t0);
      const ko = await enqueueOne(b, t0);
      await reserveAll(b, 'w1', t0);
      const statuses = await b.settle(
        'w1',
        [
          { id: ok, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: 0 },
          { id: ko, attempt: 1, outcome: 'failed', error: errorText('x'), retentionMs: 0 },
        ],
        t0 + 1,
      );
      assert.deepStrictEqual(statuses, ['ok', 'ok']);
      assert.equal(await b.getRun(ok), null, 'succeeded run with retention 0 is gone');
      assert.equal(await b.getRun(ko), null, 'failed run with retention 0 is gone');
      assert.deepStrictEqual((await b.counts([Q]))[Q], ZERO_COUNTS, 'and not counted');
    });

    test('retentionMs 0 in a batch with lost, repeated and kept outcomes: each applied as in its turn', async () => {
      const b = await open();
      const t0 = Date.now();
      const key = { idempotencyKey: 'batch-gone', idempotencyTtl: 600_000 };
      const a = await enqueueOne(b, t0, key);
      const bb = await enqueueOne(b, t0);
      const stale = await enqueueOne(b, t0);
      const kept = await enqueueOne(b, t0);
      assert.equal((await reserveAll(b, 'w1', t0)).runs.length, 4);
      const other = await enqueueOne(b, t0);
      await reserveOne(b, 'w2', t0);
      const statuses = await b.settle(
        'w1',
        [
          { id: a, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: 0 },
          { id: bb, attempt: 1, outcome: 'failed', error: errorText('x'), retentionMs: 0 },
          { id: a, attempt: 1, outcome: 'failed', error: errorText('again'), retentionMs: 0 },
          { id: stale, attempt: 2, outcome: 'succeeded', result: null, retentionMs: 0 },
          { id: kept, attempt: 1, outcome: 'succeeded', result: '2', retentionMs: RETAIN },
          { id: other, attempt: 1, outcome: 'succeeded', result: null, retentionMs: 0 },
        ],
        t0 + 1,
      );
      assert.deepStrictEqual(statuses, ['ok', 'ok', 'lost', 'lost', 'ok', 'lost'], 'a repeat, a stale attempt, another worker: lost');
      assert.equal(await b.getRun(a), null, 'gone');
      assert.equal(await b.getRun(bb), null, 'gone');
      assertFields(await getRun(b, stale), { state: 'active', attempts: 1, worker: 'w1' }, 'stale attempt: untouched');
      assertFields(await getRun(b, kept), { state: 'succeeded', result: '2' }, 'kept');
      assertFields(await getRun(b, other), { state: 'active', worker: 'w2' }, "another worker's lease: untouched");
      assert.deepStrictEqual((await b.counts([Q]))[Q], { ...ZERO_COUNTS, active: 2, succeeded: 1 });
      const again = newRun(Q, t0 + 2, key);
      assert.deepStrictEqual(await b.enqueue([again], t0 + 2), [{ id: again.id, created: true, state: 'queued' }], 'the key was released');
    });

    test('prune removes finished runs past their retention, returns the count, keeps the rest', async () => {
      const b = await open();
      const t0 = Date.now();
      const short = await enqueueOne(b, t0);
      const long = await enqueueOne(b, t0);
      const active = await enqueueOne(b, t0);
      await reserveAll(b, 'w1', t0, { leaseMs: 10 * RETAIN });
      const queued = await enqueueOne(b, t0);
      const scheduled = await enqueueOne(b, t0, { runAt: t0 + 10 * RETAIN });
      await b.settle(
        'w1',
        [
          { id: short, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: 1000 },
          { id: long, attempt: 1, outcome: 'failed', error: errorText('x'), retentionMs: 100_000 },
        ],
        t0,
      );
      assert.equal(await b.prune(t0 + 500), 0, 'nothing has expired yet');
      assert.ok(await b.getRun(short), 'unexpired run kept');

      assert.equal(await b.prune(t0 + 5000), 1, 'one run expired');
      assert.equal(await b.getRun(short), null, 'the expired run is gone');
      for (const id of [long, active, queued, scheduled]) assert.ok(await b.getRun(id), `run ${id} kept`);
      assert.equal(await b.prune(t0 + 5000), 0, 'pruning again removes nothing');

      assert.equal(await b.prune(t0 + 200_000), 1, 'the failed run expired too');
      assert.equal(await b.getRun(long), null);
      for (const id of [active, queued, scheduled]) assert.ok(await b.getRun(id), `unfinished run ${id} is never pruned`);
      assertFields((await b.counts([Q]))[Q], { succeeded: 0, failed: 0, active: 1, queued: 1, scheduled: 1 }, 'counts after prune');
    });
  });
}
