// Dynamic fan-out through the public API (`ctx.spawn`, docs/workflows.md): a handler returns
// `ctx.spawn(shape)`, a real worker stores the spawn, the run waits holding no slot and finishes
// with the shape's value (typed), as a workflow step too; failures reach the spawning run; shapes
// that cannot be spawned fail the attempt with the reason.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { chain, chord, ConfigError, createErrand, dag, group, RunCancelledError } from '../../src/index.ts';
import { createTesting, runTask } from '../../src/testing/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';

const errand = createErrand({ broker: 'sqlite:/nonexistent/never-opened.db', logger: quietLogger });
const t = createTesting(errand);

/** Compile-time equality. */
type Equal<X, Y> = (<T>() => T extends X ? 1 : 2) extends <T>() => T extends Y ? 1 : 2 ? true : false;
const same = <X, Y>(_proof: Equal<X, Y>) => true;

const retention = 60_000;
const renderPage = errand.task('sp.page', { input: z.object({ page: z.number() }), retention }, ({ page }) => `<p>${page}</p>`);
const assemble = errand.task('sp.assemble', { input: z.array(z.string()), retention }, (pages) => ({
  pages: pages.length,
  html: pages.join(''),
}));
let reportStarts = 0;
const report = errand.task('sp.report', { input: z.object({ pages: z.number() }), retention }, ({ pages }, ctx) => {
  reportStarts++;
  return ctx.spawn(chord(group(...Array.from({ length: pages }, (_, page) => renderPage.step({ page }))), assemble.next()));
});
const pagesOnly = errand.task('sp.pages', { input: z.number(), retention }, (n, ctx) =>
  n > 0 ? ctx.spawn(group(renderPage.step({ page: n }), renderPage.step({ page: n + 1 }))) : ([] as string[]),
);
const length = errand.task('sp.len', { input: z.string(), retention }, (s) => s.length);
const named = errand.task('sp.named', { input: z.null(), retention }, (_input, ctx) =>
  ctx.spawn(dag({ first: renderPage.step({ page: 1 }), size: chain(renderPage.step({ page: 22 }), length.next()) })),
);
const count = errand.task('sp.count', { input: z.object({ pages: z.number(), html: z.string() }), retention }, ({ pages }) => pages);
const boom = errand.task('sp.boom', { input: z.number(), retries: { maxAttempts: 1 }, retention }, (): string => {
  throw new Error('page failed');
});
const fragile = errand.task('sp.fragile', { input: z.null(), retention }, (_input, ctx) =>
  ctx.spawn(chord(group(renderPage.step({ page: 1 }), boom.step(2)), assemble.next())),
);
const elsewhere = errand.task('sp.elsewhere', { input: z.number(), queue: 'other-queue', retention }, (n) => n);
const stray = errand.task('sp.stray', { input: z.null(), retries: { maxAttempts: 1 }, retention }, (_input, ctx) =>
  ctx.spawn(elsewhere.step(1)),
);
const otherApp = createErrand({ broker: 'sqlite:/nonexistent/never-opened.db', logger: quietLogger });
const foreign = otherApp.task('sp.foreign', { input: z.number() }, (n) => n);
const strayApp = errand.task('sp.stray-app', { input: z.null(), retries: { maxAttempts: 1 }, retention }, (_input, ctx) =>
  ctx.spawn(chain(renderPage.step({ page: 1 }), length.next(), foreign.next())),
);

describe('dynamic fan-out (ctx.spawn)', () => {
  it('a report spawns one run per page and a continuation; its result is the continuation value, typed', async () => {
    const before = reportStarts;
    const h = await report.enqueue({ pages: 3 });
    await t.drain();
    const value = await h.result();
    same<typeof value, { pages: number; html: string }>(true);
    assert.deepStrictEqual(value, { pages: 3, html: '<p>0</p><p>1</p><p>2</p>' });
    assert.equal(reportStarts - before, 1, 'the report handler ran once: the continuation is another run');
    const info = await h.info();
    assert.equal(info.state, 'succeeded');
    assert.equal(info.attempts, 1);
    assert.equal(info.history.at(-1)?.outcome, 'spawned');
    const b = await errand.broker();
    assert.equal((await b.getRun(h.id))?.workflow, h.id, 'its workflow is named by it');
    const wf = await b.getWorkflow(h.id);
    assert.equal(wf?.runs.length, 5, 'the report, three pages, the continuation');
    assert.ok(wf?.runs.every((r) => r.state === 'succeeded'));
  });

  it('a group gives a list, a dag an object; a handler may also return a plain value', async () => {
    const g = await pagesOnly.enqueue(4);
    const none = await pagesOnly.enqueue(0);
    const d = await named.enqueue(null);
    await t.drain();
    const list = await g.result();
    same<typeof list, string[]>(true);
    assert.deepStrictEqual(list, ['<p>4</p>', '<p>5</p>']);
    assert.deepStrictEqual(await none.result(), []);
    assert.deepStrictEqual(await d.result(), { first: '<p>1</p>', size: 9 });
  });

  it('a spawning step of a workflow: the next step gets the value it finished with', async () => {
    const wf = await errand.workflow(chain(report.step({ pages: 2 }), count.next()));
    await t.drain();
    assert.equal(await wf.result(), 2);
    assert.equal(await wf.state(), 'succeeded');
    assert.equal((await wf.info()).runs.length, 2 + 3, 'the spawned runs (two pages, the continuation) join the workflow');
  });

  it('a failed page cancels the continuation and the spawning run (dependency_failed)', async () => {
    const h = await fragile.enqueue(null);
    await t.drain();
    const info = await h.info();
    assert.equal(info.state, 'cancelled');
    assert.equal(info.error?.reason, 'dependency_failed');
    await assert.rejects(h.result(), RunCancelledError);
  });

  it('a step in another queue is refused when the handler spawns it: the attempt fails saying why', async () => {
    const h = await stray.enqueue(null);
    await t.drain();
    const info = await h.info();
    assert.equal(info.state, 'failed');
    assert.match(info.error?.message ?? '', /other-queue.*parent's queue/);
  });

  it("a step of another app's task is refused when the handler spawns it: the attempt fails naming it", async () => {
    const h = await strayApp.enqueue(null);
    await t.drain();
    const info = await h.info();
    assert.equal(info.state, 'failed');
    assert.match(info.error?.message ?? '', /the step of task "sp\.foreign" is not of this app/);
    assert.deepStrictEqual(await t.runs({ task: 'sp.foreign' }), [], 'nothing spawned');
  });

  it('runTask: spawn is checked, and a spawning handler is refused (it needs a broker)', async () => {
    await assert.rejects(runTask(report, { pages: 2 }), (err: Error) => err instanceof ConfigError && /createTesting/.test(err.message));
    await assert.rejects(runTask(stray, null), (err: Error) => err instanceof ConfigError && /parent's queue/.test(err.message));
  });
});
