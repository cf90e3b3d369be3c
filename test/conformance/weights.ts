/**
 * The broker conformance suite, section: weighted fairness (`FlowSpec.weight`,
 * docs/flow-control.md): a key of weight w is served w runs in a row per turn of its group's
 * ring. See `suite.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import type { Broker, FlowSpec, Reservation } from '../../src/broker/types.ts';
import { type ConformanceContext, newRun, Q, RETAIN } from './context.ts';

const GROUP = 'conformance.weighted';

async function enqueueKeyed(b: Broker, now: number, key: string, n: number, weight?: number) {
  const flow: FlowSpec = { group: GROUP, key, ...(weight !== undefined && { weight }) };
  await b.enqueue(
    Array.from({ length: n }, (_, i) => ({ ...newRun(Q, now), input: JSON.stringify({ key, i }), flow })),
    now,
  );
}

const keyOf = (r: Reservation) => (JSON.parse(r.input) as { key: string }).key;

export function weightsConformance(c: ConformanceContext): void {
  const { open, test, reserveAll } = c;
  describe('flow control: weighted fairness', () => {
    test('a key of weight 3 is served 3 runs per turn of a key of weight 1, in one call and across calls', async () => {
      const b = await open();
      const t0 = Date.now();
      await enqueueKeyed(b, t0, 'big', 20, 3);
      await enqueueKeyed(b, t0, 'small', 20);
      const one = await reserveAll(b, 'w1', t0, { max: 8 });
      assert.deepStrictEqual(one.runs.map(keyOf), ['big', 'big', 'big', 'small', 'big', 'big', 'big', 'small']);
      // Across calls of one run each: the same rhythm (the streak is kept with the key).
      const order: string[] = [];
      for (let i = 0; i < 8; i++) {
        const r = await reserveAll(b, 'w1', t0 + 1 + i, { max: 1 });
        order.push(...r.runs.map(keyOf));
        await b.settle(
          'w1',
          r.runs.map((x) => ({ id: x.id, attempt: x.attempt, outcome: 'succeeded' as const, result: null, retentionMs: RETAIN })),
          t0 + 1 + i,
        );
      }
      assert.deepStrictEqual(order, ['big', 'big', 'big', 'small', 'big', 'big', 'big', 'small']);
    });

    test('keys without a weight are plain round robin', async () => {
      const b = await open();
      const t0 = Date.now();
      await enqueueKeyed(b, t0, 'a', 5);
      await enqueueKeyed(b, t0, 'b', 5, 1);
      const r = await reserveAll(b, 'w1', t0, { max: 6 });
      assert.deepStrictEqual(r.runs.map(keyOf), ['a', 'b', 'a', 'b', 'a', 'b']);
    });
  });
}
