// Throttle and debounce by key (docs/flow-control.md): the task options, their errors, and what a
// worker runs on both brokers. The broker side of debounce: test/conformance/debounce.ts.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { z } from 'zod';
import { ConfigError, type Errand, InputError } from '../../src/index.ts';
import { setups } from '../fixtures/brokers.ts';
import { waitFor } from '../helpers.ts';

const input = z.object({ user: z.string(), v: z.number() });

describe('throttle and debounce: the options', () => {
  const make = setups('errand-throttle')[0]!;
  const app = make().app();
  after(() => app.close());

  it('refuses bad options at definition, naming the task and the field', () => {
    const bad: [object, RegExp][] = [
      [{ throttle: { key: 'user', window: 10 } }, /throttle\.key must be a function/],
      [{ throttle: { key: () => 'x', window: 0 } }, /throttle\.window must be a positive number of milliseconds, got 0/],
      [{ throttle: { key: () => 'x', window: 10, maxWait: 5 } }, /throttle\.maxWait is not a throttle option/],
      [{ debounce: { key: () => 'x', window: 100, maxWait: 50 } }, /debounce\.maxWait \(50\) must be at least its window \(100\)/],
      [
        { debounce: { key: () => 'x', window: 100 }, throttle: { key: () => 'x', window: 100 } },
        /throttle and debounce cannot be used together/,
      ],
      [{ debounce: { key: () => 'x', window: 100 }, idempotencyKey: () => 'k' }, /debounce and idempotencyKey cannot be used together/],
    ];
    for (const [options, message] of bad) {
      assert.throws(
        () => app.task(`bad_${String(Math.random()).slice(2)}`, { input, ...options } as never, () => 1),
        (err: unknown) => err instanceof ConfigError && message.test(err.message) && /Task "bad_/.test(err.message),
        String(message),
      );
    }
  });

  it('prepares the runs: a throttle is an idempotency key for the window; a debounce starts at the window end', () => {
    const now = Date.UTC(2030, 0, 1);
    const t = app.task('throttled', { input, throttle: { key: (i) => i.user, window: 60_000 } }, () => 1);
    const run = t.prepare({ user: 'ann', v: 1 }, {}, now);
    assert.deepStrictEqual([run.idempotencyKey, run.idempotencyTtl], ['throttle:ann', 60_000]);
    assert.throws(() => t.prepare({ user: 'ann', v: 1 }, { idempotencyKey: 'x' }, now), InputError);
    const d = app.task('debounced', { input, debounce: { key: (i) => i.user, window: 1000, maxWait: 5000 } }, () => 1);
    const dr = d.prepare({ user: 'ann', v: 1 }, {}, now);
    assert.deepStrictEqual([dr.runAt, dr.debounce], [now + 1000, { key: 'ann', maxAt: now + 5000 }]);
    assert.throws(() => d.prepare({ user: 'ann', v: 1 }, { delay: 5 }, now), /delay: is not taken: task "debounced" debounces its runs/);
    const none = app.task('debounced_maybe', { input, debounce: { key: () => undefined, window: 1000 } }, () => 1);
    assert.equal(none.prepare({ user: 'ann', v: 1 }, {}, now).debounce, undefined, 'no key: not debounced');
    const badKey = app.task('debounced_bad', { input, debounce: { key: () => '', window: 1000 } }, () => 1);
    assert.throws(() => badKey.prepare({ user: 'ann', v: 1 }, {}, now), /debounce\.key\(\) must return a string of 1 to 256 characters/);
  });
});

for (const make of setups('errand-throttle')) {
  const setup = make();
  describe(`throttle and debounce with a worker on ${setup.name}`, () => {
    let app: Errand;
    after(async () => {
      await app?.close();
      await setup.cleanup();
    });

    it('throttle: enqueues within the window return the first run; debounce: one run per burst, with the last input', async () => {
      app = setup.app();
      const seen: string[] = [];
      const notify = app.task('notify', { input, queue: 'timing', throttle: { key: (i) => i.user, window: 60_000 } }, ({ user, v }) => {
        seen.push(`notify ${user} ${v}`);
      });
      const reindex = app.task('reindex', { input, queue: 'timing', debounce: { key: (i) => i.user, window: 300 } }, ({ user, v }) => {
        seen.push(`reindex ${user} ${v}`);
      });
      const n1 = await notify.enqueue({ user: 'ann', v: 1 });
      const n2 = await notify.enqueue({ user: 'ann', v: 2 });
      const n3 = await notify.enqueue({ user: 'bob', v: 3 });
      assert.equal(n2.id, n1.id, 'the same key within the window: the first run');
      assert.notEqual(n3.id, n1.id);
      const handles = [];
      for (let v = 1; v <= 5; v++) handles.push(await reindex.enqueue({ user: 'ann', v }));
      assert.equal(new Set(handles.map((h) => h.id)).size, 1, 'one run for the burst');
      const worker = await app.worker({ queues: ['timing'], concurrency: 4 }).start();
      try {
        await waitFor(async () => (await app.broker().then((b) => b.counts(['timing']))).timing?.succeeded === 3, {
          timeoutMs: 30_000,
          message: 'the 3 runs to succeed',
        });
      } finally {
        await worker.stop();
      }
      assert.deepStrictEqual(seen.sort(), ['notify ann 1', 'notify bob 3', 'reindex ann 5']);
    });
  });
}
