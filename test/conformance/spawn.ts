/**
 * The broker conformance suite, section: `spawn` (dynamic fan-out, docs/workflows.md): a run ends
 * its attempt with a `spawned` settlement that creates runs and makes it wait, holding no lease,
 * for those it awaits; it then finishes with their values. Applied only under the lease (a spawn
 * settled by an attempt whose lease was lost, or settled twice, creates nothing), in the run's
 * workflow or one named by its id, with failures propagating per edge policy and retry from a step.
 * See `suite.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ConfigError } from '../../src/core/errors.ts';
import { newRunId } from '../../src/core/ids.ts';
import type { Dependency, NewWorkflowRun, Reservation, SpawnSettlement } from '../../src/broker/types.ts';
import { type ConformanceContext, LEASE, Q, RETAIN, assertFields, errorText, ids, newRun, parseError } from './context.ts';

function child(now: number, input: string, over: Partial<NewWorkflowRun> = {}): NewWorkflowRun {
  return { ...newRun(Q, now), input, ...over };
}

/** A spawn: `n` pages (inputs 0..n-1), a continuation that gets their list, the parent awaiting the continuation. */
function pages(r: Reservation, now: number, n: number): { spawn: SpawnSettlement; kids: NewWorkflowRun[]; cont: NewWorkflowRun } {
  const kids = Array.from({ length: n }, (_, i) => child(now, String(i)));
  const cont = child(now, 'null', { dependsOn: kids.map((k) => ({ id: k.id })), inputFrom: 'list' });
  const spawn: SpawnSettlement = {
    id: r.id,
    attempt: r.attempt,
    outcome: 'spawned',
    runs: [...kids, cont],
    awaits: [{ id: cont.id }],
    resultFrom: 'value',
    retentionMs: RETAIN,
  };
  return { spawn, kids, cont };
}

export function spawnConformance(c: ConformanceContext): void {
  const { open, test, getRun, reserveAll, enqueueOne, drain } = c;

  const ok = (r: Reservation, result: string | null) => ({
    id: r.id,
    attempt: r.attempt,
    outcome: 'succeeded' as const,
    result,
    retentionMs: RETAIN,
  });

  describe('spawn (dynamic fan-out)', () => {
    test('a run spawns pages and a continuation, waits holding no lease, and finishes with the continuation result', async () => {
      const b = await open();
      const t0 = Date.now();
      const parentId = await enqueueOne(b, t0, { input: '{"pages":3}' });
      const [p] = (await reserveAll(b, 'w', t0)).runs;
      assert.equal(p?.id, parentId);
      const { spawn, kids, cont } = pages(p!, t0, 3);
      assert.deepStrictEqual(await b.settle('w', [spawn], t0 + 1), ['ok']);
      const parent = await getRun(b, parentId);
      assertFields(parent, { state: 'waiting', attempts: 1, workflow: parentId, result: undefined }, 'the parent');
      assert.equal(parent.history.at(-1)?.outcome, 'spawned', 'its attempt ended as spawned');
      assert.deepStrictEqual(await b.renew('w', [{ id: parentId, attempt: 1 }], LEASE, t0 + 2), [parentId], 'no lease held');
      assertFields((await b.counts([Q]))[Q], { waiting: 2, queued: 3, active: 0 }, 'counts');
      assertFields(await getRun(b, cont.id), { state: 'waiting', workflow: parentId, enqueuedAt: t0 + 1 }, 'the continuation');
      assertFields(await getRun(b, kids[0]!.id), { state: 'queued', enqueuedAt: t0 + 1 }, 'a page, enqueued by the settle');
      const ran = await drain(b, t0 + 3, (r) => (r.id === cont.id ? JSON.stringify(`pages ${r.input}`) : String(Number(r.input) * 10)));
      assert.deepStrictEqual(ids(ran).sort(), [...ids(kids), cont.id].sort(), 'each spawned run ran once; the parent not again');
      assert.equal(ran.find((r) => r.id === cont.id)?.input, '[0,10,20]', 'the continuation got every page, in order');
      assertFields(
        await getRun(b, parentId),
        { state: 'succeeded', result: '"pages [0,10,20]"', attempts: 1, expiresAt: t0 + 3 + RETAIN },
        'the parent, finished',
      );
      const wf = await b.getWorkflow(parentId);
      assert.ok(wf, 'a workflow named by the parent');
      assert.deepStrictEqual(ids(wf.runs).sort(), [parentId, ...ids(kids), cont.id].sort());
      assert.ok(
        wf.edges.some((e) => e.from === cont.id && e.to === parentId && e.onFailure === 'cancel'),
        'the parent awaits the continuation',
      );
      assert.equal(wf.edges.filter((e) => e.to === cont.id).length, 3);
    });

    test('a spawn settled after the lease was lost creates nothing; the redelivered attempt spawns once', async () => {
      const b = await open();
      const t0 = Date.now();
      const parentId = await enqueueOne(b, t0);
      const [first] = (await reserveAll(b, 'w', t0, { leaseMs: 1000 })).runs;
      // The lease expires: the run is redelivered (attempt 2) before attempt 1 settles.
      const [second] = (await reserveAll(b, 'w2', t0 + 2000)).runs;
      assert.equal(second?.id, parentId);
      assert.equal(second?.attempt, 2);
      const stale = pages(first!, t0, 2);
      assert.deepStrictEqual(await b.settle('w', [stale.spawn], t0 + 2001), ['lost']);
      for (const run of stale.spawn.runs) assert.equal(await b.getRun(run.id), null, 'nothing created by the stale spawn');
      assertFields(await getRun(b, parentId), { state: 'active', attempts: 2 }, 'attempt 2 still holds it');
      const fresh = pages(second!, t0, 2);
      assert.deepStrictEqual(await b.settle('w2', [fresh.spawn], t0 + 2002), ['ok']);
      assert.deepStrictEqual(await b.settle('w2', [fresh.spawn], t0 + 2003), ['lost'], 'a resent spawn');
      // Along with a reservation, too.
      const along = await b.reserve({ workerId: 'w2', queues: [Q], max: 0, leaseMs: LEASE, now: t0 + 2004, settle: [fresh.spawn] });
      assert.deepStrictEqual(along.settled, ['lost']);
      assertFields((await b.counts([Q]))[Q], { queued: 2, waiting: 2, active: 0, succeeded: 0 }, 'created once');
      const ran = await drain(b, t0 + 2005, (r) => r.input);
      assert.equal(ran.length, 3);
      assertFields(await getRun(b, parentId), { state: 'succeeded', result: '[0,1]', attempts: 2 }, 'the parent');
    });

    test('a spawn sent along with a reservation is applied there; a list result and retention 0 children', async () => {
      const b = await open();
      const t0 = Date.now();
      const parentId = await enqueueOne(b, t0);
      const [p] = (await reserveAll(b, 'w', t0)).runs;
      const kids = [child(t0, '1'), child(t0, '2')];
      const spawn: SpawnSettlement = {
        id: p!.id,
        attempt: 1,
        outcome: 'spawned',
        runs: kids,
        awaits: kids.map((k) => ({ id: k.id })),
        resultFrom: 'list',
        retentionMs: RETAIN,
      };
      const res = await b.reserve({ workerId: 'w', queues: [Q], max: 10, leaseMs: LEASE, now: t0 + 1, settle: [spawn] });
      assert.deepStrictEqual(res.settled, ['ok']);
      assert.deepStrictEqual(ids(res.runs).sort(), ids(kids).sort(), 'the spawned runs, leased by that same call');
      await b.settle(
        'w',
        res.runs.map((r) => ({ ...ok(r, r.input === '1' ? null : `"${r.input}"`), retentionMs: 0 })),
        t0 + 2,
      );
      assertFields(await getRun(b, parentId), { state: 'succeeded', result: '[null,"2"]' }, 'in awaits order');
    });

    test('an object result, and a spawning step of a workflow: what waits for it gets the value it finished with', async () => {
      const b = await open();
      const t0 = Date.now();
      const a = child(t0, '"a"');
      const after = child(t0, 'null', { dependsOn: [{ id: a.id }], inputFrom: 'value' });
      const wf = newRunId(Q, t0);
      await b.createWorkflow({ id: wf, runs: [a, after] }, t0);
      const [ra] = (await reserveAll(b, 'w', t0)).runs;
      const x = child(t0, '1');
      const y = child(t0, '2');
      const spawn: SpawnSettlement = {
        id: ra!.id,
        attempt: 1,
        outcome: 'spawned',
        runs: [x, y],
        awaits: [
          { id: x.id, name: 'x' },
          { id: y.id, name: 'y' },
        ],
        resultFrom: 'object',
        retentionMs: RETAIN,
      };
      assert.deepStrictEqual(await b.settle('w', [spawn], t0 + 1), ['ok']);
      assertFields(await getRun(b, a.id), { state: 'waiting', workflow: wf }, 'the step, waiting');
      assertFields(await getRun(b, after.id), { state: 'waiting' }, 'its dependent still waits');
      assertFields(await getRun(b, x.id), { state: 'queued', workflow: wf }, 'spawned into the same workflow');
      const ran = await drain(b, t0 + 2, (r) => (r.id === after.id ? 'true' : r.input));
      assert.deepStrictEqual(ids(ran).sort(), [x.id, y.id, after.id].sort());
      assertFields(await getRun(b, a.id), { state: 'succeeded', result: '{"x":1,"y":2}' }, 'the step');
      assert.equal(ran.find((r) => r.id === after.id)?.input, '{"x":1,"y":2}', 'its dependent got that value');
      const rec = await b.getWorkflow(wf);
      assert.deepStrictEqual(ids(rec!.runs).sort(), [a.id, after.id, x.id, y.id].sort());
      assert.equal(await b.getWorkflow(a.id), null, 'no second workflow');
    });

    test('a failed page cancels the continuation and the parent; retry of the page brings both back', async () => {
      const b = await open();
      const t0 = Date.now();
      const parentId = await enqueueOne(b, t0);
      const [p] = (await reserveAll(b, 'w', t0)).runs;
      const { spawn, kids, cont } = pages(p!, t0, 2);
      await b.settle('w', [spawn], t0 + 1);
      const runs = (await reserveAll(b, 'w', t0 + 2)).runs;
      const bad = runs.find((r) => r.id === kids[1]!.id)!;
      await b.settle(
        'w',
        [
          ok(runs.find((r) => r.id === kids[0]!.id)!, '"one"'),
          { id: bad.id, attempt: 1, outcome: 'failed', error: errorText('boom'), retentionMs: RETAIN },
        ],
        t0 + 3,
      );
      assertFields(await getRun(b, cont.id), { state: 'cancelled' }, 'the continuation');
      const parent = await getRun(b, parentId);
      assertFields(parent, { state: 'cancelled' }, 'the parent');
      const err = parseError(parent.error);
      assert.equal(err.reason, 'dependency_failed');
      assert.match(err.message, new RegExp(cont.id.replace('.', '\\.')), 'naming the continuation');
      assert.deepStrictEqual(await b.retry(bad.id, t0 + 4), { outcome: 'queued' });
      assertFields(await getRun(b, cont.id), { state: 'waiting' }, 'the continuation waits again');
      assertFields(await getRun(b, parentId), { state: 'waiting', error: undefined }, 'the parent waits again');
      const ran = await drain(b, t0 + 5, (r) => (r.id === cont.id ? `"${r.input.length}"` : '"two"'));
      assert.deepStrictEqual(ids(ran), [bad.id, cont.id], 'only the page retried and the continuation');
      assertFields(await getRun(b, parentId), { state: 'succeeded', result: '"13"', attempts: 1 }, 'the parent');
    });

    test('skip and continue edges on what the parent awaits', async () => {
      const b = await open();
      const t0 = Date.now();
      const parentId = await enqueueOne(b, t0);
      const [p] = (await reserveAll(b, 'w', t0)).runs;
      const good = child(t0, '1');
      const bad = child(t0, '2');
      const awaits: Dependency[] = [{ id: good.id }, { id: bad.id, onFailure: 'continue' }];
      await b.settle(
        'w',
        [{ id: p!.id, attempt: 1, outcome: 'spawned', runs: [good, bad], awaits, resultFrom: 'list', retentionMs: RETAIN }],
        t0 + 1,
      );
      const runs = (await reserveAll(b, 'w', t0 + 2)).runs;
      await b.settle(
        'w',
        runs.map((r) =>
          r.id === bad.id
            ? { id: r.id, attempt: 1, outcome: 'failed' as const, error: errorText('boom'), retentionMs: RETAIN }
            : ok(r, '"fine"'),
        ),
        t0 + 3,
      );
      assertFields(await getRun(b, parentId), { state: 'succeeded', result: '["fine",null]' }, 'continue: null in its place');
    });

    test('a spawn naming a taken run id fails the run (spawn_refused) and creates nothing', async () => {
      const b = await open();
      const t0 = Date.now();
      const takenId = await enqueueOne(b, t0);
      const parentId = await enqueueOne(b, t0);
      const { runs } = await reserveAll(b, 'w', t0);
      const p = runs.find((r) => r.id === parentId)!;
      const fresh = child(t0, '1');
      const taken = child(t0, '2', { id: takenId });
      const st = await b.settle(
        'w',
        [
          {
            id: p.id,
            attempt: 1,
            outcome: 'spawned',
            runs: [fresh, taken],
            awaits: [{ id: fresh.id }],
            resultFrom: 'value',
            retentionMs: RETAIN,
          },
        ],
        t0 + 1,
      );
      assert.deepStrictEqual(st, ['ok']);
      const parent = await getRun(b, parentId);
      assertFields(parent, { state: 'failed' }, 'the parent');
      assert.equal(parseError(parent.error).reason, 'spawn_refused');
      assert.match(parseError(parent.error).message, new RegExp(takenId.replace('.', '\\.')));
      assert.equal(await b.getRun(fresh.id), null, 'nothing created');
    });

    test('a spawn is checked: runs outside the parent queue, awaits outside the spawn, no runs', async () => {
      const b = await open();
      const t0 = Date.now();
      const parentId = await enqueueOne(b, t0);
      const [p] = (await reserveAll(b, 'w', t0)).runs;
      const base = { id: p!.id, attempt: 1, outcome: 'spawned' as const, resultFrom: 'value' as const, retentionMs: RETAIN };
      const elsewhere = { ...newRun('conf-other', t0) };
      await assert.rejects(
        b.settle('w', [{ ...base, runs: [elsewhere], awaits: [{ id: elsewhere.id }] }], t0 + 1),
        (err: Error) => err instanceof ConfigError && /parent's queue/.test(err.message),
      );
      const k = child(t0, '1');
      await assert.rejects(
        b.settle('w', [{ ...base, runs: [k], awaits: [{ id: newRunId(Q, t0) }] }], t0 + 1),
        (err: Error) => err instanceof ConfigError && /not one of the runs it spawns/.test(err.message),
      );
      await assert.rejects(
        b.settle('w', [{ ...base, runs: [], awaits: [] }], t0 + 1),
        (err: Error) => err instanceof ConfigError && /no runs/.test(err.message),
      );
      assertFields(await getRun(b, parentId), { state: 'active' }, 'nothing written');
      assert.equal(await b.getRun(k.id), null);
    });
  });
}
