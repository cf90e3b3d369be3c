// `ctx.backOff(ms)` (docs/flow-control.md): a handler puts its run back without using an attempt;
// under `limits` its key (or its task) starts nothing until then. The broker side (both brokers,
// every scope): test/conformance/backoff.ts.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { z } from 'zod';
import { BackOff, type Errand, type RunEvent } from '../../src/index.ts';
import { runTask } from '../../src/testing/index.ts';
import { fromWire, toWire } from '../../src/worker/isolate-protocol.ts';
import { setups } from '../fixtures/brokers.ts';
import { waitFor } from '../helpers.ts';

const input = z.object({ tenant: z.string(), n: z.number() });

describe('ctx.backOff: the value', () => {
  const make = setups('errand-backoff')[0]!;
  const app = make().app();
  after(() => app.close());

  it('refuses a bad duration or scope, saying what it got', async () => {
    const bad: [number, object | undefined, RegExp][] = [
      [0, undefined, /backOff\(ms\): ms must be a number of milliseconds in \(0, 2592000000\] \(30 days\); got 0/],
      [-5, undefined, /got -5/],
      [Number.NaN, undefined, /got NaN/],
      [31 * 24 * 3600 * 1000, undefined, /30 days/],
      [1000, { scope: 'queue' }, /scope must be 'key' or 'task'; got "queue"/],
    ];
    for (const [ms, options, message] of bad) {
      const t = app.task(`bo_${String(Math.random()).slice(2)}`, { input }, (_i, ctx) => {
        throw ctx.backOff(ms, options as never);
      });
      await assert.rejects(runTask(t, { tenant: 'a', n: 1 }), (err: unknown) => err instanceof TypeError && message.test(err.message));
    }
  });

  it('is a BackOff with its duration and scope; it crosses to and from an isolate intact', async () => {
    const t = app.task('bo_ok', { input }, (_i, ctx) => {
      throw ctx.backOff(1500.2, { scope: 'task', reason: 'HTTP 429 from the API' });
    });
    const err = await runTask(t, { tenant: 'a', n: 1 }).catch((e: unknown) => e);
    assert.ok(err instanceof BackOff);
    assert.equal(err.ms, 1501);
    assert.equal(err.scope, 'task');
    assert.equal(err.message, 'HTTP 429 from the API');
    const back = fromWire(toWire(err));
    assert.ok(back instanceof BackOff);
    assert.deepStrictEqual([back.ms, back.scope, back.message], [1501, 'task', 'HTTP 429 from the API']);
    assert.equal(new BackOff(10).scope, 'key');
  });
});

for (const make of setups('errand-backoff')) {
  const setup = make();
  describe(`ctx.backOff with a worker on ${setup.name}`, () => {
    let app: Errand;
    after(async () => {
      await app?.close();
      await setup.cleanup();
    });

    it('the backed-off key waits (other keys go on), the run then succeeds on its first counted attempt', async () => {
      app = setup.app();
      const starts: { tenant: string; n: number }[] = [];
      let backedOff = false;
      const t = app.task(
        'call_api',
        { input, queue: 'backoff', retries: 0, limits: { key: (i) => i.tenant, concurrency: 1 } },
        async ({ tenant, n }, ctx) => {
          starts.push({ tenant, n });
          if (tenant === 'a' && n === 0 && !backedOff) {
            backedOff = true;
            throw ctx.backOff(300);
          }
          return n;
        },
      );
      const handles = await t.enqueueMany([
        { input: { tenant: 'a', n: 0 } },
        { input: { tenant: 'a', n: 1 } },
        ...Array.from({ length: 6 }, (_, i) => ({ input: { tenant: 'b', n: i + 10 } })),
      ]);
      const events: RunEvent[] = [];
      const worker = app.worker({ queues: ['backoff'], concurrency: 4 });
      worker.on('run', (e: RunEvent) => events.push(e));
      await worker.start();
      try {
        await waitFor(async () => (await app.broker().then((b) => b.counts(['backoff']))).backoff?.succeeded === 8, {
          timeoutMs: 60_000,
          message: 'all 8 runs to succeed',
        });
      } finally {
        await worker.stop();
      }
      // retries: 0 (one attempt), yet the run that backed off succeeded: the back-off used none.
      const first = await handles[0]!.info();
      assert.equal(first.state, 'succeeded');
      assert.equal(first.attempts, 1);
      assert.deepStrictEqual(
        first.history.map((h) => h.outcome),
        ['backoff', 'succeeded'],
      );
      // Key a started nothing before its back-off ended; its backed-off run went first after it.
      const aAfter = starts.filter((s) => s.tenant === 'a').slice(1);
      assert.deepStrictEqual(
        aAfter.map((s) => s.n),
        [0, 1],
      );
      // That the key started nothing before its back-off ended is the broker's guarantee, proven on
      // its clock by the conformance property (test/conformance/backoff.ts), not timed here.
      assert.equal(events.filter((e) => e.type === 'backoff').length, 1);
    });

    it('a task without limits: the run waits alone, scheduled, and does not use an attempt', async () => {
      let calls = 0;
      const t = app.task('plain_backoff', { input, queue: 'plain-backoff', retries: 0 }, async (_i, ctx) => {
        calls++;
        if (calls === 1) throw ctx.backOff(200);
        return 'done';
      });
      const h = await t.enqueue({ tenant: 'x', n: 1 });
      const worker = await app.worker({ queues: ['plain-backoff'], concurrency: 2 }).start();
      try {
        assert.equal(await h.result({ timeout: 30_000 }), 'done');
      } finally {
        await worker.stop();
      }
      const info = await h.info();
      assert.equal(info.attempts, 1);
      assert.deepStrictEqual(
        info.history.map((x) => x.outcome),
        ['backoff', 'succeeded'],
      );
    });
  });
}
