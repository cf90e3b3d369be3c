/**
 * The broker conformance suite, section: leases: `renew`, expiry and recovery, `maxLeaseLosses`
 * (and the broker saying it, as made); `release`; `progress`. See `suite.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { newRunId } from '../../src/core/ids.ts';
import { type ConformanceContext, Q, LEASE, RETAIN, assertFields, parseError } from './context.ts';

export function leaseConformance(c: ConformanceContext): void {
  const { open, test, getRun, reserveAll, reserveOne, enqueueOne } = c;
  describe('leases', () => {
    test('renew extends the lease: the run is not recovered at the old expiry', async () => {
      const b = await open();
      const t0 = Date.now();
      const id = await enqueueOne(b, t0);
      await reserveOne(b, 'w1', t0, 1000);
      assert.deepStrictEqual(await b.renew('w1', [{ id, attempt: 1 }], 1000, t0 + 900), [], 'the lease is still held');
      const mid = await reserveAll(b, 'w2', t0 + 1500);
      assert.deepStrictEqual(mid.runs, [], 'not recovered at the old expiry');
      assert.equal(mid.nextAt, t0 + 1900, 'nextAt is the renewed expiry');
      assertFields(await getRun(b, id), { state: 'active', worker: 'w1', leaseLosses: 0 }, 'run');
      const late = await reserveOne(b, 'w2', t0 + 2000);
      assertFields(late, { id, attempt: 2 }, 'recovered after the renewed expiry');
    });

    test('an expired lease: another worker recovers the run (attempt 2, leaseLosses 1, history lost); the old worker is told', async () => {
      const b = await open();
      const t0 = Date.now();
      const id = await enqueueOne(b, t0);
      const first = await reserveOne(b, 'w1', t0, 1000);
      assert.equal(first.leaseLosses, undefined, 'a first reservation has lost no lease');
      assert.deepStrictEqual((await reserveAll(b, 'w2', t0 + 500)).runs, [], 'not recovered while the lease holds');
      const r = await reserveOne(b, 'w2', t0 + 1001);
      assertFields(r, { id, attempt: 2, startedAt: t0 + 1001, leaseLosses: 1 }, 'recovered reservation (it says its lease was lost once)');
      const rec = await getRun(b, id);
      assertFields(rec, { state: 'active', attempts: 2, leaseLosses: 1, worker: 'w2' }, 'run');
      assert.equal(rec.history.length, 2);
      assertFields(rec.history[0], { attempt: 1, worker: 'w1', startedAt: t0, outcome: 'lost' }, 'history[0]');
      assertFields(rec.history[1], { attempt: 2, worker: 'w2', startedAt: t0 + 1001 }, 'history[1]');

      assert.deepStrictEqual(await b.renew('w1', [{ id, attempt: 1 }], 1000, t0 + 1002), [id], 'the old worker learns on renew');
      assert.equal(await b.progress('w1', { id, attempt: 1 }, '1'), 'lost');
      assert.deepStrictEqual(
        await b.settle('w1', [{ id, attempt: 1, outcome: 'succeeded', result: '"old"', retentionMs: RETAIN }], t0 + 1003),
        ['lost'],
      );
      assertFields(await getRun(b, id), { state: 'active', worker: 'w2', attempts: 2 }, 'unchanged by the old worker');
      assert.deepStrictEqual(
        await b.settle('w2', [{ id, attempt: 2, outcome: 'succeeded', result: '"new"', retentionMs: RETAIN }], t0 + 1004),
        ['ok'],
      );
      assertFields(await getRun(b, id), { state: 'succeeded', result: '"new"' }, 'settled by the new worker');
    });

    test('renew by the wrong worker or for a stale attempt does not extend the lease', async () => {
      const b = await open();
      const t0 = Date.now();
      const id = await enqueueOne(b, t0);
      await reserveOne(b, 'w1', t0, 1000);
      assert.deepStrictEqual(await b.renew('w2', [{ id, attempt: 1 }], 10_000, t0 + 500), [id]);
      assert.deepStrictEqual(await b.renew('w1', [{ id, attempt: 2 }], 10_000, t0 + 500), [id]);
      const unknown = newRunId(Q);
      assert.deepStrictEqual(await b.renew('w1', [{ id: unknown, attempt: 1 }], 10_000, t0 + 500), [unknown], 'an unknown run is not held');
      assertFields(await reserveOne(b, 'w3', t0 + 1001), { id, attempt: 2 }, 'recovered at the original expiry');
    });

    test('a run whose lease expires maxLeaseLosses times is failed with reason lease_lost', async () => {
      const b = await open({ maxLeaseLosses: 2, failedRetentionMs: 5000 });
      assert.equal(b.maxLeaseLosses, 2, 'the broker says what it was made with (workers take their last-chance threshold from it)');
      const t0 = Date.now();
      const id = await enqueueOne(b, t0);
      await reserveOne(b, 'w1', t0, 1000);
      await reserveOne(b, 'w2', t0 + 1001, 1000); // first loss: recovered, attempt 2
      assertFields(await getRun(b, id), { leaseLosses: 1, attempts: 2 }, 'after the first loss');
      const t2 = t0 + 2002;
      const after = await reserveAll(b, 'w3', t2, { leaseMs: 1000 });
      assert.deepStrictEqual(after.runs, [], 'the second loss fails the run instead of requeueing it');
      const rec = await getRun(b, id);
      assertFields(rec, { state: 'failed', leaseLosses: 2, attempts: 2, finishedAt: t2, expiresAt: t2 + 5000 }, 'run failed by the broker');
      assert.equal(parseError(rec.error).reason, 'lease_lost', 'error reason');
      assertFields(rec.history.at(-1), { attempt: 2, worker: 'w2', outcome: 'lost' }, 'last attempt');
      assert.deepStrictEqual(await b.retry(id, t2 + 1), { outcome: 'queued' }, 'a lease_lost run can be replayed');
    });

    test('maxLeaseLosses defaults to 3', async () => {
      const b = await open();
      assert.equal(b.maxLeaseLosses, 3, 'the broker says its default');
      const t0 = Date.now();
      const id = await enqueueOne(b, t0);
      await reserveOne(b, 'w1', t0, 1000);
      assertFields(await reserveOne(b, 'w2', t0 + 1001, 1000), { id, attempt: 2 }, 'after one loss');
      assertFields(await reserveOne(b, 'w3', t0 + 2002, 1000), { id, attempt: 3 }, 'after two losses');
      assert.deepStrictEqual((await reserveAll(b, 'w4', t0 + 3003)).runs, [], 'the third loss fails the run');
      const rec = await getRun(b, id);
      assertFields(rec, { state: 'failed', leaseLosses: 3 }, 'run');
      assert.equal(parseError(rec.error).reason, 'lease_lost');
    });
  });

  // ---------------------------------------------------------------------------------------------
  describe('release', () => {
    test('back to queued at once, reservable, the attempt not counted', async () => {
      const b = await open();
      const t0 = Date.now();
      const id = await enqueueOne(b, t0);
      await reserveOne(b, 'w1', t0, LEASE);
      await b.release('w1', [{ id, attempt: 1 }], t0 + 10);
      const rec = await getRun(b, id);
      assertFields(rec, { state: 'queued', attempts: 0, leaseLosses: 0 }, 'released run');
      assert.ok(
        rec.history.some((h) => h.attempt === 1 && h.worker === 'w1' && h.outcome === 'released'),
        `history records the released attempt: ${JSON.stringify(rec.history)}`,
      );
      const again = await reserveOne(b, 'w2', t0 + 11); // long before the old lease would expire
      assertFields(again, { id, attempt: 1 }, 'the same attempt number again');
      assertFields(await getRun(b, id), { state: 'active', attempts: 1, worker: 'w2' }, 'run');
    });

    test('a release by the wrong worker or for a stale attempt changes nothing', async () => {
      const b = await open();
      const t0 = Date.now();
      const id = await enqueueOne(b, t0);
      await reserveOne(b, 'w1', t0);
      const before = await getRun(b, id);
      await b.release('w2', [{ id, attempt: 1 }], t0 + 1);
      await b.release('w1', [{ id, attempt: 2 }], t0 + 1);
      await b.release('w1', [{ id: newRunId(Q), attempt: 1 }], t0 + 1);
      assert.deepStrictEqual(await getRun(b, id), before);
      assert.deepStrictEqual((await reserveAll(b, 'w2', t0 + 2)).runs, []);
    });
  });

  // ---------------------------------------------------------------------------------------------
  describe('progress', () => {
    test('stored on the run while its lease is held; lost for another worker, a stale attempt or after settle', async () => {
      const b = await open();
      const t0 = Date.now();
      const id = await enqueueOne(b, t0);
      await reserveOne(b, 'w1', t0);
      assert.equal(await b.progress('w1', { id, attempt: 1 }, '{"pct":10}'), 'ok');
      assert.equal((await getRun(b, id)).progress, '{"pct":10}');
      assert.equal(await b.progress('w1', { id, attempt: 1 }, '{ "pct" : 50 }'), 'ok');
      assert.equal((await getRun(b, id)).progress, '{ "pct" : 50 }', 'the latest value, text untouched');
      assert.equal(await b.progress('w2', { id, attempt: 1 }, '{"pct":99}'), 'lost', 'another worker');
      assert.equal(await b.progress('w1', { id, attempt: 2 }, '{"pct":99}'), 'lost', 'a stale attempt');
      assert.equal(await b.progress('w1', { id: newRunId(Q), attempt: 1 }, '1'), 'lost', 'an unknown run');
      assert.equal((await getRun(b, id)).progress, '{ "pct" : 50 }', 'unchanged by rejected progress');
      await b.settle('w1', [{ id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 1);
      assert.equal(await b.progress('w1', { id, attempt: 1 }, '{"pct":100}'), 'lost', 'after settle');
    });
  });
}
