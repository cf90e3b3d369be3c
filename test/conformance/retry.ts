/** The broker conformance suite, section: `retry`: replaying a failed or cancelled run. See `suite.ts`. */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import type { RunState } from '../../src/broker/types.ts';
import { newRunId } from '../../src/core/ids.ts';
import { type ConformanceContext, Q, RETAIN, newRun, ids, assertFields, errorText } from './context.ts';

export function retryConformance(c: ConformanceContext): void {
  const { open, test, getRun, reserveAll, reserveOne, enqueueOne } = c;
  describe('retry (replay of a failed or cancelled run)', () => {
    test('a failed run goes back to queued with attempts reset, and is reserved again from attempt 1', async () => {
      const b = await open();
      const t0 = Date.now();
      const id = await enqueueOne(b, t0);
      await reserveOne(b, 'w1', t0);
      await b.settle('w1', [{ id, attempt: 1, outcome: 'failed', error: errorText('boom'), retentionMs: 1000 }], t0 + 1);
      assert.deepStrictEqual(await b.retry(id, t0 + 2), { outcome: 'queued' });
      const rec = await getRun(b, id);
      assertFields(rec, { state: 'queued', attempts: 0 }, 'replayed run');
      assert.equal(rec.expiresAt, undefined, 'a replayed run no longer expires');
      assert.equal(await b.prune(t0 + 10_000), 0, 'and is not pruned at its old expiry');
      const r = await reserveOne(b, 'w2', t0 + 20_000);
      assertFields(r, { id, attempt: 1 }, 'reservation after replay');
      assertFields(await getRun(b, id), { state: 'active', attempts: 1, worker: 'w2' }, 'run');
    });

    test('a cancelled run (queued, scheduled or active when cancelled) goes back to queued, keeps its key, and runs from attempt 1', async () => {
      const b = await open();
      const t0 = Date.now();
      const key = { idempotencyKey: 'cancelled-then-retried', idempotencyTtl: 10 * 86_400_000 };
      const fromQueued = await enqueueOne(b, t0, key);
      const fromActive = await enqueueOne(b, t0);
      await reserveAll(b, 'w1', t0, { max: 1 });
      const fromScheduled = await enqueueOne(b, t0, { runAt: t0 + 1000 });
      await reserveAll(b, 'w1', t0, { max: 1 });
      for (const id of [fromQueued, fromActive, fromScheduled]) assert.equal((await b.cancel(id, t0 + 1)).outcome, 'cancelled');
      for (const id of [fromQueued, fromActive, fromScheduled]) {
        assert.deepStrictEqual(await b.retry(id, t0 + 2), { outcome: 'queued' }, `retry of ${id}`);
        const rec = await getRun(b, id);
        assertFields(rec, { state: 'queued', attempts: 0, leaseLosses: 0 }, 'replayed cancelled run');
        assert.equal(rec.expiresAt, undefined, 'a replayed run no longer expires');
        assert.equal(rec.finishedAt, undefined, 'nor has it finished');
      }
      assert.equal(await b.prune(t0 + 3 * 86_400_000), 0, 'none is pruned at its old expiry');
      assert.deepStrictEqual(
        await b.enqueue([newRun(Q, t0 + 3, key)], t0 + 3),
        [{ id: fromQueued, created: false, state: 'queued' }],
        'its key still names it',
      );
      const { runs } = await reserveAll(b, 'w2', t0 + 4);
      assert.deepStrictEqual(ids(runs).sort(), [fromQueued, fromActive, fromScheduled].sort());
      for (const r of runs) assert.equal(r.attempt, 1, `${r.id} starts again from attempt 1`);
      assert.deepStrictEqual(
        await b.settle('w1', [{ id: fromActive, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 5),
        ['lost'],
        'the worker that held it before the cancel cannot settle the new attempt',
      );
      assertFields(
        (await getRun(b, fromActive)).history[0],
        { attempt: 1, worker: 'w1', outcome: 'cancelled' },
        'the cancelled attempt is kept',
      );
    });

    test('a run that is neither failed nor cancelled: not_failed with its state, unchanged', async () => {
      const b = await open();
      const t0 = Date.now();
      const active = await enqueueOne(b, t0);
      const succeeded = await enqueueOne(b, t0);
      await reserveAll(b, 'w1', t0);
      await b.settle('w1', [{ id: succeeded, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0);
      const queued = await enqueueOne(b, t0);
      const scheduled = await enqueueOne(b, t0, { runAt: t0 + 1000 });
      const cases: [string, RunState][] = [
        [queued, 'queued'],
        [scheduled, 'scheduled'],
        [active, 'active'],
        [succeeded, 'succeeded'],
      ];
      for (const [id, state] of cases) {
        const before = await getRun(b, id);
        assert.deepStrictEqual(await b.retry(id, t0 + 1), { outcome: 'not_failed', state }, `retry of a ${state} run`);
        assert.deepStrictEqual(await getRun(b, id), before, `the ${state} run is unchanged`);
      }
    });

    test('an unknown or malformed id: not_found', async () => {
      const b = await open();
      const t0 = Date.now();
      for (const id of [newRunId(Q), 'nope', '', `${Q}.${'!'.repeat(26)}`]) {
        assert.deepStrictEqual(await b.retry(id, t0), { outcome: 'not_found' }, `retry(${JSON.stringify(id)})`);
      }
    });
  });
}
