// Workflows through the public API (src/task/workflow.ts, errand.workflow): chain, group, chord and
// dag run by a real worker on the test broker, each step's input built from the values before it;
// failure and cancel reach the workflow's state; shapes that cannot be built are refused.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { chain, chord, ConfigError, createErrand, dag, group, InputError, RunCancelledError, workflowState } from '../../src/index.ts';
import { compileSpawn } from '../../src/task/workflow.ts';
import { createTesting } from '../../src/testing/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';

const errand = createErrand({ broker: 'sqlite:/nonexistent/never-opened.db', logger: quietLogger });
const t = createTesting(errand);

const retention = 60_000;
const fetchPage = errand.task('wf.fetch', { input: z.object({ url: z.string() }), retention }, ({ url }) => ({ url, bytes: url.length }));
const total = errand.task('wf.total', { input: z.array(z.object({ url: z.string(), bytes: z.number() })), retention }, (pages) =>
  pages.reduce((n, p) => n + p.bytes, 0),
);
const double = errand.task('wf.double', { input: z.number(), retention }, (n) => n * 2);
const describeIt = errand.task('wf.describe', { input: z.number(), retention }, (n) => `total ${n}`);
const merge = errand.task(
  'wf.merge',
  { input: z.object({ left: z.number(), right: z.string() }), retention },
  ({ left, right }) => `${right}/${left}`,
);
const boom = errand.task('wf.boom', { input: z.object({}), retries: { maxAttempts: 1 }, retention }, () => {
  throw new Error('boom');
});
const limited = errand.task('wf.limited', { input: z.number(), retention, limits: { key: (n) => String(n), concurrency: 1 } }, (n) => n);
const capped = errand.task('wf.capped', { input: z.number(), retention, limits: { global: 1 } }, (n) => n + 1);
const expiring = errand.task('wf.expiring', { input: z.number(), retention, expiresIn: 60_000 }, (n) => n);
const debounced = errand.task('wf.debounced', { input: z.number(), retention, debounce: { key: String, window: 100 } }, (n) => n);
const cleanup = errand.task('wf.cleanup', { input: z.array(z.unknown()), retention }, (values) => values.length);

describe('workflows through errand.workflow', () => {
  it('a chain: each step gets the previous value; the handle gives the last one', async () => {
    const ok = await errand.workflow(chain(double.step(1), double.next(), describeIt.next()));
    assert.equal(ok.created, true);
    assert.equal(ok.runIds.length, 3);
    assert.equal((await ok.info()).runs[1]?.state, 'waiting');
    await t.drain();
    assert.equal(await ok.result(), 'total 4');
    // A value that does not fit the next step's input is a compile error (workflow-types.test.ts);
    // forced past the types, the worker refuses it when the step runs, and what follows is cancelled.
    const wf = await errand.workflow(chain(fetchPage.step({ url: 'abc' }), total.next() as never, double.next(), describeIt.next()));
    await t.drain();
    assert.equal(await wf.state(), 'failed', 'total refused a single page (invalid input): the rest were cancelled');
    const info = await wf.info();
    assert.deepStrictEqual(
      info.runs.map((r) => r.state),
      ['succeeded', 'failed', 'cancelled', 'cancelled'],
    );
  });

  it('a chord: the callback gets the list of the group, in order', async () => {
    const wf = await errand.workflow(
      chord(group(fetchPage.step({ url: 'a' }), fetchPage.step({ url: 'bbb' }), fetchPage.step({ url: 'cc' })), total.next()),
    );
    await t.drain();
    assert.equal(await wf.result(), 6);
    assert.equal(await wf.state(), 'succeeded');
    const info = await wf.info();
    assert.equal(info.runs.length, 4);
    assert.equal(info.edges.length, 3);
    assert.deepStrictEqual(info.runs[3]?.input, [
      { url: 'a', bytes: 1 },
      { url: 'bbb', bytes: 3 },
      { url: 'cc', bytes: 2 },
    ]);
  });

  it('a chain after a chord, and a group as the value', async () => {
    const wf = await errand.workflow(
      chain(group(fetchPage.step({ url: 'xy' }), fetchPage.step({ url: 'z' })), total.next(), double.next(), describeIt.next()),
    );
    await t.drain();
    assert.equal(await wf.result(), 'total 6');
    const g = await errand.workflow(group(double.step(1), double.step(2), chain(double.step(3), double.next())));
    await t.drain();
    assert.deepStrictEqual(await g.result(), [2, 4, 12]);
  });

  it('a dag: joins take named values; the handle gives every node by name', async () => {
    const wf = await errand.workflow(
      dag({
        n: double.step(5),
        pages: chord(group(fetchPage.step({ url: 'aaaa' })), total.next()),
        both: merge.join({ left: 'n', right: 'text' }),
        text: chain(double.step(1), describeIt.next()),
      }),
    );
    await t.drain();
    const r = await wf.result();
    assert.equal(r.n, 10);
    assert.equal(r.pages, 4);
    assert.equal(r.both, 'total 2/10');
    assert.equal(r.text, 'total 2');
  });

  it('failure: dependents cancelled by default, a continue step runs with null; the state says failed', async () => {
    const wf = await errand.workflow(chord(group(boom.step({}), double.step(4)), cleanup.next({ onFailure: 'continue' })));
    await t.drain();
    assert.equal(await wf.result(), 2, 'the cleanup step ran with [null, 8]');
    assert.equal(await wf.state(), 'failed');
    const cancelled = await errand.workflow(chain(boom.step({}), double.next()));
    await t.drain();
    await assert.rejects(cancelled.result(), RunCancelledError);
    const info = await cancelled.info();
    assert.equal(info.runs[1]?.state, 'cancelled');
    assert.equal(info.runs[1]?.error?.reason, 'dependency_failed');
  });

  it('cancel of a workflow cancels its runs; workflowState reads states', async () => {
    const wf = await errand.workflow(chain(double.step(1), double.next(), double.next()));
    assert.equal(await wf.cancel(), 3);
    assert.equal(await wf.state(), 'cancelled');
    assert.equal(workflowState(['succeeded', 'waiting']), 'running');
    assert.equal(workflowState(['succeeded', 'succeeded']), 'succeeded');
  });

  it("steps carry their task's limits: the key from a step's own input; a task limited in total only may take the value before it", async () => {
    const wf = await errand.workflow(chain(group(double.step(1), double.step(2)), limited.step(7), capped.next()));
    const runs = (await wf.info()).runs;
    assert.deepStrictEqual(runs[2]?.flow, { group: 'wf.limited', key: '7' }, "the key computed from the step's input at creation");
    assert.deepStrictEqual(runs[3]?.flow, { group: 'wf.capped', key: '' }, "no key: the task's own limits");
    await t.drain();
    assert.equal(await wf.result(), 8);
    // In a spawn too (the same compilation).
    const spawned = compileSpawn(chain(limited.step(3), capped.next()), Date.now(), 1024);
    assert.deepStrictEqual(
      spawned.runs.map((r) => r.flow),
      [
        { group: 'wf.limited', key: '3', concurrency: 1 },
        { group: 'wf.capped', key: '', groupConcurrency: 1 },
      ],
    );
  });

  it('refuses what cannot be built, naming why; a bad input stores nothing', async () => {
    await assert.rejects(
      errand.workflow(chain(double.next() as never)),
      (e: Error) => e instanceof ConfigError && /next\(\)/.test(e.message),
    );
    await assert.rejects(
      errand.workflow(dag({ a: double.join({ x: 'b' }) as never })),
      (e: Error) => e instanceof ConfigError && /"b"/.test(e.message),
    );
    await assert.rejects(
      errand.workflow(dag({ a: double.join({ x: 'b' }) as never, b: double.join({ y: 'a' }) as never })),
      (e: Error) => e instanceof ConfigError && /cycle/.test(e.message),
    );
    // A task whose limits key comes from its input cannot take its input from the steps before it:
    // the key of a step is computed when the workflow is created (docs/flow-control.md).
    for (const shape of [chain(double.step(1), limited.next()), dag({ a: double.step(1), b: limited.join({ n: 'a' }) as never })]) {
      await assert.rejects(
        errand.workflow(shape),
        (e: Error) => e instanceof ConfigError && /"wf\.limited" computes its limits key from its input/.test(e.message),
      );
    }
    // Nor, yet, a task with a deadline to start, or one that throttles or debounces.
    for (const shape of [chain(expiring.step(1), double.next()), chain(double.step(1), expiring.next())]) {
      await assert.rejects(
        errand.workflow(shape),
        (e: Error) => e instanceof ConfigError && /"wf\.expiring" has a deadline to start/.test(e.message),
      );
    }
    for (const shape of [chain(debounced.step(1), double.next()), chain(double.step(1), debounced.next())]) {
      await assert.rejects(
        errand.workflow(shape),
        (e: Error) => e instanceof ConfigError && /"wf\.debounced" throttles or debounces/.test(e.message),
      );
    }
    const before = (await t.broker.counts()).default;
    await assert.rejects(errand.workflow(chord(group(fetchPage.step({ url: 1 } as never)), total.next())), InputError);
    assert.deepStrictEqual((await t.broker.counts()).default, before, 'nothing stored');
  });

  it("refuses a step of another app's task in every shape, naming it; nothing is stored", async () => {
    // Its run would be stored on this app's broker, where this app's workers fail it as an unknown
    // task; a task of the same name on both apps is no better (the other app's input, this one's handler).
    const other = createErrand({ broker: 'sqlite:/nonexistent/never-opened.db', logger: quietLogger });
    const foreign = other.task('wf.foreign', { input: z.number() }, (n) => n);
    const twin = other.task('wf.merge', { input: z.object({ left: z.number(), right: z.string() }) }, ({ right }) => right);
    const before = (await t.broker.counts()).default;
    const shapes: [Parameters<typeof errand.workflow>[0], RegExp][] = [
      [chain(foreign.step(1)), /the step of task "wf\.foreign" is not of this app/],
      [chain(double.step(1), foreign.next()), /the step of task "wf\.foreign" is not of this app/],
      [group(double.step(1), foreign.step(2)), /"wf\.foreign" is not of this app/],
      [chord(group(double.step(1)), foreign.next() as never), /"wf\.foreign" is not of this app/],
      [dag({ a: double.step(1), b: chain(double.step(2), foreign.next()) }), /"wf\.foreign" \(dag node "b"\) is not of this app/],
      [
        dag({ n: double.step(5), s: describeIt.step(1), m: twin.join({ left: 'n', right: 's' }) }),
        /"wf\.merge" \(dag node "m"\) is not of this app/,
      ],
    ];
    for (const [shape, message] of shapes) {
      await assert.rejects(
        errand.workflow(shape),
        (e: Error) => e instanceof ConfigError && message.test(e.message) && /defined on this app with errand\.task\(\)/.test(e.message),
      );
    }
    assert.deepStrictEqual((await t.broker.counts()).default, before, 'nothing stored');
  });

  it('refuses bad options of next() and join() where they are given, naming the task and the allowed values', () => {
    assert.throws(
      () => double.next({ onFailure: 'explode' } as never),
      (e: Error) =>
        e instanceof ConfigError &&
        e.message === 'Task "wf.double": next(): onFailure must be one of "cancel", "skip", "continue", got "explode"',
    );
    assert.throws(
      () => merge.join({ left: 'a', right: 'b' }, { onFailure: 'explode' } as never),
      (e: Error) => e instanceof ConfigError && /^Task "wf\.merge": join\(\): onFailure must be one of .*got "explode"$/.test(e.message),
    );
    assert.throws(
      () => double.next({ onFailur: 'skip' } as never),
      (e: Error) =>
        e instanceof ConfigError && /next\(\): "onFailur" is not an option of a step \(known: queue, priority, onFailure\)/.test(e.message),
    );
    assert.throws(
      () => double.next({ priority: '5' } as never),
      (e: Error) => e instanceof ConfigError && /next\(\): priority must be an integer from -1000 to 1000, got "5"/.test(e.message),
    );
    assert.throws(
      () => double.next({ priority: 5000 }),
      (e: Error) => e instanceof ConfigError && /got 5000/.test(e.message),
    );
    assert.throws(
      () => double.next({ queue: 'a b' }),
      (e: Error) => e instanceof ConfigError && /^Task "wf\.double": next\(\): queue name "a b" is invalid/.test(e.message),
    );
    assert.throws(
      () => double.next(null as never),
      (e: Error) => e instanceof ConfigError && /options must be an object.*got null/.test(e.message),
    );
    assert.throws(
      () => merge.join({ left: 'a', right: 'a' } as never),
      (e: Error) => e instanceof ConfigError && /join\(\): left and right both name node "a"/.test(e.message),
    );
    // What is allowed still is.
    double.next({ queue: 'q', priority: 5, onFailure: 'continue' });
    merge.join({ left: 'a', right: 'b' }, { onFailure: 'skip' });
  });
});
