/**
 * The BrokerInspector conformance suite, section: `stats`: per-minute counts and the wait and run
 * histograms. See `inspector.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import {
  type InspectorContext,
  MINUTE,
  HOUR,
  RETAIN,
  newRun,
  ids,
  errorText,
  hist,
  bucket,
  minuteOf,
  minuteStats,
  counted,
  sumHist,
} from './inspector-context.ts';

export function statsConformance(c: InspectorContext): void {
  const { open, shares, test, getRun, enqueueOne, reserve } = c;
  describe('stats', () => {
    test(
      'enqueue, succeed, fail and retry counts land in the minute of `now`; per queue; `since` filters older minutes',
      async () => {
        const b = await open();
        const m0 = minuteOf(Date.now());
        const [m1, m2] = [m0 + MINUTE, m0 + 2 * MINUTE];
        // Minute m0: 4 runs of `sa` created (the fifth enqueue is an idempotent repeat), 1 of `sx`; all start.
        const r = [newRun('sa', m0 + 1000), newRun('sa', m0 + 1000), newRun('sa', m0 + 1000)];
        const keyed = newRun('sa', m0 + 1000, { idempotencyKey: 'k', idempotencyTtl: HOUR });
        await b.enqueue([...r, keyed, newRun('sx', m0 + 1000)], m0 + 1000);
        const repeat = await b.enqueue([newRun('sa', m0 + 1500, { idempotencyKey: 'k', idempotencyTtl: HOUR })], m0 + 1500);
        assert.equal(repeat[0]?.created, false, 'the repeat is collapsed into the keyed run');
        const { runs: started } = await reserve(b, ['sa'], m0 + 2000);
        assert.equal(started.length, 4);
        // Minute m1: one of each settlement (one succeeded with retention 0).
        const [a, c, d] = ids(r) as [string, string, string];
        assert.deepStrictEqual(
          await b.settle(
            'w1',
            [
              { id: a, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN },
              { id: c, attempt: 1, outcome: 'failed', error: errorText('x'), retentionMs: RETAIN },
              { id: d, attempt: 1, outcome: 'retry', error: errorText('x'), runAt: m2 },
              { id: keyed.id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: 0 },
            ],
            m1 + 5,
          ),
          ['ok', 'ok', 'ok', 'ok'],
        );
        // Minute m2: the retry starts at its runAt and fails; a new run is enqueued and cancelled.
        assert.deepStrictEqual(ids((await reserve(b, ['sa'], m2)).runs), [d]);
        await b.settle('w1', [{ id: d, attempt: 2, outcome: 'failed', error: errorText('y'), retentionMs: RETAIN }], m2 + 2);
        const cancelled = await enqueueOne(b, m2 + 10, 'sa');
        await b.cancel(cancelled, m2 + 20);

        const expectedSa = [
          minuteStats(m0, { enqueued: 4, wait: hist({ [bucket(1000)]: 4 }) }),
          minuteStats(m1, { succeeded: 2, failed: 1, retried: 1, run: hist({ [bucket(MINUTE - 1995)]: 4 }) }),
          minuteStats(m2, { enqueued: 1, failed: 1, wait: hist({ [bucket(0)]: 1 }), run: hist({ [bucket(2)]: 1 }) }),
        ];
        const all = await b.stats(['sa', 'sx', 'never-seen'], m0);
        assert.deepStrictEqual(Object.keys(all).sort(), ['never-seen', 'sa', 'sx'], 'one entry per requested queue');
        assert.deepStrictEqual(counted(all.sa), expectedSa, 'sa, minute by minute');
        assert.deepStrictEqual(counted(all.sx), [minuteStats(m0, { enqueued: 1 })], 'sx counts only its own run');
        assert.deepStrictEqual(all['never-seen'], [], 'a queue never seen: []');

        assert.deepStrictEqual(counted((await b.stats(['sa'], m0 - HOUR)).sa), expectedSa, 'since an hour before: everything');
        assert.deepStrictEqual(counted((await b.stats(['sa'], m1)).sa), expectedSa.slice(1), 'since the start of m1: m1 on');
        assert.deepStrictEqual(
          counted((await b.stats(['sa'], m1 + 30_000)).sa),
          expectedSa.slice(1),
          'since inside m1: m1 (which contains since) on',
        );
        assert.deepStrictEqual(counted((await b.stats(['sa'], m2 + 59_999)).sa), expectedSa.slice(2), 'since the last ms of m2: m2');
        assert.deepStrictEqual(counted((await b.stats(['sa'], m2 + MINUTE)).sa), [], 'since after the last minute: nothing');
        assert.deepStrictEqual(await b.stats([], m0), {}, 'no queue asked, none answered');
        for (const { label, other } of await shares(b))
          assert.deepStrictEqual(counted((await other.stats(['sa'], m0)).sa), expectedSa, `the same from ${label}`);
      },
      'sameStorage',
    );

    test('run histogram: one entry per settled attempt, bucket bounds inclusive, overflow in the last bucket, negative in the first', async () => {
      const b = await open();
      const m0 = minuteOf(Date.now());
      const start = m0 + 1000;
      const durations = [0, 1, 2, 3, 250, 251, 59_999, 300_000, 300_001, -5];
      const runs = durations.map(() => newRun('sr', start));
      await b.enqueue(runs, start);
      const { runs: leased } = await reserve(b, ['sr'], start, 1000, 10 * MINUTE);
      assert.equal(leased.length, durations.length);
      for (let i = 0; i < runs.length; i++) {
        const outcome = i % 3;
        const id = runs[i]!.id;
        const now = start + durations[i]!;
        const s =
          outcome === 0
            ? { id, attempt: 1, outcome: 'succeeded' as const, result: '1', retentionMs: RETAIN }
            : outcome === 1
              ? { id, attempt: 1, outcome: 'failed' as const, error: errorText('x'), retentionMs: RETAIN }
              : { id, attempt: 1, outcome: 'retry' as const, error: errorText('x'), runAt: now + HOUR };
        assert.deepStrictEqual(await b.settle('w1', [s], now), ['ok'], `settle after ${durations[i]} ms`);
      }
      const minutes = counted((await b.stats(['sr'], m0 - MINUTE)).sr);
      const expectedRun = hist();
      for (const d of durations) expectedRun[bucket(d)]! += 1;
      assert.deepStrictEqual(
        expectedRun,
        hist({ 0: 3, 1: 1, 2: 1, 7: 1, 8: 1, 14: 1, 15: 1, 16: 1 }),
        'the expected buckets, spelled out: 0, 1 and -5 ms in [0, 1]; 2 in (1, 2]; 3 in (2, 5]; 250 in (100, 250]; 251 in (250, 500]; 59,999 in (30 s, 60 s]; 300,000 in (60 s, 300 s]; 300,001 above',
      );
      assert.deepStrictEqual(sumHist(minutes.map((m) => m.run)), expectedRun, 'run histogram over all minutes');
      assert.deepStrictEqual(sumHist(minutes.map((m) => m.wait)), hist({ 0: durations.length }), 'every run waited 0 ms');
      // Each settlement counts in the minute of its own `now`.
      const byMinute = new Map<number, number[]>();
      for (const d of durations) {
        const m = minuteOf(start + d);
        const h = byMinute.get(m) ?? hist();
        h[bucket(d)]! += 1;
        byMinute.set(m, h);
      }
      for (const [m, h] of byMinute) {
        assert.deepStrictEqual(minutes.find((x) => x.minute === m)?.run, h, `run histogram of minute ${m - m0} ms after m0`);
      }
    });

    test('wait: from when the run last became due (max of enqueuedAt and runAt; a retry runAt; a replay) to its start, counted per start', async () => {
      const b = await open();
      const m0 = minuteOf(Date.now());
      let expectedWait = hist();
      /** Reserves at `now`, expects `id` and one more wait entry of `ms` in minute m0. */
      const start = async (id: string, now: number, ms: number, what: string): Promise<void> => {
        assert.deepStrictEqual(ids((await reserve(b, ['sw'], now)).runs), [id], `${what}: the run starts`);
        expectedWait = [...expectedWait];
        expectedWait[bucket(ms)]! += 1;
        const [m] = counted((await b.stats(['sw'], m0)).sw);
        assert.deepStrictEqual(m?.wait, expectedWait, `${what}: waited ${ms} ms, counted in bucket ${bucket(ms)}`);
      };
      assert.deepStrictEqual(
        [bucket(1), bucket(3), bucket(30), bucket(700), bucket(4), bucket(9), bucket(10), bucket(300)],
        [0, 2, 5, 9, 2, 3, 3, 8],
        'buckets spelled out',
      );
      // Scheduled 10 s ahead, started 3 ms after it became due: waited 3 ms (not 10,003).
      const scheduled = await enqueueOne(b, m0 + 1000, 'sw', { runAt: m0 + 11_000 });
      // Due in the past (runAt before the enqueue): waits from its enqueue.
      const pastDue = await enqueueOne(b, m0 + 1000, 'sw', { runAt: m0 - 5000 });
      await start(pastDue, m0 + 1001, 1, 'a run due before its enqueue');
      await b.settle('w1', [{ id: pastDue, attempt: 1, outcome: 'retry', error: errorText('x'), runAt: m0 + 20_000 }], m0 + 1010);
      await start(scheduled, m0 + 11_003, 3, 'a scheduled run, from its runAt (not from its enqueue, 10,003 ms)');
      await start(pastDue, m0 + 20_030, 30, "a retry, from the retry's runAt");
      await b.settle('w1', [{ id: pastDue, attempt: 2, outcome: 'failed', error: errorText('x'), retentionMs: RETAIN }], m0 + 20_040);
      assert.equal(await b.retryFailed('sw', undefined, m0 + 30_000), 1);
      await start(pastDue, m0 + 30_700, 700, 'a run replayed by retryFailed, from the replay (not from its old runAt)');
      await b.settle('w1', [{ id: pastDue, attempt: 1, outcome: 'failed', error: errorText('x'), retentionMs: RETAIN }], m0 + 31_000);
      assert.deepStrictEqual(await b.retry(pastDue, m0 + 40_000), { outcome: 'queued' });
      await start(pastDue, m0 + 40_004, 4, 'a run replayed by retry, from the replay (not from its old runAt)');
      // `scheduled` and the run replayed last are still active: their starts count in `wait`, not (yet) in `run`.
      assert.deepStrictEqual(counted((await b.stats(['sw'], m0)).sw), [
        minuteStats(m0, {
          enqueued: 2,
          failed: 2,
          retried: 1,
          wait: hist({ 0: 1, 2: 2, 5: 1, 9: 1 }),
          run: hist({ 3: 2, 8: 1 }), // 9 ms (retry) and 10 ms (failed) in (5, 10]; 300 ms (failed) in (250, 500]
        }),
      ]);
    });

    test('runs the broker fails (lease lost maxLeaseLosses times) count as failed; cancellations count nowhere', async () => {
      const b = await open({ maxLeaseLosses: 1 });
      const m0 = minuteOf(Date.now());
      const m1 = m0 + MINUTE;
      const lost = await enqueueOne(b, m0 + 1000, 'sl');
      const cancelled = await enqueueOne(b, m0 + 1000, 'sl');
      assert.equal((await reserve(b, ['sl'], m0 + 1000, 10, 1000)).runs.length, 2);
      assert.deepStrictEqual(await b.cancel(cancelled, m0 + 1500), { outcome: 'cancelled', previous: 'active' });
      assert.deepStrictEqual((await reserve(b, ['sl'], m1 + 10_000)).runs, []);
      const rec = await getRun(b, lost);
      assert.equal(rec.state, 'failed', 'the lease expired once with maxLeaseLosses 1: failed');
      assert.deepStrictEqual(counted((await b.stats(['sl'], m0)).sl), [
        minuteStats(m0, { enqueued: 2, wait: hist({ 0: 2 }) }),
        minuteStats(m1, { failed: 1 }),
      ]);
    });
  });
}
