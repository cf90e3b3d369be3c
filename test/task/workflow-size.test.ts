// The size of a workflow (docs/workflows.md, "Limits"), on SQLite and Redis: the largest accepted
// (a chord of 9,999 parts and its callback: 10,000 steps; on Redis created in calls of at most 500
// runs, every root held until the last) finishes with every part run once and the callback given
// every value, in order; steps with inputs near maxInputBytes (more bytes than one Redis call takes)
// likewise; one step over, too many dependencies or too many bytes of inputs is refused at the call
// (`ConfigError` naming the size and the limit) and nothing is written; a spawn of such a shape too.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { z } from 'zod';
import { MAX_WORKFLOW_BYTES, MAX_WORKFLOW_DEPENDENCIES, MAX_WORKFLOW_RUNS } from '../../src/broker/shared/workflow.ts';
import type { NewWorkflowRun } from '../../src/broker/types.ts';
import { newRunId } from '../../src/core/ids.ts';
import { chord, ConfigError, group } from '../../src/index.ts';
import { compileSpawn } from '../../src/task/workflow.ts';
import { setups } from '../fixtures/brokers.ts';

/** Nothing of queue `queue` is stored: no run in any state. */
async function nothingIn(app: { broker(): Promise<{ counts(q: string[]): Promise<Record<string, object>> }> }, queue: string) {
  const counts = (await (await app.broker()).counts([queue]))[queue] ?? {};
  assert.ok(
    Object.values(counts).every((n) => n === 0),
    `nothing stored in ${queue}: ${JSON.stringify(counts)}`,
  );
}

for (const make of setups('errand-wf-size')) {
  const setup = make();
  describe(`workflow size limits on ${setup.name}`, () => {
    const app = setup.app({ maxInputBytes: 4 * 1024 * 1024 });
    after(async () => {
      await app.close();
      await setup.cleanup();
    });
    const runsOf = new Map<number, number>();
    let gathered: number[][] = [];
    const part = app.task('size.part', { input: z.object({ i: z.number() }), queue: 'size' }, ({ i }) => {
      runsOf.set(i, (runsOf.get(i) ?? 0) + 1);
      return i;
    });
    const gather = app.task('size.gather', { input: z.array(z.number()), queue: 'size' }, (xs) => {
      gathered.push(xs);
      return xs.length;
    });
    const big = app.task('size.big', { input: z.object({ i: z.number(), pad: z.string() }), queue: 'size_big' }, ({ pad }) => pad.length);
    const lengths = app.task('size.lengths', { input: z.array(z.number()), queue: 'size_big' }, (xs) => xs);

    it(`the largest accepted, ${MAX_WORKFLOW_RUNS.toLocaleString('en-US')} steps (a chord of ${(MAX_WORKFLOW_RUNS - 1).toLocaleString('en-US')} parts), finishes with exact fan-in`, async () => {
      const n = MAX_WORKFLOW_RUNS - 1;
      const wf = await app.workflow(chord(group(...Array.from({ length: n }, (_, i) => part.step({ i }))), gather.next()));
      assert.equal(wf.created, true);
      assert.equal(wf.runIds.length, MAX_WORKFLOW_RUNS);
      const worker = app.worker({ queues: ['size'], concurrency: 50 });
      await worker.start();
      try {
        assert.equal(await wf.result({ timeout: 120_000 }), n);
      } finally {
        await worker.stop();
      }
      assert.equal(gathered.length, 1, 'the callback ran once');
      assert.deepStrictEqual(
        gathered[0],
        Array.from({ length: n }, (_, i) => i),
        'every value, in order',
      );
      assert.equal(runsOf.size, n);
      assert.ok(
        [...runsOf.values()].every((k) => k === 1),
        'each part ran once',
      );
      assert.equal(await wf.state(), 'succeeded');
      // Stored as made: every run, and one edge from each part to the callback.
      const rec = await (await app.broker()).getWorkflow(wf.id);
      assert.equal(rec?.runs.length, MAX_WORKFLOW_RUNS);
      assert.equal(rec?.edges.length, n);
    });

    it('steps with inputs near maxInputBytes, more bytes than one call takes, finish with exact fan-in', async () => {
      const pad = 'x'.repeat(4 * 1024 * 1024 - 100);
      const wf = await app.workflow(chord(group(...Array.from({ length: 3 }, (_, i) => big.step({ i, pad }))), lengths.next()));
      const worker = app.worker({ queues: ['size_big'], concurrency: 4 });
      await worker.start();
      try {
        assert.deepStrictEqual(await wf.result({ timeout: 120_000 }), [pad.length, pad.length, pad.length]);
      } finally {
        await worker.stop();
      }
    });

    it('a step whose idempotency key a stored run holds: nothing of a workflow too large for one call is created', async () => {
      const keyed = app.task('size.keyed', { input: z.object({ i: z.number() }), queue: 'size_held' }, ({ i }) => i);
      const holder = await keyed.enqueue({ i: -1 }, { idempotencyKey: 'held-1' });
      const steps = Array.from({ length: 1200 }, (_, i) => keyed.step({ i }, i === 1100 ? { idempotencyKey: 'held-1' } : undefined));
      const wf = await app.workflow(group(...steps));
      assert.equal(wf.created, false);
      assert.deepStrictEqual(wf.held, { run: wf.runIds[1100], key: 'held-1', by: holder.id });
      const broker = await app.broker();
      assert.equal(await broker.getWorkflow(wf.id), null);
      assert.equal(await broker.getRun(wf.runIds[0] as string), null);
      const counts = (await broker.counts(['size_held'])).size_held;
      assert.equal(counts?.queued, 1, 'only the run holding the key');
      assert.equal(counts?.cancelled, 0);
    });

    it('one step over is refused at the call, naming the size and the limit; nothing is written', async () => {
      gathered = [];
      const steps = Array.from({ length: MAX_WORKFLOW_RUNS }, (_, i) => part.step({ i }));
      await assert.rejects(
        app.workflow(chord(group(...steps), gather.next())),
        (err: Error) =>
          err instanceof ConfigError &&
          /the shape has 10,001 steps, over the limit of 10,000 steps per workflow \(docs\/workflows\.md, "Limits"\)/.test(err.message),
      );
      // The broker checks it too (a caller of createWorkflow): nothing of it is written.
      const now = Date.now();
      const runs: NewWorkflowRun[] = Array.from({ length: MAX_WORKFLOW_RUNS + 1 }, () => ({
        id: newRunId('size_over', now),
        task: 'size.part',
        queue: 'size_over',
        input: '{"i":0}',
        priority: 0,
        runAt: now,
      }));
      const broker = await app.broker();
      const id = newRunId('size_over', now);
      await assert.rejects(
        broker.createWorkflow({ id, runs }, now),
        (err: Error) => err instanceof ConfigError && /has 10,001 runs, over the limit of 10,000 runs per workflow/.test(err.message),
      );
      assert.equal(await broker.getWorkflow(id), null);
      assert.equal(await broker.getRun((runs[0] as NewWorkflowRun).id), null);
      await nothingIn(app, 'size_over');
      // A spawn (ctx.spawn compiles its shape so) has the same limit: the handler gets the error.
      assert.throws(
        () => compileSpawn(chord(group(...steps), gather.next()), Date.now(), 1024 * 1024),
        /the shape has 10,001 steps, over the limit of 10,000 steps per workflow/,
      );
    });

    it('too many dependencies, or too many bytes of step inputs, are refused at the call; nothing is written', async () => {
      const broker = await app.broker();
      const now = Date.now();
      const run = (input = 'null'): NewWorkflowRun => ({
        id: newRunId('size_deps', now),
        task: 'size.part',
        queue: 'size_deps',
        input,
        priority: 0,
        runAt: now,
      });
      // 150 steps, then 150 that each wait for all of them: 22,500 edges.
      const heads = Array.from({ length: 150 }, () => run());
      const tails = Array.from({ length: 150 }, () => ({ ...run(), dependsOn: heads.map((h) => ({ id: h.id })) }));
      assert.ok(150 * 150 > MAX_WORKFLOW_DEPENDENCIES);
      const id = newRunId('size_deps', now);
      await assert.rejects(
        broker.createWorkflow({ id, runs: [...heads, ...tails] }, now),
        (err: Error) =>
          err instanceof ConfigError && /has 22,500 dependencies between its runs, over the limit of 20,000 per workflow/.test(err.message),
      );
      // Two steps of 34 MB each.
      const half = `"${'y'.repeat(34_000_000)}"`;
      assert.ok(2 * half.length > MAX_WORKFLOW_BYTES);
      const id2 = newRunId('size_deps', now);
      await assert.rejects(
        broker.createWorkflow({ id: id2, runs: [run(half), run(half)] }, now),
        (err: Error) =>
          err instanceof ConfigError &&
          /has 68,000,004 bytes of step inputs \(JSON\) in all, over the limit of 67,108,864 bytes per workflow/.test(err.message),
      );
      for (const wf of [id, id2]) assert.equal(await broker.getWorkflow(wf), null);
      await nothingIn(app, 'size_deps');
      // Through errand.workflow: refused at the step that goes over, before anything is stored.
      const pad = 'z'.repeat(4_000_000);
      const many = Array.from({ length: 17 }, (_, i) => big.step({ i, pad }));
      await assert.rejects(
        app.workflow(chord(group(...many), lengths.next())),
        (err: Error) =>
          err instanceof ConfigError &&
          /the inputs of its first 17 steps \(of 18\) are 68,000,279 bytes of JSON, over the limit of 67,108,864 bytes of step inputs per workflow/.test(
            err.message,
          ),
      );
    });
  });
}
