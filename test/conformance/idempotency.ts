/**
 * The broker conformance suite, section: idempotency keys: scoping, the TTL, keys released with
 * their runs. See `suite.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Broker, NewRun } from '../../src/broker/types.ts';
import { type ConformanceContext, Q, ZERO_COUNTS, LEASE, RETAIN, newRun, ids, assertFields, errorText } from './context.ts';

export function idempotencyConformance(c: ConformanceContext): void {
  const { open, deleteRunBehindBroker, test, getRun, reserveAll, reserveOne, enqueueOne } = c;
  describe('idempotency', () => {
    test('same task and key: the same run, created=false, nothing new stored', async () => {
      const b = await open();
      const t0 = Date.now();
      const first = newRun(Q, t0, { idempotencyKey: 'k1', idempotencyTtl: 60_000 });
      const second = newRun(Q, t0 + 10, { idempotencyKey: 'k1', idempotencyTtl: 60_000 });
      assert.deepStrictEqual(await b.enqueue([first], t0), [{ id: first.id, created: true, state: 'queued' }]);
      assert.deepStrictEqual(await b.enqueue([second], t0 + 10), [{ id: first.id, created: false, state: 'queued' }]);
      assert.equal(await b.getRun(second.id), null, 'the duplicate is not stored');
      assert.deepStrictEqual((await b.counts([Q]))[Q], { ...ZERO_COUNTS, queued: 1 });
    });

    test('within one batch, runs sharing a key collapse into the first', async () => {
      const b = await open();
      const t0 = Date.now();
      const a = newRun(Q, t0, { idempotencyKey: 'k', idempotencyTtl: 60_000 });
      const dup = newRun(Q, t0, { idempotencyKey: 'k', idempotencyTtl: 60_000 });
      const other = newRun(Q, t0, { idempotencyKey: 'k2', idempotencyTtl: 60_000 });
      const plain = newRun(Q, t0);
      const res = await b.enqueue([a, dup, other, plain], t0);
      assert.deepStrictEqual(res, [
        { id: a.id, created: true, state: 'queued' },
        { id: a.id, created: false, state: 'queued' },
        { id: other.id, created: true, state: 'queued' },
        { id: plain.id, created: true, state: 'queued' },
      ]);
      assert.equal(await b.getRun(dup.id), null);
      const { runs } = await reserveAll(b, 'w1', t0);
      assert.deepStrictEqual(ids(runs), [a.id, other.id, plain.id]);
    });

    test("a duplicate reports the existing run's current state", async () => {
      const b = await open();
      const t0 = Date.now();
      const key = { idempotencyKey: 'state-key', idempotencyTtl: 600_000 };
      const id = await enqueueOne(b, t0, { ...key, runAt: t0 + 100 });
      assert.deepStrictEqual(await b.enqueue([newRun(Q, t0, key)], t0 + 1), [{ id, created: false, state: 'scheduled' }]);
      await reserveOne(b, 'w1', t0 + 100);
      assert.deepStrictEqual(await b.enqueue([newRun(Q, t0, key)], t0 + 101), [{ id, created: false, state: 'active' }]);
      await b.settle('w1', [{ id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 102);
      assert.deepStrictEqual(await b.enqueue([newRun(Q, t0, key)], t0 + 103), [{ id, created: false, state: 'succeeded' }]);
    });

    test('the key is scoped to the task: another task with the same key gets its own run', async () => {
      const b = await open();
      const t0 = Date.now();
      const a = newRun(Q, t0, { idempotencyKey: 'shared', idempotencyTtl: 60_000 });
      const other = newRun(Q, t0, { task: 'conformance.other', idempotencyKey: 'shared', idempotencyTtl: 60_000 });
      const res = await b.enqueue([a, other], t0);
      assert.deepStrictEqual(res, [
        { id: a.id, created: true, state: 'queued' },
        { id: other.id, created: true, state: 'queued' },
      ]);
      const noKey = [newRun(Q, t0), newRun(Q, t0)];
      assert.ok(
        (await b.enqueue(noKey, t0)).every((r) => r.created),
        'runs without a key never collapse',
      );
    });

    test('the key is scoped to the task within its queue: the same task and key on another queue creates another run', async () => {
      // Keys live with their queue, so that Redis Cluster never needs a cross-slot operation.
      const b = await open();
      const t0 = Date.now();
      const first = newRun('qa', t0, { idempotencyKey: 'per-queue', idempotencyTtl: 60_000 });
      const again = newRun('qa', t0, { idempotencyKey: 'per-queue', idempotencyTtl: 60_000 });
      const other = newRun('qb', t0, { idempotencyKey: 'per-queue', idempotencyTtl: 60_000 });
      assert.deepStrictEqual(await b.enqueue([first], t0), [{ id: first.id, created: true, state: 'queued' }]);
      assert.deepStrictEqual(await b.enqueue([again], t0 + 1), [{ id: first.id, created: false, state: 'queued' }]);
      assert.deepStrictEqual(await b.enqueue([other], t0 + 2), [{ id: other.id, created: true, state: 'queued' }]);
    });

    test('after the TTL, the same key creates a new run', async () => {
      const b = await open();
      // A broker may keep the key with a storage-side expiry (Redis PX, counted from when its script
      // ran) or compare against the caller's `now` (SQLite). Both clocks are moved past the TTL, and
      // the real-time wait is measured from when the first enqueue *returned*: its storage-side
      // expiry started before that instant, so once the real clock is past it plus the TTL the key is
      // gone, however late the call reached the broker on a loaded machine. The TTL is long enough
      // that the duplicate enqueue just after it lands well inside the window, stalls included.
      const ttl = 1_000;
      const t0 = Date.now();
      const first = newRun(Q, t0, { idempotencyKey: 'ttl-key', idempotencyTtl: ttl });
      await b.enqueue([first], t0);
      const firstReturned = Date.now();
      const dup = await b.enqueue([newRun(Q, t0, { idempotencyKey: 'ttl-key', idempotencyTtl: ttl })], t0 + 1);
      // Both scripts ran between t0 and now; only if that span is under the TTL must the key have held
      // (a stall longer than the TTL would rightly let it lapse; the 60 s keys above cover holding).
      if (Date.now() - t0 < ttl) assert.deepStrictEqual(dup, [{ id: first.id, created: false, state: 'queued' }]);
      const expiredBy = firstReturned + ttl + 5; // 5 ms for the storage clock's millisecond rounding
      while (Date.now() <= expiredBy) await sleep(Math.max(1, expiredBy + 1 - Date.now()));
      const t1 = Math.max(Date.now(), t0 + ttl + 1);
      const again = newRun(Q, t1, { idempotencyKey: 'ttl-key', idempotencyTtl: ttl });
      assert.deepStrictEqual(await b.enqueue([again], t1), [{ id: again.id, created: true, state: 'queued' }], 'a new run after the TTL');
      const third = newRun(Q, t1 + 1, { idempotencyKey: 'ttl-key', idempotencyTtl: 60_000 });
      assert.deepStrictEqual(
        await b.enqueue([third], t1 + 1),
        [{ id: again.id, created: false, state: 'queued' }],
        'the key now maps to the new run',
      );
      assert.ok(await b.getRun(first.id), 'the first run is still there');
    });

    // A key never names a run that no longer exists: the same key then creates a new run, which
    // the key names from then on (issue 20: a purged run's key used to outlive it).
    async function assertKeyCreatesNewRun(b: Broker, gone: string, key: Partial<NewRun>, now: number, why: string) {
      assert.equal(await b.getRun(gone), null, `${why}: the first run is gone`);
      const again = newRun(Q, now, key);
      assert.deepStrictEqual(await b.enqueue([again], now), [{ id: again.id, created: true, state: 'queued' }], `${why}: a new run`);
      assertFields(await getRun(b, again.id), { state: 'queued', idempotencyKey: key.idempotencyKey }, `${why}: the new run`);
      assert.deepStrictEqual(
        await b.enqueue([newRun(Q, now + 1, key)], now + 1),
        [{ id: again.id, created: false, state: 'queued' }],
        `${why}: the key now names the new run`,
      );
    }

    test('a run deleted at once by retention 0 releases its key: the same key creates a new run', async () => {
      const b = await open();
      const t0 = Date.now();
      const key = { idempotencyKey: 'gone', idempotencyTtl: 600_000 };
      const ok = await enqueueOne(b, t0, key);
      const koKey = { idempotencyKey: 'gone-failed', idempotencyTtl: 600_000 };
      const ko = await enqueueOne(b, t0, koKey);
      await reserveAll(b, 'w1', t0);
      await b.settle(
        'w1',
        [
          { id: ok, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: 0 },
          { id: ko, attempt: 1, outcome: 'failed', error: errorText('x'), retentionMs: 0 },
        ],
        t0 + 1,
      );
      await assertKeyCreatesNewRun(b, ok, key, t0 + 2, 'succeeded with retention 0');
      await assertKeyCreatesNewRun(b, ko, koKey, t0 + 4, 'failed with retention 0');
    });

    test('a run deleted at once by retention 0 in a reserve that settles it releases its key', async () => {
      const b = await open();
      const t0 = Date.now();
      const key = { idempotencyKey: 'gone-along', idempotencyTtl: 600_000 };
      const id = await enqueueOne(b, t0, key);
      await reserveOne(b, 'w1', t0);
      const { settled } = await b.reserve({
        workerId: 'w1',
        queues: [Q],
        max: 0,
        leaseMs: LEASE,
        now: t0 + 1,
        settle: [{ id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: 0 }],
      });
      assert.deepStrictEqual(settled, ['ok']);
      await assertKeyCreatesNewRun(b, id, key, t0 + 2, 'settled along with a reserve');
    });

    test('prune releases the keys of the runs it deletes; a key whose run is kept still holds', async () => {
      const b = await open();
      const t0 = Date.now();
      const key = { idempotencyKey: 'pruned', idempotencyTtl: 10 * RETAIN };
      const keptKey = { idempotencyKey: 'kept', idempotencyTtl: 10 * RETAIN };
      const cancelledKey = { idempotencyKey: 'pruned-cancelled', idempotencyTtl: 10 * RETAIN };
      const id = await enqueueOne(b, t0, key);
      const kept = await enqueueOne(b, t0, keptKey);
      const cancelled = await enqueueOne(b, t0, cancelledKey);
      await reserveAll(b, 'w1', t0, { max: 2 });
      await b.settle(
        'w1',
        [
          { id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: 1000 },
          { id: kept, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: 5 * RETAIN },
        ],
        t0 + 1,
      );
      await b.cancel(cancelled, t0 + 1);
      // Past the short retention and the default retention of cancelled runs (1 day), within every key's TTL.
      const later = t0 + 2 * 86_400_000;
      assert.ok((await b.prune(t0 + 5000)) >= 1);
      await assertKeyCreatesNewRun(b, id, key, t0 + 5001, 'pruned');
      assert.deepStrictEqual(
        await b.enqueue([newRun(Q, t0 + 5002, keptKey)], t0 + 5002),
        [{ id: kept, created: false, state: 'succeeded' }],
        'the key of a kept run holds',
      );
      assert.ok((await b.prune(later)) >= 1);
      assert.equal(await b.getRun(cancelled), null, 'the cancelled run is pruned after its retention');
      const again = newRun(Q, later, cancelledKey);
      assert.deepStrictEqual(await b.enqueue([again], later), [{ id: again.id, created: true, state: 'queued' }], 'its key too');
    });

    test(
      'a key that names a run deleted behind the broker is taken by a new run (never a dangling id)',
      async () => {
        const b = await open();
        const t0 = Date.now();
        const key = { idempotencyKey: 'dangling', idempotencyTtl: 600_000 };
        const id = await enqueueOne(b, t0, key);
        await deleteRunBehindBroker(b, id);
        await assertKeyCreatesNewRun(b, id, key, t0 + 1, 'deleted by hand');
      },
      'editBehindBroker',
    );
  });
}
