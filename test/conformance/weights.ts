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

async function enqueueKeyed(b: Broker, now: number, key: string, n: number, weight?: number, concurrency?: number) {
  const flow: FlowSpec = { group: GROUP, key, ...(weight !== undefined && { weight }), ...(concurrency !== undefined && { concurrency }) };
  await b.enqueue(
    Array.from({ length: n }, (_, i) => ({ ...newRun(Q, now), input: JSON.stringify({ key, i }), flow })),
    now,
  );
}

const keyOf = (r: Reservation) => (JSON.parse(r.input) as { key: string }).key;
/** `key:i`: the key and its run's place in the key's queue. */
const runOf = (r: Reservation) => {
  const { key, i } = JSON.parse(r.input) as { key: string; i: number };
  return `${key}:${i}`;
};
const succeeded = (runs: Reservation[]) =>
  runs.map((x) => ({ id: x.id, attempt: x.attempt, outcome: 'succeeded' as const, result: null, retentionMs: RETAIN }));

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

    test('several weighted keys share a call, each FIFO, and a streak cut by the call goes on at the next', async () => {
      const b = await open();
      const t0 = Date.now();
      await enqueueKeyed(b, t0, 'a', 10, 3);
      await enqueueKeyed(b, t0, 'b', 10, 2);
      await enqueueKeyed(b, t0, 'c', 10);
      // The rhythm a a a b b c, whatever the calls' sizes: b's streak is cut after one run by the
      // first call, a's after two by the second.
      const got: string[][] = [];
      for (const [i, max] of [4, 6, 5, 3].entries()) got.push((await reserveAll(b, 'w1', t0 + i, { max })).runs.map(runOf));
      assert.deepStrictEqual(got, [
        ['a:0', 'a:1', 'a:2', 'b:0'],
        ['b:1', 'c:0', 'a:3', 'a:4', 'a:5', 'b:2'],
        ['b:3', 'c:1', 'a:6', 'a:7', 'a:8'],
        ['b:4', 'b:5', 'c:2'],
      ]);
    });

    /**
     * Key a (weight 3, limit 2) and key b, ten runs each; one call of five: a's two runs (its limit,
     * two of its three in a row: it leaves the ring), then b alone. Returns that call's runs.
     */
    async function weightedAtLimit(b: Broker, t0: number) {
      await enqueueKeyed(b, t0, 'a', 10, 3, 2);
      await enqueueKeyed(b, t0, 'b', 10);
      const one = await reserveAll(b, 'w1', t0, { max: 5 });
      assert.deepStrictEqual(one.runs.map(runOf), ['a:0', 'a:1', 'b:0', 'b:1', 'b:2']);
      return one;
    }

    test('a weighted key at its concurrency limit leaves the ring mid-streak, the keys after it served in the same call', async () => {
      const b = await open();
      const t0 = Date.now();
      const one = await weightedAtLimit(b, t0);
      await b.settle('w1', succeeded(one.runs.filter((r) => runOf(r) === 'a:0')), t0 + 1);
      // One slot of a free: one run of a (its next), the rest b's. (Where a comes back in the ring
      // is the next test's: here only what the call takes.)
      const two = await reserveAll(b, 'w1', t0 + 2, { max: 3 });
      assert.deepStrictEqual(two.runs.map(runOf).sort(), ['a:2', 'b:3', 'b:4']);
    });

    test("a weighted key's rate cuts its streak, the keys after it served in the same call", async () => {
      const b = await open();
      const t0 = Date.now();
      await b.enqueue(
        Array.from({ length: 10 }, (_, i) => ({
          ...newRun(Q, t0),
          input: JSON.stringify({ key: 'a', i }),
          flow: { group: GROUP, key: 'a', weight: 3, rate: { interval: 60_000, burst: 2 } },
        })),
        t0,
      );
      await enqueueKeyed(b, t0, 'b', 10, 2);
      await enqueueKeyed(b, t0, 'c', 10);
      // a: two starts (its burst), then it waits for its rate; b and c go on in their rhythm.
      const r = await reserveAll(b, 'w1', t0, { max: 10 });
      assert.deepStrictEqual(r.runs.map(runOf), ['a:0', 'a:1', 'b:0', 'b:1', 'c:0', 'b:2', 'b:3', 'c:1', 'b:4', 'b:5']);
    });

    test('a weighted key back from its concurrency limit joins the ring at the back with a fresh turn', async () => {
      const b = await open();
      const t0 = Date.now();
      const one = await weightedAtLimit(b, t0);
      // Both of a's slots free: a comes back behind b, its turn ended when it left: a fresh count of
      // three runs in a row, of which its limit allows two.
      await b.settle('w1', succeeded(one.runs.filter((r) => keyOf(r) === 'a')), t0 + 1);
      const two = await reserveAll(b, 'w1', t0 + 2, { max: 4 });
      assert.deepStrictEqual(two.runs.map(runOf), ['b:3', 'a:2', 'a:3', 'b:4']);
    });

    test('a weighted key that left the ring at its limit mid-turn does not finish that turn when it comes back', async () => {
      const b = await open();
      const t0 = Date.now();
      await enqueueKeyed(b, t0, 'a', 10, 3, 3);
      await enqueueKeyed(b, t0, 'b', 10);
      // a: two runs in a row (the call's slots), keeping its place; then its third, at its limit.
      const one = await reserveAll(b, 'w1', t0, { max: 2 });
      assert.deepStrictEqual(one.runs.map(runOf), ['a:0', 'a:1']);
      const two = await reserveAll(b, 'w1', t0 + 1, { max: 3 });
      assert.deepStrictEqual(two.runs.map(runOf), ['a:2', 'b:0', 'b:1']);
      // Its slots free: it comes back behind b with a fresh turn of three runs in a row.
      await b.settle('w1', succeeded([...one.runs, ...two.runs.filter((r) => keyOf(r) === 'a')]), t0 + 2);
      const three = await reserveAll(b, 'w1', t0 + 3, { max: 5 });
      assert.deepStrictEqual(three.runs.map(runOf), ['b:2', 'a:3', 'a:4', 'a:5', 'b:3']);
    });

    test('a weighted key held by its rate mid-turn comes back at the back of the ring with a fresh turn', async () => {
      const b = await open();
      const t0 = Date.now();
      const rate = { interval: 60_000, burst: 2 };
      await b.enqueue(
        Array.from({ length: 10 }, (_, i) => ({
          ...newRun(Q, t0),
          input: JSON.stringify({ key: 'a', i }),
          flow: { group: GROUP, key: 'a', weight: 3, rate },
        })),
        t0,
      );
      await enqueueKeyed(b, t0, 'b', 10);
      await enqueueKeyed(b, t0, 'c', 10);
      const one = await reserveAll(b, 'w1', t0, { max: 4 });
      // a: two runs of its three (its burst), then it waits for its rate.
      assert.deepStrictEqual(one.runs.map(runOf), ['a:0', 'a:1', 'b:0', 'c:0']);
      await b.settle('w1', succeeded(one.runs), t0 + 1);
      // Its burst back (two intervals later): a joins the ring behind b and c, and its fresh turn of
      // three is cut by its rate after two.
      const two = await reserveAll(b, 'w1', t0 + 2 * 60_000, { max: 6 });
      assert.deepStrictEqual(two.runs.map(runOf), ['b:1', 'c:1', 'a:2', 'a:3', 'b:2', 'c:2']);
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
