/**
 * The broker conformance suite, section: `workflows` (docs/workflows.md): creation (atomic,
 * checked, idempotent by id), the `waiting` state, exact fan-in (a dependent made ready once, even
 * when its last dependency is reported twice or two dependencies settle at once), how results flow
 * (chain, chord, named DAG), failure propagation per edge policy, and cancel of a workflow.
 * See `suite.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ConfigError } from '../../src/core/errors.ts';
import { newRunId } from '../../src/core/ids.ts';
import type { BrokerInspector, NewWorkflowRun, Reservation } from '../../src/broker/types.ts';
import {
  type ConformanceContext,
  LEASE,
  Q,
  RETAIN,
  assertFields,
  errorText,
  ids,
  newRun,
  on,
  parseError,
  workflowStep,
} from './context.ts';

/** A run of a workflow (in Q unless `over.queue` says otherwise). */
const step = (now: number, over: Parameters<typeof workflowStep>[2] & { queue?: string } = {}): NewWorkflowRun =>
  workflowStep(over.queue ?? Q, now, over);

export function workflowConformance(c: ConformanceContext): void {
  const { open, test, getRun, reserveAll, drain } = c;

  describe('workflows', () => {
    test('a chain: one run at a time, each gets the previous result; the rest wait', async () => {
      const b = await open();
      const t0 = Date.now();
      const a = step(t0, { input: '0' });
      const bb = step(t0, { dependsOn: on(a), inputFrom: 'value' });
      const cc = step(t0, { dependsOn: on(bb), inputFrom: 'value' });
      const wf = newRunId(Q, t0);
      assert.deepStrictEqual(await b.createWorkflow({ id: wf, runs: [a, bb, cc] }, t0), { id: wf, created: true });
      assertFields(await getRun(b, bb.id), { state: 'waiting', workflow: wf }, 'second step');
      assert.equal((await b.counts([Q]))[Q]?.waiting, 2);
      const ran = await drain(b, t0 + 1, (r) => String(Number(r.input) + 1));
      assert.deepStrictEqual(ids(ran), [a.id, bb.id, cc.id], 'in chain order, one at a time');
      assert.deepStrictEqual(
        ran.map((r) => r.input),
        ['0', '1', '2'],
      );
      assertFields(await getRun(b, cc.id), { state: 'succeeded', result: '3' }, 'last step');
      const rec = await b.getWorkflow(wf);
      assert.ok(rec);
      assert.deepStrictEqual(ids(rec.runs), [a.id, bb.id, cc.id]);
      assert.deepStrictEqual(
        rec.edges.map((e) => [e.from, e.to, e.onFailure]),
        [
          [a.id, bb.id, 'cancel'],
          [bb.id, cc.id, 'cancel'],
        ].sort((x, y) => (x[1]! < y[1]! ? -1 : 1)),
      );
      assert.equal(await b.getWorkflow(newRunId(Q, t0)), null, 'an unknown workflow');
    });

    test('a chord: the callback gets every result, in dependsOn order, whatever order they settle in', async () => {
      const b = await open();
      const t0 = Date.now();
      const header = [0, 1, 2, 3, 4].map((i) => step(t0, { input: String(i) }));
      const body = step(t0, { dependsOn: on(...header), inputFrom: 'list' });
      await b.createWorkflow({ id: newRunId(Q, t0), runs: [body, ...header] }, t0);
      const { runs } = await reserveAll(b, 'w', t0 + 1);
      assert.deepStrictEqual(ids(runs).sort(), ids(header).sort(), 'the header runs, not the body');
      for (const r of [...runs].reverse()) {
        assertFields(await getRun(b, body.id), { state: 'waiting' }, 'body before its last dependency');
        const n = Number(r.input);
        await b.settle(
          'w',
          [{ id: r.id, attempt: 1, outcome: 'succeeded', result: n === 2 ? null : String(n * n), retentionMs: 0 }],
          t0 + 2,
        );
      }
      const [ready] = (await reserveAll(b, 'w', t0 + 3)).runs;
      assert.equal(ready?.id, body.id);
      assert.equal(ready?.input, '[0,1,null,9,16]', 'the full list (a run without a result gives null; retention 0 loses nothing)');
    });

    test('a chord whose runs all settle in one batch with retention 0: the callback gets every result; a failure cancels', async () => {
      const b = await open();
      const t0 = Date.now();
      const header = [0, 1, 2, 3].map((i) => step(t0, { input: String(i) }));
      const body = step(t0, { dependsOn: on(...header), inputFrom: 'list' });
      const first = step(t0, { input: '"f"' });
      const after = step(t0, { dependsOn: on(first) });
      await b.createWorkflow({ id: newRunId(Q, t0), runs: [body, ...header] }, t0);
      await b.createWorkflow({ id: newRunId(Q, t0), runs: [first, after] }, t0);
      const { runs } = await reserveAll(b, 'w', t0 + 1);
      assert.equal(runs.length, 5, 'the header runs and the first step');
      const statuses = await b.settle(
        'w',
        [...runs]
          .reverse()
          .map((r) =>
            r.id === first.id
              ? { id: r.id, attempt: 1, outcome: 'failed' as const, error: errorText('x'), retentionMs: 0 }
              : { id: r.id, attempt: 1, outcome: 'succeeded' as const, result: r.input === '2' ? null : r.input, retentionMs: 0 },
          ),
        t0 + 2,
      );
      assert.deepStrictEqual(statuses, ['ok', 'ok', 'ok', 'ok', 'ok']);
      for (const r of runs) assert.equal(await b.getRun(r.id), null, 'retention 0: gone');
      assertFields(await getRun(b, after.id), { state: 'cancelled' }, 'the dependent of the failed run');
      const [ready] = (await reserveAll(b, 'w', t0 + 3)).runs;
      assert.equal(ready?.id, body.id);
      assert.equal(ready?.input, '[0,1,null,3]', 'the full list, in dependsOn order');
    });

    test('a DAG with named dependencies: object inputs, fan-out and fan-in', async () => {
      const b = await open();
      const t0 = Date.now();
      const a = step(t0, { input: '"a"' });
      const bb = step(t0, { input: '"b"' });
      const cc = step(t0, { dependsOn: on(a), inputFrom: 'value' });
      const d = step(t0, {
        dependsOn: [
          { id: a.id, name: 'x' },
          { id: cc.id, name: 'y' },
        ],
        inputFrom: 'object',
      });
      const e = step(t0, { dependsOn: [{ id: d.id }, { id: bb.id }], input: '{"given":true}' });
      await b.createWorkflow({ id: newRunId(Q, t0), runs: [e, d, cc, bb, a] }, t0);
      const ran = await drain(b, t0 + 1, (r) => JSON.stringify(`${r.input.length}`));
      const input = new Map(ran.map((r) => [r.id, r.input]));
      assert.equal(ran.length, 5, 'each ran once');
      assert.equal(input.get(cc.id), '"3"');
      assert.equal(input.get(d.id), '{"x":"3","y":"3"}');
      assert.equal(input.get(e.id), '{"given":true}', 'inputFrom given: its own input');
      assert.ok(ids(ran).indexOf(e.id) > ids(ran).indexOf(d.id) && ids(ran).indexOf(d.id) > ids(ran).indexOf(cc.id));
    });

    test('exact fan-in: the last dependency reported twice (late settle of a lost lease, a resent settle) makes the dependent ready once', async () => {
      const b = await open({ maxLeaseLosses: 5 });
      const t0 = Date.now();
      const a = step(t0);
      const z = step(t0);
      const body = step(t0, { dependsOn: on(a, z), inputFrom: 'list' });
      await b.createWorkflow({ id: newRunId(Q, t0), runs: [a, z, body] }, t0);
      const first = (await reserveAll(b, 'w1', t0, { leaseMs: 100 })).runs;
      assert.equal(first.length, 2);
      // w1's leases expire; w2 gets both again (a duplicate execution).
      const second = (await reserveAll(b, 'w2', t0 + 1000)).runs;
      assert.deepStrictEqual(ids(second).sort(), ids(first).sort());
      const ok = (w: string, r: Reservation, n: number) =>
        b.settle(w, [{ id: r.id, attempt: r.attempt, outcome: 'succeeded', result: `"${w}"`, retentionMs: RETAIN }], n);
      assert.deepStrictEqual(await ok('w2', second[0]!, t0 + 1001), ['ok']);
      assert.deepStrictEqual(await ok('w2', second[1]!, t0 + 1002), ['ok']);
      assert.deepStrictEqual(await ok('w2', second[1]!, t0 + 1003), ['lost'], 'a resent settle is lost');
      assert.deepStrictEqual(await ok('w1', first[0]!, t0 + 1004), ['lost'], 'the first execution settles late: lost');
      const ready = (await reserveAll(b, 'w3', t0 + 1005)).runs;
      assert.deepStrictEqual(ids(ready), [body.id], 'the dependent, once');
      assert.equal(ready[0]?.input, '["w2","w2"]');
      assert.deepStrictEqual((await reserveAll(b, 'w4', t0 + 1006)).runs, [], 'and never again');
      assertFields((await b.counts([Q]))[Q], { waiting: 0, queued: 0, active: 1, succeeded: 2 }, 'counts');
    });

    test('exact fan-in: dependencies settling at the same time make the dependent ready once', async () => {
      const b = await open();
      const t0 = Date.now();
      const header = Array.from({ length: 20 }, (_, i) => step(t0, { input: String(i) }));
      const body = step(t0, { dependsOn: on(...header), inputFrom: 'list' });
      await b.createWorkflow({ id: newRunId(Q, t0), runs: [...header, body] }, t0);
      const runs: Reservation[] = [];
      for (let w = 0; w < 4; w++) runs.push(...(await reserveAll(b, `w${w}`, t0, { max: 5 })).runs);
      assert.equal(runs.length, 20);
      const statuses = await Promise.all(
        runs.map((r, i) =>
          b.settle(`w${Math.floor(i / 5)}`, [{ id: r.id, attempt: 1, outcome: 'succeeded', result: r.input, retentionMs: RETAIN }], t0 + 1),
        ),
      );
      assert.deepStrictEqual(
        statuses.flat(),
        runs.map(() => 'ok'),
      );
      const ready = (await reserveAll(b, 'x', t0 + 2)).runs;
      assert.deepStrictEqual(ids(ready), [body.id]);
      assert.equal(ready[0]?.input, `[${header.map((_, i) => i).join(',')}]`);
      assert.deepStrictEqual((await reserveAll(b, 'y', t0 + 3)).runs, []);
    });

    test('failure: only a terminal failure propagates; cancel (default) cascades, skip finishes without running, continue runs with null', async () => {
      const b = await open();
      const t0 = Date.now();
      const bad = step(t0, { input: '"bad"' });
      const good = step(t0, { input: '"good"' });
      const cancelled = step(t0, { dependsOn: on(bad) });
      const cascaded = step(t0, { dependsOn: [{ id: cancelled.id, onFailure: 'cancel' }] });
      const skipped = step(t0, { dependsOn: [{ id: bad.id, onFailure: 'skip' }] });
      const afterSkip = step(t0, { dependsOn: on(skipped), inputFrom: 'value' });
      const cleanup = step(t0, { dependsOn: [{ id: bad.id, onFailure: 'continue' }, { id: good.id }], inputFrom: 'list' });
      const wf = newRunId(Q, t0);
      await b.createWorkflow({ id: wf, runs: [bad, good, cancelled, cascaded, skipped, afterSkip, cleanup] }, t0);
      const roots = (await reserveAll(b, 'w', t0)).runs;
      assert.deepStrictEqual(ids(roots).sort(), [bad.id, good.id].sort());
      const badRun = roots.find((r) => r.id === bad.id)!;
      const goodRun = roots.find((r) => r.id === good.id)!;
      // A retry is not terminal: nothing moves.
      await b.settle('w', [{ id: bad.id, attempt: 1, outcome: 'retry', error: errorText('boom'), runAt: t0 + 1 }], t0 + 1);
      assertFields(await getRun(b, cancelled.id), { state: 'waiting' }, 'after a retry');
      await b.settle('w', [{ id: good.id, attempt: goodRun.attempt, outcome: 'succeeded', result: '"ok"', retentionMs: RETAIN }], t0 + 2);
      const again = (await reserveAll(b, 'w', t0 + 3)).runs;
      assert.deepStrictEqual(ids(again), [bad.id]);
      assert.equal(badRun.attempt, 1);
      await b.settle('w', [{ id: bad.id, attempt: 2, outcome: 'failed', error: errorText('boom'), retentionMs: RETAIN }], t0 + 4);

      const rec = await getRun(b, cancelled.id);
      assertFields(rec, { state: 'cancelled', finishedAt: t0 + 4, attempts: 0 }, 'cancelled dependent');
      assertFields(parseError(rec.error), { reason: 'dependency_failed', name: 'DependencyFailedError' }, 'its error');
      assert.match(parseError(rec.error).message, new RegExp(bad.id.replace('.', '\\.')));
      assertFields(await getRun(b, cascaded.id), { state: 'cancelled' }, 'its dependent, cascaded');
      assertFields(
        await getRun(b, skipped.id),
        { state: 'succeeded', attempts: 0, result: undefined },
        'skipped: succeeded without running',
      );
      const ready = (await reserveAll(b, 'w', t0 + 5)).runs;
      assert.deepStrictEqual(ids(ready).sort(), [afterSkip.id, cleanup.id].sort(), 'after a skip, and the cleanup step, run');
      assert.equal(ready.find((r) => r.id === afterSkip.id)?.input, 'null');
      assert.equal(ready.find((r) => r.id === cleanup.id)?.input, '[null,"ok"]');
      const counts = (await b.counts([Q]))[Q];
      assertFields(counts, { waiting: 0, cancelled: 2, failed: 1 }, 'counts');
    });

    test('cancel of a run of a workflow propagates as a failure; so does a lease lost too often', async () => {
      const b = await open({ maxLeaseLosses: 1 });
      const t0 = Date.now();
      const a = step(t0);
      const z = step(t0);
      const afterA = step(t0, { dependsOn: on(a) });
      const afterZ = step(t0, { dependsOn: on(z) });
      await b.createWorkflow({ id: newRunId(Q, t0), runs: [a, z, afterA, afterZ] }, t0);
      assert.deepStrictEqual(await b.cancel(a.id, t0 + 1), { outcome: 'cancelled', previous: 'queued' });
      assertFields(await getRun(b, afterA.id), { state: 'cancelled' }, 'dependent of the cancelled run');
      assert.deepStrictEqual(await b.cancel(afterA.id, t0 + 1), { outcome: 'finished', state: 'cancelled' });
      await reserveAll(b, 'w1', t0 + 2, { leaseMs: 10 });
      await reserveAll(b, 'w2', t0 + 100); // z's lease expired once: failed (maxLeaseLosses 1)
      assertFields(await getRun(b, z.id), { state: 'failed' }, 'z');
      assertFields(await getRun(b, afterZ.id), { state: 'cancelled' }, 'dependent of the run failed by the broker');
    });

    test('retry from a step when the other dependency succeeded after the failure: its result is kept and the dependent runs', async () => {
      const b = await open();
      const t0 = Date.now();
      const bad = step(t0, { input: '"bad"' });
      const good = step(t0, { input: '"good"' });
      const body = step(t0, { dependsOn: on(bad, good), inputFrom: 'list' });
      const wf = newRunId(Q, t0);
      await b.createWorkflow({ id: wf, runs: [bad, good, body] }, t0);
      const roots = (await reserveAll(b, 'w', t0)).runs;
      const byId = (id: string) => roots.find((r) => r.id === id)!;
      // The failure first: body is cancelled; then the other dependency succeeds.
      await b.settle(
        'w',
        [{ id: bad.id, attempt: byId(bad.id).attempt, outcome: 'failed', error: errorText('boom'), retentionMs: RETAIN }],
        t0 + 1,
      );
      assertFields(await getRun(b, body.id), { state: 'cancelled' }, 'body, cancelled by the failure');
      await b.settle(
        'w',
        [{ id: good.id, attempt: byId(good.id).attempt, outcome: 'succeeded', result: '"good!"', retentionMs: RETAIN }],
        t0 + 2,
      );
      assert.deepStrictEqual(await b.retry(bad.id, t0 + 3), { outcome: 'queued' });
      assertFields(await getRun(b, body.id), { state: 'waiting' }, 'body waits again, for the replayed step only');
      const [again] = (await reserveAll(b, 'w', t0 + 4)).runs;
      assert.equal(again?.id, bad.id);
      await b.settle('w', [{ id: bad.id, attempt: again!.attempt, outcome: 'succeeded', result: '"bad!"', retentionMs: RETAIN }], t0 + 5);
      const [ready] = (await reserveAll(b, 'w', t0 + 6)).runs;
      assert.equal(ready?.id, body.id, 'body is ready: the success that came after the failure was recorded');
      assert.equal(ready?.input, '["bad!","good!"]');
    });

    test('retry from a step: a failed step replayed, what its failure cancelled waits again, results that succeeded are kept', async () => {
      const b = await open();
      const t0 = Date.now();
      const bad = step(t0, { input: '"bad"' });
      const good = step(t0, { input: '"good"' });
      const body = step(t0, { dependsOn: on(bad, good), inputFrom: 'list' });
      const last = step(t0, { dependsOn: on(body), inputFrom: 'value' });
      const wf = newRunId(Q, t0);
      await b.createWorkflow({ id: wf, runs: [bad, good, body, last] }, t0);
      const roots = (await reserveAll(b, 'w', t0)).runs;
      const settle = (r: Reservation, ok: boolean, n: number) =>
        b.settle(
          'w',
          [
            ok
              ? { id: r.id, attempt: r.attempt, outcome: 'succeeded' as const, result: `"${r.input.slice(1, -1)}!"`, retentionMs: RETAIN }
              : { id: r.id, attempt: r.attempt, outcome: 'failed' as const, error: errorText('boom'), retentionMs: RETAIN },
          ],
          n,
        );
      await settle(roots.find((r) => r.id === good.id)!, true, t0 + 1);
      await settle(roots.find((r) => r.id === bad.id)!, false, t0 + 2);
      assertFields(await getRun(b, last.id), { state: 'cancelled' }, 'cascaded');

      assert.deepStrictEqual(await b.retry(bad.id, t0 + 3), { outcome: 'queued' });
      assertFields(await getRun(b, body.id), { state: 'waiting', error: undefined, finishedAt: undefined }, 'body waits again');
      assertFields(await getRun(b, last.id), { state: 'waiting' }, 'and what waited for it');
      assertFields(await getRun(b, good.id), { state: 'succeeded', attempts: 1 }, 'the step that succeeded is not re-run');
      assertFields((await b.counts([Q]))[Q], { waiting: 2, queued: 1, cancelled: 0, failed: 0, succeeded: 1 }, 'counts');
      const again = (await reserveAll(b, 'w', t0 + 4)).runs;
      assert.deepStrictEqual(ids(again), [bad.id], 'only the replayed step runs');
      await settle(again[0]!, true, t0 + 5);
      const [ready] = (await reserveAll(b, 'w', t0 + 6)).runs;
      assert.equal(ready?.id, body.id);
      assert.equal(ready?.input, '["bad!","good!"]', 'the kept result of the step that had succeeded');
      await settle(ready!, true, t0 + 7);
      const [tail] = (await reserveAll(b, 'w', t0 + 8)).runs;
      assert.equal(tail?.id, last.id);
      // A workflow run cancelled by the user is not brought back by a retry of another step.
      const x = step(t0);
      const y = step(t0, { dependsOn: on(x) });
      const z = step(t0, { dependsOn: on(x) });
      await b.createWorkflow({ id: newRunId(Q, t0), runs: [x, y, z] }, t0);
      await b.cancel(z.id, t0 + 9);
      const [xr] = (await reserveAll(b, 'w', t0 + 9)).runs;
      await settle(xr!, false, t0 + 10);
      await b.retry(x.id, t0 + 11);
      assertFields(await getRun(b, y.id), { state: 'waiting' }, 'cancelled by the failure: waits again');
      assertFields(await getRun(b, z.id), { state: 'cancelled' }, 'cancelled by the user: stays cancelled');
    });

    test('retry of every failed run of a queue (retryFailed) retries each failed step from there too', async () => {
      const b = await open();
      const inspector = b as unknown as Partial<BrokerInspector>;
      if (typeof inspector.retryFailed !== 'function') return;
      const t0 = Date.now();
      const a = step(t0);
      const after = step(t0, { dependsOn: on(a) });
      await b.createWorkflow({ id: newRunId(Q, t0), runs: [a, after] }, t0);
      const [r] = (await reserveAll(b, 'w', t0)).runs;
      await b.settle('w', [{ id: r!.id, attempt: 1, outcome: 'failed', error: errorText('boom'), retentionMs: RETAIN }], t0 + 1);
      assertFields(await getRun(b, after.id), { state: 'cancelled' }, 'cancelled by the failure');
      assert.equal(await inspector.retryFailed(Q, undefined, t0 + 2), 1);
      assertFields(await getRun(b, after.id), { state: 'waiting' }, 'waits again');
      const [again] = (await reserveAll(b, 'w', t0 + 3)).runs;
      assert.equal(again?.id, a.id);
      await b.settle('w', [{ id: a.id, attempt: again!.attempt, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 4);
      assert.deepStrictEqual(ids((await reserveAll(b, 'w', t0 + 5)).runs), [after.id]);
    });

    test('a purged step counts as cancelled: what waits for it is cancelled, or runs anyway, never left waiting', async () => {
      const b = await open();
      const inspector = b as unknown as Partial<BrokerInspector>;
      if (typeof inspector.purge !== 'function') return;
      const t0 = Date.now();
      const a = step(t0);
      const cancelled = step(t0, { dependsOn: on(a) });
      const cleanup = step(t0, { dependsOn: [{ id: a.id, onFailure: 'continue' }], inputFrom: 'list' });
      await b.createWorkflow({ id: newRunId(Q, t0), runs: [a, cancelled, cleanup] }, t0);
      assert.equal(await inspector.purge(Q, t0 + 1), 1, 'the queued step');
      assertFields(await getRun(b, cancelled.id), { state: 'cancelled' }, 'its dependent');
      assert.equal(parseError((await getRun(b, cancelled.id)).error).reason, 'dependency_failed');
      const ready = (await reserveAll(b, 'w', t0 + 2)).runs;
      assert.deepStrictEqual(ids(ready), [cleanup.id]);
      assert.equal(ready[0]?.input, '[null]');
    });

    test('cancel of a workflow: waiting, queued and active runs all cancelled; finished ones kept', async () => {
      const b = await open();
      const t0 = Date.now();
      const done = step(t0);
      const active = step(t0);
      const queued = step(t0);
      const waiting = step(t0, { dependsOn: on(active, queued) });
      const wf = newRunId(Q, t0);
      await b.createWorkflow({ id: wf, runs: [done, active, queued, waiting] }, t0);
      const seen: string[] = [];
      const stop = b.onCancel((cancelled) => seen.push(...cancelled));
      try {
        await reserveAll(b, 'w', t0, { max: 2 });
        await b.settle('w', [{ id: done.id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN }], t0 + 1);
        assert.deepStrictEqual(await b.cancelWorkflow(wf, t0 + 2), { outcome: 'cancelled', runs: 3 });
        const rec = await b.getWorkflow(wf);
        assert.deepStrictEqual(Object.fromEntries(rec!.runs.map((r) => [r.id, r.state])), {
          [done.id]: 'succeeded',
          [active.id]: 'cancelled',
          [queued.id]: 'cancelled',
          [waiting.id]: 'cancelled',
        });
        assert.deepStrictEqual(
          await b.renew('w', [{ id: active.id, attempt: 1 }], LEASE, t0 + 3),
          [active.id],
          'the active run learns it at renew',
        );
        assert.deepStrictEqual((await reserveAll(b, 'w', t0 + 4)).runs, []);
        assert.deepStrictEqual(await b.cancelWorkflow(wf, t0 + 5), { outcome: 'cancelled', runs: 0 });
        assert.deepStrictEqual(await b.cancelWorkflow(newRunId(Q, t0), t0 + 5), { outcome: 'not_found' });
      } finally {
        stop();
      }
    });

    test('a cascade through a step kept 0 ms once cancelled still reaches what waits for it', async () => {
      const b = await open();
      const t0 = Date.now();
      const a = step(t0);
      const mid = { ...step(t0, { dependsOn: on(a) }), cancelledRetentionMs: 0 };
      const last = step(t0, { dependsOn: on(mid) });
      await b.createWorkflow({ id: newRunId(Q, t0), runs: [a, mid, last] }, t0);
      const [r] = (await reserveAll(b, 'w', t0)).runs;
      await b.settle('w', [{ id: r!.id, attempt: 1, outcome: 'failed', error: errorText('boom'), retentionMs: RETAIN }], t0 + 1);
      assertFields(await getRun(b, last.id), { state: 'cancelled' }, 'the step after the one deleted at once');
      assert.equal((await b.counts([Q]))[Q]?.waiting, 0, 'nothing left waiting');
    });

    test('idempotency keys on workflow runs: held by a stored run, nothing is created; taken, an enqueue finds the step', async () => {
      const b = await open();
      const t0 = Date.now();
      const holder = await c.enqueueOne(b, t0, { idempotencyKey: 'k1', idempotencyTtl: 60_000 });
      const a = { ...step(t0), idempotencyKey: 'k1', idempotencyTtl: 60_000 };
      const after = step(t0, { dependsOn: on(a) });
      const wf = newRunId(Q, t0);
      assert.deepStrictEqual(await b.createWorkflow({ id: wf, runs: [a, after] }, t0), {
        id: wf,
        created: false,
        held: { run: a.id, key: 'k1', by: holder },
      });
      assert.equal(await b.getRun(a.id), null, 'nothing created');
      assert.equal(await b.getWorkflow(wf), null);
      const a2 = { ...step(t0), idempotencyKey: 'k2', idempotencyTtl: 60_000 };
      const wf2 = newRunId(Q, t0);
      assert.deepStrictEqual(await b.createWorkflow({ id: wf2, runs: [a2, step(t0, { dependsOn: on(a2) })] }, t0), {
        id: wf2,
        created: true,
      });
      assertFields(await getRun(b, a2.id), { idempotencyKey: 'k2' }, 'the keyed step');
      const [again] = await b.enqueue([{ ...newRun(Q, t0), idempotencyKey: 'k2', idempotencyTtl: 60_000 }], t0 + 1);
      assert.deepStrictEqual(again, { id: a2.id, created: false, state: 'queued' }, 'an enqueue with the key finds the step');
      await assert.rejects(
        b.createWorkflow(
          {
            id: newRunId(Q, t0),
            runs: [
              { ...step(t0), idempotencyKey: 'k3' },
              { ...step(t0), idempotencyKey: 'k3' },
            ],
          },
          t0,
        ),
        (err: Error) => err instanceof ConfigError && /idempotency key "k3" of another run/.test(err.message),
      );
    });

    test('creation is checked and atomic; a resent workflow creates nothing', async () => {
      const b = await open();
      const t0 = Date.now();
      const a = step(t0);
      const z = step(t0, { dependsOn: on(a) });
      a.dependsOn = on(z);
      const wf = newRunId(Q, t0);
      await assert.rejects(
        b.createWorkflow({ id: wf, runs: [a, z] }, t0),
        (err: Error) => err instanceof ConfigError && /cycle/.test(err.message),
      );
      await assert.rejects(
        b.createWorkflow({ id: wf, runs: [step(t0, { dependsOn: [{ id: newRunId(Q, t0) }] })] }, t0),
        (err: Error) => err instanceof ConfigError && /not a run of this workflow/.test(err.message),
      );
      await assert.rejects(
        b.createWorkflow({ id: wf, runs: [step(t0), step(t0, { inputFrom: 'value' })] }, t0),
        (err: Error) => err instanceof ConfigError && /has none/.test(err.message),
      );
      assert.equal(await b.getRun(a.id), null, 'nothing was created');
      assert.equal(await b.getWorkflow(wf), null);
      const r1 = step(t0);
      const r2 = step(t0, { dependsOn: on(r1) });
      assert.deepStrictEqual(await b.createWorkflow({ id: wf, runs: [r1, r2] }, t0), { id: wf, created: true });
      assert.deepStrictEqual(await b.createWorkflow({ id: wf, runs: [r1, r2] }, t0), { id: wf, created: false });
      assert.deepStrictEqual(ids((await reserveAll(b, 'w', t0)).runs), [r1.id], 'the root once');
      assertFields((await b.counts([Q]))[Q], { waiting: 1, active: 1, queued: 0 }, 'counts');
      const listed = await (b as unknown as { listRuns?: (f: object) => Promise<{ runs: { id: string }[] }> }).listRuns?.({
        state: 'waiting',
        limit: 10,
      });
      if (listed) assert.deepStrictEqual(ids(listed.runs), [r2.id], 'a waiting run is listed by its state');
    });
  });
}
