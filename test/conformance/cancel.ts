/**
 * The broker conformance suite, section: `cancel`: queued, scheduled, active and finished runs;
 * unknown ids. See `suite.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { newRunId } from '../../src/core/ids.ts';
import { waitFor } from '../helpers.ts';
import { type ConformanceContext, NOTIFY_TIMEOUT_MS, Q, RETAIN, ids, assertFields, errorText } from './context.ts';

export function cancelConformance(c: ConformanceContext): void {
  const { open, test, getRun, reserveAll, reserveOne, enqueueOne } = c;
  describe('cancel', () => {
    test('a queued run: cancelled, never reserved', async () => {
      const b = await open();
      const t0 = Date.now();
      const id = await enqueueOne(b, t0);
      const keep = await enqueueOne(b, t0);
      assert.deepStrictEqual(await b.cancel(id, t0 + 5), { outcome: 'cancelled', previous: 'queued' });
      assertFields(await getRun(b, id), { state: 'cancelled', finishedAt: t0 + 5 }, 'run');
      const { runs } = await reserveAll(b, 'w1', t0 + 10);
      assert.deepStrictEqual(ids(runs), [keep], 'only the other run is reserved');
    });

    test('a scheduled run: cancelled, never reserved, even past its runAt', async () => {
      const b = await open();
      const t0 = Date.now();
      const id = await enqueueOne(b, t0, { runAt: t0 + 1000 });
      assert.deepStrictEqual(await b.cancel(id, t0 + 5), { outcome: 'cancelled', previous: 'scheduled' });
      const { runs } = await reserveAll(b, 'w1', t0 + 5000);
      assert.deepStrictEqual(runs, []);
      assertFields(await getRun(b, id), { state: 'cancelled' }, 'run');
    });

    test('an active run: cancelled; its worker renews to learn it, settles lost, onCancel fires; never recovered', async () => {
      const b = await open();
      const t0 = Date.now();
      const seen: string[] = [];
      const stop = b.onCancel((cancelled) => seen.push(...cancelled));
      try {
        const id = await enqueueOne(b, t0);
        await reserveOne(b, 'w1', t0, 1000);
        assert.deepStrictEqual(await b.cancel(id, t0 + 5), { outcome: 'cancelled', previous: 'active' });
        const rec = await getRun(b, id);
        assertFields(rec, { state: 'cancelled', finishedAt: t0 + 5 }, 'run');
        assertFields(rec.history.at(-1), { attempt: 1, worker: 'w1', outcome: 'cancelled' }, 'history of the cancelled attempt');
        await waitFor(() => seen.includes(id), { timeoutMs: NOTIFY_TIMEOUT_MS, message: `onCancel listener called with ${id}` });

        assert.deepStrictEqual(await b.renew('w1', [{ id, attempt: 1 }], 1000, t0 + 10), [id], 'renew reports the cancelled run');
        assert.equal(await b.progress('w1', { id, attempt: 1 }, '50'), 'lost');
        const before = await getRun(b, id);
        assert.deepStrictEqual(
          await b.settle('w1', [{ id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 20),
          ['lost'],
        );
        assert.deepStrictEqual(await getRun(b, id), before, 'the late settlement changes nothing');

        const later = await reserveAll(b, 'w2', t0 + 10_000);
        assert.deepStrictEqual(later.runs, [], 'the expired lease of a cancelled run is not recovered');
        assertFields(await getRun(b, id), { state: 'cancelled', leaseLosses: 0 }, 'run after the lease time');
      } finally {
        stop();
      }
    });

    test('a finished run: outcome finished with its state', async () => {
      const b = await open();
      const t0 = Date.now();
      const ok = await enqueueOne(b, t0);
      const ko = await enqueueOne(b, t0);
      const cancelled = await enqueueOne(b, t0);
      await reserveAll(b, 'w1', t0, { max: 2 });
      await b.settle(
        'w1',
        [
          { id: ok, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN },
          { id: ko, attempt: 1, outcome: 'failed', error: errorText('x'), retentionMs: RETAIN },
        ],
        t0 + 1,
      );
      await b.cancel(cancelled, t0 + 2);
      const okBefore = await getRun(b, ok);
      assert.deepStrictEqual(await b.cancel(ok, t0 + 3), { outcome: 'finished', state: 'succeeded' });
      assert.deepStrictEqual(await b.cancel(ko, t0 + 3), { outcome: 'finished', state: 'failed' });
      assert.deepStrictEqual(await b.cancel(cancelled, t0 + 3), { outcome: 'finished', state: 'cancelled' });
      assert.deepStrictEqual(await getRun(b, ok), okBefore, 'cancelling a finished run changes nothing');
    });

    test('an unknown or malformed id: not_found', async () => {
      const b = await open();
      const t0 = Date.now();
      for (const id of [newRunId(Q), newRunId('never-used'), 'nope', '', 'a.b', `${Q}.${'!'.repeat(26)}`, `{${Q}}.${'0'.repeat(26)}`]) {
        assert.deepStrictEqual(await b.cancel(id, t0), { outcome: 'not_found' }, `cancel(${JSON.stringify(id)})`);
      }
    });
  });
}
