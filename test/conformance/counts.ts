/** The broker conformance suite, section: `counts`: per queue, by state. See `suite.ts`. */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import type { QueueCounts } from '../../src/broker/types.ts';
import { type ConformanceContext, RETAIN, ZERO_COUNTS, newRun, ids, errorText } from './context.ts';

export function countConformance(c: ConformanceContext): void {
  const { open, test, reserveAll, enqueueOne } = c;
  describe('counts', () => {
    test('per queue, by state', async () => {
      const b = await open();
      const t0 = Date.now();
      const [a, bb, c, e] = [newRun('q1', t0), newRun('q1', t0), newRun('q1', t0), newRun('q1', t0)];
      await b.enqueue([a, bb, c, e], t0);
      await enqueueOne(b, t0, { runAt: t0 + 10_000 }, 'q1');
      const got = await reserveAll(b, 'w1', t0, { queues: ['q1'], max: 3 });
      assert.deepStrictEqual(ids(got.runs), [a.id, bb.id, c.id]);
      await b.settle(
        'w1',
        [
          { id: a.id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN },
          { id: bb.id, attempt: 1, outcome: 'failed', error: errorText('x'), retentionMs: RETAIN },
        ],
        t0 + 1,
      );
      await b.cancel(e.id, t0 + 2);
      await enqueueOne(b, t0, {}, 'q1');
      await b.enqueue([newRun('q2', t0), newRun('q2', t0)], t0);

      const expected: Record<string, QueueCounts> = {
        q1: { waiting: 0, queued: 1, scheduled: 1, active: 1, succeeded: 1, failed: 1, cancelled: 1 },
        q2: { ...ZERO_COUNTS, queued: 2 },
      };
      assert.deepStrictEqual(await b.counts(['q1', 'q2']), expected);
      assert.deepStrictEqual(await b.counts(['q2']), { q2: expected.q2 }, 'only the requested queues');
      assert.deepStrictEqual(
        await b.counts(['q1', 'no-such-queue']),
        { q1: expected.q1, 'no-such-queue': ZERO_COUNTS },
        'an unknown queue counts zero',
      );
      const all = await b.counts();
      assert.deepStrictEqual(all.q1, expected.q1, 'counts() includes q1');
      assert.deepStrictEqual(all.q2, expected.q2, 'counts() includes q2');
    });
  });
}
