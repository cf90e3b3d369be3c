// A task's `limits` (docs/flow-control.md): checked at definition, carried by each run as its flow
// spec (group, key, limits), and enforced for a worker of many slots on both brokers.
// (The broker side, every path that frees a slot: test/conformance/limits.ts.)
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { z } from 'zod';
import { ConfigError, type Errand } from '../../src/index.ts';
import { setups } from '../fixtures/brokers.ts';
import { waitFor } from '../helpers.ts';

const input = z.object({ tenant: z.string(), n: z.number() });

describe('task limits: definition', () => {
  const make = setups('errand-limits')[0]!;
  const app = make().app();
  after(() => app.close());

  it('refuses bad limits, naming the task and the field', () => {
    const bad: [unknown, RegExp][] = [
      [{ concurrency: 2 }, /limits\.concurrency, limits\.overrides and limits\.rate are per key: give limits\.key/],
      [{ key: (i: { tenant: string }) => i.tenant }, /limits needs concurrency or rate/],
      [{ key: () => 'x', concurrency: 0 }, /limits\.concurrency must be a positive integer, got 0/],
      [{ global: 1.5 }, /limits\.global must be a positive integer, got 1\.5/],
      [{ key: () => 'x', overrides: { a: -1 } }, /limits\.overrides\["a"\] must be a positive integer/],
      [
        { key: () => 'x', overrides: { a: { rate: { limit: 0, period: 1 } } } },
        /limits\.overrides\["a"\]\.rate\.limit must be a positive integer/,
      ],
      [
        { key: () => 'x', overrides: { a: { burst: 2 } } },
        /limits\.overrides\["a"\]: "burst" is not a key limit \(known: concurrency, rate, weight\)/,
      ],
      [{ key: () => 'x', overrides: { a: 'many' } }, /limits\.overrides\["a"\] must be a positive integer or \{ concurrency\?, rate\? \}/],
      [{ global: 2, burst: 5 }, /limits: "burst" is not a limit \(known: /],
      [{ globalRate: { limit: 0, period: 1000 } }, /limits\.globalRate\.limit must be a positive integer, got 0/],
      [{ globalRate: { limit: 5, period: 1.5 } }, /limits\.globalRate\.period must be a positive integer of ms/],
      [{ key: () => 'x', rate: { limit: 5, period: 1000, burst: 0 } }, /limits\.rate\.burst must be a positive integer, got 0/],
      [
        { key: () => 'x', rate: { limit: 5, per: 1000 } },
        /limits\.rate: "per" is not a rate field \(did you mean "period"\? known: limit, period, burst\)/,
      ],
      [{ rate: { limit: 5, period: 1000 } }, /are per key: give limits\.key too/],
      [{ key: 'tenant', concurrency: 2 }, /limits\.key must be a function/],
      ['5', /limits must be an object/],
    ];
    for (const [limits, message] of bad) {
      assert.throws(
        () => app.task(`bad_${String(Math.random()).slice(2)}`, { input, limits: limits as never }, () => 1),
        (err: unknown) => err instanceof ConfigError && message.test(err.message) && /Task "bad_/.test(err.message),
        JSON.stringify(limits),
      );
    }
  });

  it('each run carries its group, key and limits; overrides replace the per-key limit for their keys', () => {
    const t = app.task(
      'sync_tenant',
      { input, limits: { key: (i) => (i.tenant === 'none' ? undefined : i.tenant), concurrency: 2, overrides: { big: 5 }, global: 10 } },
      () => 1,
    );
    assert.deepStrictEqual(t.prepare({ tenant: 'a', n: 1 }).flow, { group: 'sync_tenant', key: 'a', concurrency: 2, groupConcurrency: 10 });
    assert.deepStrictEqual(t.prepare({ tenant: 'big', n: 1 }).flow, {
      group: 'sync_tenant',
      key: 'big',
      concurrency: 5,
      groupConcurrency: 10,
    });
    assert.deepStrictEqual(t.prepare({ tenant: 'none', n: 1 }).flow, { group: 'sync_tenant', key: '', groupConcurrency: 10 });
    const g = app.task('global_only', { input, limits: { global: 3 } }, () => 1);
    assert.deepStrictEqual(g.prepare({ tenant: 'a', n: 1 }).flow, { group: 'global_only', key: '', groupConcurrency: 3 });
    const rated = app.task(
      'rated',
      { input, limits: { key: (i) => i.tenant, rate: { limit: 4, period: 1000 }, globalRate: { limit: 10, period: 60_000, burst: 2 } } },
      () => 1,
    );
    assert.deepStrictEqual(rated.prepare({ tenant: 'a', n: 1 }).flow, {
      group: 'rated',
      key: 'a',
      rate: { interval: 250, burst: 4 },
      groupRate: { interval: 6000, burst: 2 },
    });
    const mixed = app.task(
      'per_domain',
      {
        input,
        limits: {
          key: (i) => i.tenant,
          concurrency: 2,
          rate: { limit: 10, period: 1000 },
          overrides: { 'gmail.com': { rate: { limit: 100, period: 1000, burst: 20 } }, 'tiny.org': { concurrency: 1 } },
        },
      },
      () => 1,
    );
    assert.deepStrictEqual(mixed.prepare({ tenant: 'gmail.com', n: 1 }).flow, {
      group: 'per_domain',
      key: 'gmail.com',
      concurrency: 2,
      rate: { interval: 10, burst: 20 },
    });
    assert.deepStrictEqual(mixed.prepare({ tenant: 'tiny.org', n: 1 }).flow, {
      group: 'per_domain',
      key: 'tiny.org',
      concurrency: 1,
      rate: { interval: 100, burst: 10 },
    });
    const plain = app.task('plain', { input }, () => 1);
    assert.equal(plain.prepare({ tenant: 'a', n: 1 }).flow, undefined);
  });

  it('a key() that returns something other than a string of 1 to 256 characters is refused at enqueue', () => {
    const t = app.task('bad_key', { input, limits: { key: (i) => (i.n === 1 ? '' : 'x'.repeat(257)), concurrency: 1 } }, () => 1);
    assert.throws(() => t.prepare({ tenant: 'a', n: 1 }), /limits\.key\(\) must return a string of 1 to 256 characters/);
    assert.throws(() => t.prepare({ tenant: 'a', n: 2 }), /limits\.key\(\) must return a string of 1 to 256 characters/);
  });
});

for (const make of setups('errand-limits')) {
  const setup = make();
  describe(`task limits enforced for a worker of 20 slots on ${setup.name}`, () => {
    let app: Errand;
    after(async () => {
      await app?.close();
      await setup.cleanup();
    });

    it('never more than the per-key and global limits active; every run succeeds', async () => {
      app = setup.app();
      const active = new Map<string, number>();
      const peak = new Map<string, number>();
      let total = 0;
      let peakTotal = 0;
      const t = app.task(
        'limited',
        { input, queue: 'limits', limits: { key: (i) => i.tenant, concurrency: 2, overrides: { big: 3 }, global: 7 } },
        async ({ tenant }) => {
          active.set(tenant, (active.get(tenant) ?? 0) + 1);
          total++;
          peak.set(tenant, Math.max(peak.get(tenant) ?? 0, active.get(tenant) ?? 0));
          peakTotal = Math.max(peakTotal, total);
          await new Promise((r) => setTimeout(r, 5));
          active.set(tenant, (active.get(tenant) ?? 0) - 1);
          total--;
          return tenant;
        },
      );
      const tenants = ['big', 'a', 'b', 'c', 'd'];
      const handles = await t.enqueueMany(
        Array.from({ length: 100 }, (_, n) => ({ input: { tenant: tenants[n % tenants.length] as string, n } })),
      );
      const worker = await app.worker({ queues: ['limits'], concurrency: 20 }).start();
      try {
        await waitFor(async () => (await app.broker().then((b) => b.counts(['limits']))).limits?.succeeded === 100, {
          timeoutMs: 60_000,
          message: 'all 100 runs to succeed',
        });
      } finally {
        await worker.stop();
      }
      assert.equal(handles.length, 100);
      for (const [tenant, n] of peak) assert.ok(n <= (tenant === 'big' ? 3 : 2), `tenant ${tenant} peaked at ${n} active runs`);
      assert.ok(peakTotal <= 7, `the task peaked at ${peakTotal} active runs (global limit 7)`);
      assert.equal(peakTotal, 7, 'the global limit was reached (the test exercised it)');
    });

    it('rate-limited runs all run: an idle worker sleeps until the key may start again, without an enqueue to wake it', async () => {
      const started: string[] = [];
      const t = app.task(
        'rated',
        { input, queue: 'rated', limits: { key: (i) => i.tenant, rate: { limit: 2, period: 100 } } },
        async ({ tenant }) => {
          started.push(tenant);
          return tenant;
        },
      );
      await t.enqueueMany(Array.from({ length: 12 }, (_, n) => ({ input: { tenant: n % 2 ? 'a' : 'b', n } })));
      const worker = await app.worker({ queues: ['rated'], concurrency: 10 }).start();
      try {
        await waitFor(async () => (await app.broker().then((b) => b.counts(['rated']))).rated?.succeeded === 12, {
          timeoutMs: 60_000,
          message: 'all 12 runs to succeed',
        });
      } finally {
        await worker.stop();
      }
      assert.equal(started.length, 12);
    });
  });
}
