/**
 * The broker conformance suite, section: `recordFinished`: runs that ran elsewhere (a Celery task
 * served by an Errand worker) recorded finished, so that getRun, counts, listings, stats and prune
 * treat them as the broker's own finished runs. See `suite.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import type { Broker, BrokerInspector, FinishedRun } from '../../src/broker/types.ts';
import { ConfigError } from '../../src/core/errors.ts';
import { newRunId, timeOfRunId } from '../../src/core/ids.ts';
import { assertFields, type ConformanceContext, errorText, LEASE, newRun, RETAIN, ZERO_COUNTS } from './context.ts';

const RQ = 'conf-rec';
const TASK = 'tasks.add';

function finished(now: number, over: Partial<FinishedRun> = {}): FinishedRun {
  return {
    id: newRunId(RQ, now),
    task: TASK,
    queue: RQ,
    input: '{"args":[2,3],"kwargs":{}}',
    outcome: 'succeeded',
    result: '5',
    attempts: 1,
    worker: 'errand@host',
    startedAt: now + 5,
    retentionMs: RETAIN,
    origin: 'celery',
    ...over,
  };
}

const inspects = (b: Broker): b is Broker & BrokerInspector => typeof (b as Partial<BrokerInspector>).stats === 'function';

export function recordConformance(c: ConformanceContext): void {
  const { open, test, getRun, reserveAll } = c;
  describe('recordFinished (runs that ran elsewhere)', () => {
    test('a succeeded and a failed run read back as finished runs of their queue, never reserved', async () => {
      const b = await open();
      const t0 = Date.now();
      const ok = finished(t0);
      const error = errorText('division by zero');
      const bad = finished(t0 + 1, { outcome: 'failed', error, result: undefined, attempts: 3, startedAt: t0 + 7 });
      const now = t0 + 50;
      assert.deepStrictEqual(await b.recordFinished([ok, bad], now), [true, true]);

      const a = await getRun(b, ok.id);
      assertFields(
        a,
        {
          id: ok.id,
          task: TASK,
          queue: RQ,
          state: 'succeeded',
          input: ok.input,
          result: '5',
          attempts: 1,
          worker: 'errand@host',
          enqueuedAt: timeOfRunId(ok.id),
          startedAt: t0 + 5,
          finishedAt: now,
          expiresAt: now + RETAIN,
          origin: 'celery',
        },
        'succeeded run',
      );
      assert.equal(a.error, undefined);
      assert.equal(a.history.length, 1);
      assertFields(
        a.history[0],
        { attempt: 1, worker: 'errand@host', startedAt: t0 + 5, finishedAt: now, outcome: 'succeeded' },
        'history[0]',
      );

      const f = await getRun(b, bad.id);
      assertFields(f, { state: 'failed', error, attempts: 3, startedAt: t0 + 7, finishedAt: now, expiresAt: now + RETAIN }, 'failed run');
      assert.equal(f.result, undefined);
      assertFields(f.history.at(-1), { attempt: 3, outcome: 'failed' }, 'its last attempt');

      assert.deepStrictEqual((await b.counts([RQ]))[RQ], { ...ZERO_COUNTS, succeeded: 1, failed: 1 });
      assert.deepStrictEqual((await reserveAll(b, 'w1', now + 10 * LEASE, { queues: [RQ] })).runs, [], 'never reserved');
      if (inspects(b)) {
        const page = await b.listRuns({ queue: RQ, limit: 10 });
        assert.deepStrictEqual(page.runs.map((r) => r.id).sort(), [ok.id, bad.id].sort(), 'listed with the queue');
      }
    });

    test('a recorded run is not replayed here: retry says where it ran, retryFailed leaves it', async () => {
      const b = await open();
      const t0 = Date.now();
      const bad = finished(t0, { outcome: 'failed', error: errorText('boom'), result: undefined });
      const ok = finished(t0 + 1);
      await b.recordFinished([bad, ok], t0 + 10);
      assert.deepStrictEqual(await b.retry(bad.id, t0 + 20), { outcome: 'recorded', origin: 'celery' });
      assert.deepStrictEqual(await b.retry(ok.id, t0 + 20), { outcome: 'recorded', origin: 'celery' });
      // A failed run of the broker's own in the same queue is replayed as ever.
      const own = await b.enqueue([newRun(RQ, t0 + 30)], t0 + 30);
      const { runs } = await reserveAll(b, 'w1', t0 + 31, { queues: [RQ] });
      assert.deepStrictEqual(
        runs.map((r) => r.id),
        [own[0]!.id],
      );
      await b.settle('w1', [{ id: own[0]!.id, attempt: 1, outcome: 'failed', error: errorText('own'), retentionMs: RETAIN }], t0 + 32);
      if (inspects(b)) assert.equal(await b.retryFailed(RQ, undefined, t0 + 40), 1, 'only the run of its own');
      else assert.equal((await b.retry(own[0]!.id, t0 + 40)).outcome, 'queued');
      assertFields(await getRun(b, bad.id), { state: 'failed', origin: 'celery' }, 'the recorded run, unchanged');
      assertFields(await getRun(b, own[0]!.id), { state: 'queued' }, 'the run of its own');
    });

    test('a null result; a run recorded twice (same id) stands as first recorded', async () => {
      const b = await open();
      const t0 = Date.now();
      const r = finished(t0, { result: null });
      assert.deepStrictEqual(await b.recordFinished([r], t0 + 10), [true]);
      const again = { ...r, result: '"other"', outcome: 'failed' as const, error: errorText('x') };
      assert.deepStrictEqual(await b.recordFinished([again], t0 + 20), [false]);
      const rec = await getRun(b, r.id);
      assertFields(rec, { state: 'succeeded', finishedAt: t0 + 10 }, 'the first record');
      assert.ok(rec.result === undefined || rec.result === 'null', `null result reads back absent or "null", got ${rec.result}`);
    });

    test('an idempotency key collapses a second record of the same task, and is released when the record is pruned', async () => {
      const b = await open();
      const t0 = Date.now();
      const first = finished(t0, { idempotencyKey: 'celery:abc', retentionMs: 1000 });
      const second = finished(t0 + 1, { idempotencyKey: 'celery:abc', result: '6' });
      const otherTask = finished(t0 + 2, { idempotencyKey: 'celery:abc', task: 'tasks.mul' });
      assert.deepStrictEqual(await b.recordFinished([first, second, otherTask], t0 + 10), [true, false, true]);
      assert.equal(await b.getRun(second.id), null, 'the second was not recorded');
      assertFields(await getRun(b, first.id), { idempotencyKey: 'celery:abc' }, 'the first');
      // An enqueue with the key finds the recorded run.
      const enq = await b.enqueue([newRun(RQ, t0 + 20, { task: TASK, idempotencyKey: 'celery:abc' })], t0 + 20);
      assert.deepStrictEqual(enq[0], { id: first.id, created: false, state: 'succeeded' });
      assert.ok((await b.prune(t0 + 10 + 1001)) >= 1, 'pruned after its retention');
      assert.equal(await b.getRun(first.id), null);
      const third = finished(t0 + 3000, { idempotencyKey: 'celery:abc' });
      assert.deepStrictEqual(await b.recordFinished([third], t0 + 3000), [true], 'the key went with its run');
    });

    test('retention 0 stores nothing; the stats count each recorded run (enqueued, succeeded, failed)', async () => {
      const b = await open();
      const t0 = Date.now();
      const gone = finished(t0, { retentionMs: 0, idempotencyKey: 'k0' });
      assert.deepStrictEqual(await b.recordFinished([gone], t0 + 10), [true]);
      assert.equal(await b.getRun(gone.id), null);
      assert.deepStrictEqual(await b.recordFinished([finished(t0 + 1, { idempotencyKey: 'k0' })], t0 + 11), [true], 'no key kept');
      await b.recordFinished([finished(t0 + 2, { outcome: 'failed', error: errorText('boom'), result: undefined })], t0 + 12);
      if (inspects(b)) {
        const minutes = (await b.stats([RQ], t0 - 60_000))[RQ] ?? [];
        const sum = (k: 'enqueued' | 'succeeded' | 'failed' | 'retried') => minutes.reduce((n, m) => n + m[k], 0);
        assert.deepStrictEqual(
          { enqueued: sum('enqueued'), succeeded: sum('succeeded'), failed: sum('failed'), retried: sum('retried') },
          { enqueued: 3, succeeded: 2, failed: 1, retried: 0 },
        );
        const runs = minutes.reduce((n, m) => n + m.run.reduce((x, y) => x + y, 0), 0);
        const waits = minutes.reduce((n, m) => n + m.wait.reduce((x, y) => x + y, 0), 0);
        assert.equal(runs, 3, 'one run time per record');
        assert.equal(waits, 3, 'one wait per record');
      }
    });

    test('bad records are refused with a ConfigError naming the run and the problem, and nothing is written', async () => {
      const b = await open();
      const t0 = Date.now();
      const good = finished(t0);
      const cases: [FinishedRun, RegExp][] = [
        [{ ...good, id: 'not-a-run-id' }, /not a run id/],
        [{ ...good, queue: 'elsewhere' }, /belongs to queue/],
        [{ ...good, outcome: 'retry' as unknown as 'failed' }, /outcome "retry"/],
        [{ ...good, outcome: 'failed', error: undefined }, /has no error/],
        [{ ...good, startedAt: Number.NaN }, /startedAt/],
      ];
      for (const [bad, message] of cases) {
        await assert.rejects(b.recordFinished([good, bad], t0 + 10), (e: unknown) => e instanceof ConfigError && message.test(e.message));
      }
      assert.equal(await b.getRun(good.id), null, 'the valid run of a refused batch is not recorded');
      assert.deepStrictEqual(await b.recordFinished([], t0), []);
    });
  });
}
