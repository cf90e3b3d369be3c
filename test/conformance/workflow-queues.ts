/**
 * The broker conformance suite, section: `workflows over several queues` (docs/workflows.md): a
 * workflow whose steps are in different queues runs as one in a single queue does (fan-in, values,
 * failure propagation per edge policy, cancel of the workflow, retry from a step, a resent
 * creation), and a run failed as `corrupt` at reserve reaches its dependents as any terminal
 * failure does. On Redis Cluster the three queues (`conf`, `confx`, `confy`) hash to different
 * slots (and nodes: test/broker/redis/cluster.test.ts checks it), so every edge here between
 * queues crosses slots through the relay. See `suite.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import type { Broker, Reservation } from '../../src/broker/types.ts';
import { ConfigError } from '../../src/core/errors.ts';
import { newRunId } from '../../src/core/ids.ts';
import { type ConformanceContext, Q, RETAIN, assertFields, errorText, ids, newRun, on, parseError, workflowStep } from './context.ts';

/** The other queues of this section (slots apart from Q's and each other's on Redis Cluster). */
export const Q2 = 'confx';
export const Q3 = 'confy';
const ALL = [Q, Q2, Q3];

const step = workflowStep;

/** A number input plus one; an object input: the sum of its values plus one. */
function plusOne(r: Reservation): string {
  const v = JSON.parse(r.input) as unknown;
  const n = typeof v === 'number' ? v : Object.values(v as Record<string, number>).reduce((a, b) => a + b, 0);
  return String(n + 1);
}

export function workflowQueuesConformance(c: ConformanceContext): void {
  const { open, test, getRun, reserveAll } = c;

  /** Reserves (from every queue of the section) and settles what is ready until nothing is; returns what ran. */
  const drain = (b: Broker, now: number, fn: (r: Reservation) => string | null) => c.drain(b, now, fn, ALL);

  const count = async (b: Broker, queue: string) => (await b.counts([queue]))[queue];

  describe('workflows over several queues', () => {
    test('a DAG whose edges cross queues: each step runs once, after what it waits for, with its values', async () => {
      const b = await open();
      const t0 = Date.now();
      const a = step(Q, t0, { input: '1' });
      const f = step(Q3, t0, { input: '5' }); // a root in another queue than the workflow's
      const bb = step(Q2, t0, { dependsOn: on(a), inputFrom: 'value' });
      const cc = step(Q3, t0, { dependsOn: on(a), inputFrom: 'value' });
      const d = step(Q, t0, {
        dependsOn: [
          { id: bb.id, name: 'x' },
          { id: cc.id, name: 'y' },
          { id: f.id, name: 'z' },
        ],
        inputFrom: 'object',
      });
      const e = step(Q2, t0, { dependsOn: on(d), inputFrom: 'value' });
      const wf = newRunId(Q, t0);
      assert.deepStrictEqual(await b.createWorkflow({ id: wf, runs: [a, f, bb, cc, d, e] }, t0), { id: wf, created: true });
      assertFields(await count(b, Q), { queued: 1, waiting: 1 }, Q);
      assertFields(await count(b, Q2), { queued: 0, waiting: 2 }, Q2);
      assertFields(await count(b, Q3), { queued: 1, waiting: 1 }, Q3);
      const ran = await drain(b, t0 + 1, plusOne);
      assert.deepStrictEqual(ids(ran).sort(), ids([a, f, bb, cc, d, e]).sort(), 'each step ran once');
      const at = (id: string) => ids(ran).indexOf(id);
      assert.ok(at(a.id) < at(bb.id) && at(a.id) < at(cc.id), 'b and c after a');
      assert.ok(at(bb.id) < at(d.id) && at(cc.id) < at(d.id) && at(f.id) < at(d.id), 'd after b, c and f');
      assert.ok(at(d.id) < at(e.id), 'e after d');
      const input = new Map(ran.map((r) => [r.id, r.input]));
      assert.equal(input.get(bb.id), '2');
      assert.equal(input.get(cc.id), '2');
      assert.equal(input.get(d.id), '{"x":3,"y":3,"z":6}');
      assert.equal(input.get(e.id), '13');
      assertFields(await getRun(b, e.id), { state: 'succeeded', result: '14', workflow: wf }, 'the last step');
      for (const q of ALL) assertFields(await count(b, q), { waiting: 0, queued: 0 }, `${q} at the end`);
      const rec = await b.getWorkflow(wf);
      assert.ok(rec, 'the workflow is found by its id');
      assert.deepStrictEqual(ids(rec.runs).sort(), ids([a, f, bb, cc, d, e]).sort(), 'its runs in every queue');
      const edges = rec.edges.map((x) => `${x.from}>${x.to}${x.name ? `:${x.name}` : ''}`).sort();
      assert.deepStrictEqual(
        edges,
        [`${a.id}>${bb.id}`, `${a.id}>${cc.id}`, `${bb.id}>${d.id}:x`, `${cc.id}>${d.id}:y`, `${f.id}>${d.id}:z`, `${d.id}>${e.id}`].sort(),
      );
    });

    test('a failure crosses queues per edge policy: cancel cascades, skip finishes without running, continue runs with null', async () => {
      const b = await open();
      const t0 = Date.now();
      const bad = step(Q, t0);
      const cancelled = step(Q2, t0, { dependsOn: on(bad) });
      const cascaded = step(Q3, t0, { dependsOn: on(cancelled) });
      const skipped = step(Q3, t0, { dependsOn: [{ id: bad.id, onFailure: 'skip' }] });
      const afterSkip = step(Q, t0, { dependsOn: on(skipped), inputFrom: 'value' });
      const cleanup = step(Q2, t0, { dependsOn: [{ id: bad.id, onFailure: 'continue' }], inputFrom: 'list' });
      await b.createWorkflow({ id: newRunId(Q, t0), runs: [bad, cancelled, cascaded, skipped, afterSkip, cleanup] }, t0);
      const roots = (await reserveAll(b, 'w', t0, { queues: ALL })).runs;
      assert.deepStrictEqual(ids(roots), [bad.id]);
      await b.settle('w', [{ id: bad.id, attempt: 1, outcome: 'failed', error: errorText('boom'), retentionMs: RETAIN }], t0 + 1);
      const rec = await getRun(b, cancelled.id);
      assertFields(rec, { state: 'cancelled', attempts: 0 }, 'cancelled in another queue');
      assertFields(parseError(rec.error), { reason: 'dependency_failed' }, 'its error');
      assert.match(parseError(rec.error).message, new RegExp(bad.id.replace('.', '\\.')), 'naming the failed step');
      const cas = await getRun(b, cascaded.id);
      assertFields(cas, { state: 'cancelled' }, 'cascaded to a third queue');
      assert.match(parseError(cas.error).message, new RegExp(cancelled.id.replace('.', '\\.')), 'naming the step it waited for');
      assertFields(await getRun(b, skipped.id), { state: 'succeeded', attempts: 0, result: undefined }, 'skipped');
      const ready = (await reserveAll(b, 'w', t0 + 2, { queues: ALL })).runs;
      assert.deepStrictEqual(ids(ready).sort(), [afterSkip.id, cleanup.id].sort(), 'after a skip, and the cleanup step, run');
      assert.equal(ready.find((r) => r.id === afterSkip.id)?.input, 'null');
      assert.equal(ready.find((r) => r.id === cleanup.id)?.input, '[null]');
      for (const q of ALL) assertFields(await count(b, q), { waiting: 0 }, `${q}: nothing left waiting`);
    });

    test('cancel of a run reaches its dependents in other queues', async () => {
      const b = await open();
      const t0 = Date.now();
      const a = step(Q, t0);
      const afterA = step(Q2, t0, { dependsOn: on(a) });
      const cleanup = step(Q3, t0, { dependsOn: [{ id: a.id, onFailure: 'continue' }], inputFrom: 'list' });
      await b.createWorkflow({ id: newRunId(Q, t0), runs: [a, afterA, cleanup] }, t0);
      assert.deepStrictEqual(await b.cancel(a.id, t0 + 1), { outcome: 'cancelled', previous: 'queued' });
      assertFields(await getRun(b, afterA.id), { state: 'cancelled' }, 'its dependent in another queue');
      const ready = (await reserveAll(b, 'w', t0 + 2, { queues: ALL })).runs;
      assert.deepStrictEqual(ids(ready), [cleanup.id]);
      assert.equal(ready[0]?.input, '[null]');
    });

    test('a lease lost too often, a purge and retryFailed reach (and bring back) dependents in other queues', async () => {
      const b = await open({ maxLeaseLosses: 1 });
      const t0 = Date.now();
      const lost = step(Q, t0);
      const afterLost = step(Q2, t0, { dependsOn: on(lost) });
      const purged = step(Q3, t0, { runAt: t0 + 60_000 });
      const afterPurged = step(Q2, t0, { dependsOn: [{ id: purged.id, onFailure: 'continue' }], inputFrom: 'list' });
      await b.createWorkflow({ id: newRunId(Q, t0), runs: [lost, afterLost, purged, afterPurged] }, t0);
      assertFields(await getRun(b, purged.id), { state: 'scheduled' }, 'a root in another queue, due later');
      await reserveAll(b, 'w1', t0 + 1, { queues: [Q], leaseMs: 10 });
      await reserveAll(b, 'w2', t0 + 100, { queues: [Q] }); // its lease expired once: failed (maxLeaseLosses 1)
      assertFields(await getRun(b, lost.id), { state: 'failed' }, 'the step whose lease was lost');
      assertFields(await getRun(b, afterLost.id), { state: 'cancelled' }, 'its dependent in another queue');
      const inspector = b as unknown as { purge?: (q: string, now: number) => Promise<number> };
      if (typeof inspector.purge === 'function') {
        assert.equal(await inspector.purge(Q3, t0 + 101), 1, 'the scheduled root');
        const ready = (await reserveAll(b, 'w', t0 + 102, { queues: [Q2] })).runs;
        assert.deepStrictEqual(
          ready.map((r) => [r.id, r.input]),
          [[afterPurged.id, '[null]']],
          'what waits for it in another queue runs anyway (continue)',
        );
      }
      const replay = b as unknown as { retryFailed?: (q: string, task: string | undefined, now: number) => Promise<number> };
      if (typeof replay.retryFailed === 'function') {
        assert.equal(await replay.retryFailed(Q, undefined, t0 + 103), 1);
        assertFields(await getRun(b, afterLost.id), { state: 'waiting' }, 'brought back in its queue');
      }
    });

    test('cancel of a workflow cancels its runs in every queue', async () => {
      const b = await open();
      const t0 = Date.now();
      const active = step(Q, t0);
      const queued = step(Q2, t0);
      const waiting = step(Q3, t0, { dependsOn: on(active, queued) });
      const later = step(Q, t0, { dependsOn: on(waiting) });
      const wf = newRunId(Q, t0);
      await b.createWorkflow({ id: wf, runs: [active, queued, waiting, later] }, t0);
      assert.deepStrictEqual(ids((await reserveAll(b, 'w', t0, { queues: [Q] })).runs), [active.id]);
      assert.deepStrictEqual(await b.cancelWorkflow(wf, t0 + 1), { outcome: 'cancelled', runs: 4 });
      const rec = await b.getWorkflow(wf);
      assert.deepStrictEqual(
        rec?.runs.map((r) => r.state),
        ['cancelled', 'cancelled', 'cancelled', 'cancelled'],
      );
      assert.deepStrictEqual((await reserveAll(b, 'w', t0 + 2, { queues: ALL })).runs, []);
      for (const q of ALL) assertFields(await count(b, q), { waiting: 0, queued: 0 }, q);
      assert.deepStrictEqual(await b.cancelWorkflow(wf, t0 + 3), { outcome: 'cancelled', runs: 0 });
    });

    test('retry from a step: what its failure cancelled in other queues waits again; results that succeeded are kept', async () => {
      const b = await open();
      const t0 = Date.now();
      const a = step(Q, t0, { input: '1' });
      const x = step(Q3, t0, { input: '7' });
      const body = step(Q2, t0, { dependsOn: on(a, x), inputFrom: 'list' });
      const last = step(Q, t0, { dependsOn: on(body), inputFrom: 'value' });
      await b.createWorkflow({ id: newRunId(Q, t0), runs: [a, x, body, last] }, t0);
      const roots = (await reserveAll(b, 'w', t0, { queues: ALL })).runs;
      assert.deepStrictEqual(ids(roots).sort(), [a.id, x.id].sort());
      await b.settle(
        'w',
        [
          { id: x.id, attempt: 1, outcome: 'succeeded', result: '7', retentionMs: RETAIN },
          { id: a.id, attempt: 1, outcome: 'failed', error: errorText('boom'), retentionMs: RETAIN },
        ],
        t0 + 1,
      );
      assertFields(await getRun(b, body.id), { state: 'cancelled' }, 'body');
      assertFields(await getRun(b, last.id), { state: 'cancelled' }, 'last');
      assert.deepStrictEqual(await b.retry(a.id, t0 + 2), { outcome: 'queued' });
      assertFields(await getRun(b, body.id), { state: 'waiting' }, 'body waits again');
      assertFields(await getRun(b, last.id), { state: 'waiting' }, 'last waits again');
      const ran = await drain(b, t0 + 3, (r) => (r.id === body.id ? '9' : r.id === last.id ? null : '1'));
      assert.deepStrictEqual(ids(ran), [a.id, body.id, last.id], 'only the replayed step and what depends on it');
      assert.equal(ran[1]?.input, '[1,7]', 'the result that succeeded is kept');
      assert.equal(ran[2]?.input, '9');
    });

    test('a workflow over several queues with a run id taken in another queue is refused; nothing of it is made', async () => {
      const b = await open();
      const t0 = Date.now();
      const taken = step(Q3, t0);
      await b.enqueue([newRun(Q3, t0, { id: taken.id })], t0);
      const r1 = step(Q, t0);
      const z = step(Q2, t0, { dependsOn: on(r1, taken) });
      const wf = newRunId(Q, t0);
      await assert.rejects(
        b.createWorkflow({ id: wf, runs: [r1, taken, z] }, t0),
        (err: Error) => err instanceof ConfigError && err.message.includes(taken.id),
      );
      assert.equal(await b.getWorkflow(wf), null);
      assert.equal(await b.getRun(r1.id), null, 'nothing was created');
      assert.equal(await b.getRun(z.id), null);
      assert.deepStrictEqual(ids((await reserveAll(b, 'w', t0 + 1, { queues: ALL })).runs), [taken.id], 'only the run that was there');
    });

    test('a resent workflow over several queues creates nothing; each root runs once', async () => {
      const b = await open();
      const t0 = Date.now();
      const r1 = step(Q, t0);
      const r2 = step(Q2, t0);
      const z = step(Q3, t0, { dependsOn: on(r1, r2) });
      const wf = newRunId(Q, t0);
      assert.deepStrictEqual(await b.createWorkflow({ id: wf, runs: [r1, r2, z] }, t0), { id: wf, created: true });
      assert.deepStrictEqual(await b.createWorkflow({ id: wf, runs: [r1, r2, z] }, t0), { id: wf, created: false });
      const ran = await drain(b, t0 + 1, () => null);
      assert.deepStrictEqual(ids(ran).sort(), ids([r1, r2, z]).sort());
      assert.equal(ran[ran.length - 1]?.id, z.id);
    });
  });
}
