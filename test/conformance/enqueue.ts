/**
 * The broker conformance suite, section: `enqueue`: creating runs, every field stored as given,
 * batches, duplicate run ids. See `suite.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { type ConformanceContext, Q, ZERO_COUNTS, TASK, LEASE, newRun, ids, assertFields } from './context.ts';

export function enqueueConformance(c: ConformanceContext): void {
  const { open, test, getRun, reserveAll, enqueueOne } = c;
  describe('enqueue', () => {
    test('creates a queued run, storing every field as given (JSON text untouched)', async () => {
      const b = await open();
      const t0 = Date.now();
      const input = '{ "name" : "Zoë",  "tags": [1, 2.50, "✓"] }';
      const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
      const run = newRun(Q, t0, { input, priority: 7, traceparent });
      const res = await b.enqueue([run], t0);
      assert.deepStrictEqual(res, [{ id: run.id, created: true, state: 'queued' }]);
      const rec = await getRun(b, run.id);
      assertFields(
        rec,
        {
          id: run.id,
          task: TASK,
          queue: Q,
          state: 'queued',
          priority: 7,
          input,
          attempts: 0,
          leaseLosses: 0,
          enqueuedAt: t0,
          traceparent,
          history: [],
        },
        'run',
      );
      for (const field of ['result', 'error', 'progress', 'startedAt', 'finishedAt', 'expiresAt', 'worker', 'idempotencyKey'] as const) {
        assert.equal(
          rec[field],
          undefined,
          `run.${field} should be absent (undefined, not null) on a new run, got ${JSON.stringify(rec[field])}`,
        );
      }
    });

    test('runAt after now makes the run scheduled; at or before now, queued', async () => {
      const b = await open();
      const t0 = Date.now();
      const later = newRun(Q, t0, { runAt: t0 + 1000 });
      const atNow = newRun(Q, t0, { runAt: t0 });
      const past = newRun(Q, t0, { runAt: t0 - 1000 });
      const res = await b.enqueue([later, atNow, past], t0);
      assert.deepStrictEqual(
        res.map((r) => [r.id, r.created, r.state]),
        [
          [later.id, true, 'scheduled'],
          [atNow.id, true, 'queued'],
          [past.id, true, 'queued'],
        ],
      );
      assertFields(await getRun(b, later.id), { state: 'scheduled', runAt: t0 + 1000, attempts: 0 }, 'scheduled run');
      assertFields(await getRun(b, atNow.id), { state: 'queued' }, 'run due now');
      assertFields(await getRun(b, past.id), { state: 'queued' }, 'run due in the past');
    });

    test('a batch is created in order, one result per run, all created', async () => {
      const b = await open();
      const t0 = Date.now();
      const runs = Array.from({ length: 10 }, () => newRun(Q, t0));
      const res = await b.enqueue(runs, t0);
      assert.deepStrictEqual(ids(res), ids(runs));
      assert.ok(
        res.every((r) => r.created && r.state === 'queued'),
        'every result created=true, state queued',
      );
      const { runs: got } = await reserveAll(b, 'w1', t0 + 1);
      assert.deepStrictEqual(ids(got), ids(runs), 'reserved in enqueue order');
    });

    test('an empty batch does nothing', async () => {
      const b = await open();
      const t0 = Date.now();
      assert.deepStrictEqual(await b.enqueue([], t0), []);
      assert.deepStrictEqual(await b.settle('w1', [], t0), []);
      assert.deepStrictEqual(await b.renew('w1', [], LEASE, t0), []);
      await b.release('w1', [], t0);
    });

    test('stores the idempotency key on the run', async () => {
      const b = await open();
      const t0 = Date.now();
      const id = await enqueueOne(b, t0, { idempotencyKey: 'order-42', idempotencyTtl: 60_000 });
      assertFields(await getRun(b, id), { idempotencyKey: 'order-42' }, 'run');
    });
  });

  describe('enqueue: duplicate run ids', () => {
    test('a run id that exists already creates nothing and reports the stored run, in a later call or the same one', async () => {
      const b = await open();
      const t0 = Date.now();
      const first = newRun(Q, t0, { input: '"first"' });
      await b.enqueue([first], t0);
      const other = newRun(Q, t0);
      const res = await b.enqueue([{ ...first, input: '"again"', priority: 9 }, other, { ...other, input: '"twice"' }], t0 + 1);
      assert.deepStrictEqual(res, [
        { id: first.id, created: false, state: 'queued' },
        { id: other.id, created: true, state: 'queued' },
        { id: other.id, created: false, state: 'queued' },
      ]);
      assertFields(await getRun(b, first.id), { input: '"first"', priority: 0, enqueuedAt: t0 }, 'the stored run is unchanged');
      assertFields(await getRun(b, other.id), { input: other.input }, 'the first of the same call is kept');
      assert.deepStrictEqual((await b.counts([Q]))[Q], { ...ZERO_COUNTS, queued: 2 }, 'one run per id');
      await reserveAll(b, 'w1', t0 + 2);
      assert.deepStrictEqual(await b.enqueue([{ ...first, input: '"late"' }], t0 + 3), [{ id: first.id, created: false, state: 'active' }]);
    });
  });
}
