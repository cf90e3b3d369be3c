/**
 * The BrokerInspector conformance suite, section: `flowKeys`: a queue's flow-control keys with
 * their backlog, active runs, limits and rate hold, sorted and paged by the broker. See `inspector.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ConfigError } from '../../src/core/errors.ts';
import type { FlowSpec } from '../../src/broker/types.ts';
import { type InspectorContext, newRun } from './inspector-context.ts';

const Q = 'fk';
const G = 'inspect.limited';

export function flowKeysConformance(c: InspectorContext): void {
  const { open, test, reserve } = c;
  describe('flowKeys', () => {
    test('each key: queued, active, its limits and until when its rate holds it; sorted and paged', async () => {
      const b = await open();
      const t0 = Date.now();
      assert.deepStrictEqual(await b.flowKeys(Q), { keys: [], total: 0 }, 'a queue without flow control');
      const put = async (key: string, n: number, spec: Partial<FlowSpec>) =>
        (
          await b.enqueue(
            Array.from({ length: n }, () => newRun(Q, t0, { flow: { group: G, key, ...spec } })),
            t0,
          )
        ).map((r) => r.id);
      await put('a', 5, { concurrency: 2 });
      const [bId] = await put('b', 1, { concurrency: 3 });
      await put('c', 3, { rate: { interval: 1000, burst: 1 } });
      await put('d', 2, {});
      // a: 2 start (its limit), b: 1, c: 1 (its rate then holds it), d: 2.
      const { runs } = await reserve(b, [Q], t0, 50);
      assert.equal(runs.length, 6);
      // c is met again by a reserve while over its rate: held until t0 + 1000.
      await reserve(b, [Q], t0 + 1, 50);

      const all = await b.flowKeys(Q, { sort: 'key' });
      assert.equal(all.total, 4);
      assert.deepStrictEqual(all.keys, [
        { group: G, key: 'a', queued: 3, active: 2, concurrency: 2 },
        { group: G, key: 'b', queued: 0, active: 1, concurrency: 3 },
        { group: G, key: 'c', queued: 2, active: 1, concurrency: 0, rate: { interval: 1000, burst: 1 }, waitUntil: t0 + 1000 },
        { group: G, key: 'd', queued: 0, active: 2, concurrency: 0 },
      ]);
      const byQueued = await b.flowKeys(Q, { sort: 'queued' });
      assert.deepStrictEqual(
        byQueued.keys.map((k) => k.key),
        ['a', 'c', 'b', 'd'],
        'most queued first, then by key',
      );
      const byActive = await b.flowKeys(Q, { sort: 'active' });
      assert.deepStrictEqual(
        byActive.keys.map((k) => k.key),
        ['a', 'd', 'b', 'c'],
      );
      const page = await b.flowKeys(Q, { sort: 'key', offset: 1, limit: 2 });
      assert.deepStrictEqual({ total: page.total, keys: page.keys.map((k) => k.key) }, { total: 4, keys: ['b', 'c'] });
      assert.deepStrictEqual((await b.flowKeys(Q, { offset: 10 })).keys, []);
      // A key with nothing queued or active is gone: b's one run settles.
      await b.settle('w1', [{ id: bId as string, attempt: 1, outcome: 'succeeded', result: null, retentionMs: 0 }], t0 + 2);
      assert.deepStrictEqual(
        (await b.flowKeys(Q, { sort: 'key' })).keys.map((k) => k.key),
        ['a', 'c', 'd'],
      );
      assert.deepStrictEqual(await b.flowKeys('other'), { keys: [], total: 0 });
    });

    test('a bad query is a ConfigError naming the field', async () => {
      const b = await open();
      await assert.rejects(b.flowKeys(Q, { sort: 'nope' as never }), (e: unknown) => e instanceof ConfigError && /sort/.test(e.message));
      await assert.rejects(b.flowKeys(Q, { limit: 0 }), (e: unknown) => e instanceof ConfigError && /limit/.test(e.message));
      await assert.rejects(b.flowKeys(Q, { limit: 501 }), (e: unknown) => e instanceof ConfigError && /limit/.test(e.message));
      await assert.rejects(b.flowKeys(Q, { offset: -1 }), (e: unknown) => e instanceof ConfigError && /offset/.test(e.message));
    });
  });
}
