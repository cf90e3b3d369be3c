/**
 * The broker conformance suite, section: workflow steps under flow control (docs/workflows.md,
 * docs/flow-control.md). A run of a workflow (or of a spawn) with a flow spec is held to its key's
 * and task's limits as an enqueued run is: it counts in its key only once queued (at creation, when
 * its last dependency is done, when a held root is released, when promoted, when replayed), and a
 * cancel of its workflow takes it out of its key (queued) or frees its slot (active), as a purge
 * does for a queued one. See `suite.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import type { Broker, BrokerInspector, FlowSpec, NewWorkflowRun, Reservation, SpawnSettlement } from '../../src/broker/types.ts';
import { newRunId } from '../../src/core/ids.ts';
import { type ConformanceContext, Q, RETAIN, assertFields, errorText, ids, newRun, on, workflowStep } from './context.ts';
import { Q2 } from './workflow-queues.ts';

const GROUP = 'conformance.wflimited';

/** A key limited to one active run and (with `rated`) one start a second. */
function spec(key: string, rated = false): FlowSpec {
  const f: FlowSpec = { group: GROUP, key, concurrency: 1 };
  if (rated) f.rate = { interval: 1000, burst: 1 };
  return f;
}

/** A run of a workflow in `queue` (default Q) with flow spec `flow`. */
function limited(now: number, flow: FlowSpec, over: Parameters<typeof workflowStep>[2] & { queue?: string } = {}): NewWorkflowRun {
  return { ...workflowStep(over.queue ?? Q, now, over), flow };
}

/** Each key of GROUP in `queue` with its [queued, active] counts, as the broker keeps them ({} without an inspector: not checked). */
async function keyCounts(b: Broker, queue = Q): Promise<Record<string, [number, number]> | undefined> {
  const i = b as Broker & Partial<BrokerInspector>;
  if (typeof i.flowKeys !== 'function') return undefined;
  const page = await i.flowKeys(queue, { sort: 'key', offset: 0, limit: 500 });
  return Object.fromEntries(page.keys.filter((k) => k.group === GROUP).map((k) => [k.key, [k.queued, k.active]]));
}

async function assertKeys(b: Broker, expected: Record<string, [number, number]>, label: string, queue = Q): Promise<void> {
  const got = await keyCounts(b, queue);
  if (got !== undefined) assert.deepStrictEqual(got, expected, `${label}: each key's [queued, active]`);
}

const ok = (r: Reservation, result: string | null = null) => ({
  id: r.id,
  attempt: r.attempt,
  outcome: 'succeeded' as const,
  result,
  retentionMs: RETAIN,
});

export function workflowLimitsConformance(c: ConformanceContext): void {
  const { open, test, getRun, reserveAll } = c;

  describe('workflow steps under flow control', () => {
    test("a fan-in step waits for its key once its dependencies are done; the key's limit and rate hold across workflows; keys take turns", async () => {
      const b = await open();
      const t0 = Date.now();
      const fanIns: NewWorkflowRun[] = [];
      for (const key of ['k', 'k', 'k', 'other']) {
        const h1 = workflowStep(Q, t0, { input: '1' });
        const h2 = workflowStep(Q, t0, { input: '2' });
        const f = limited(t0, spec(key, true), { dependsOn: on(h1, h2), inputFrom: 'list' });
        const id = newRunId(Q, t0);
        assert.deepStrictEqual(await b.createWorkflow({ id, runs: [h1, h2, f] }, t0), { id, created: true });
        fanIns.push(f);
      }
      assertFields(await getRun(b, fanIns[0]!.id), { state: 'waiting', flow: { group: GROUP, key: 'k' } }, 'a fan-in step');
      await assertKeys(b, {}, 'waiting steps count in no key');
      const headers = await reserveAll(b, 'w', t0 + 1);
      assert.equal(headers.runs.length, 8, 'the eight header steps, none of the fan-ins');
      assert.deepStrictEqual(
        await b.settle(
          'w',
          headers.runs.map((r) => ok(r, r.input)),
          t0 + 1,
        ),
        headers.runs.map(() => 'ok'),
      );
      await assertKeys(b, { k: [3, 0], other: [1, 0] }, 'the fan-ins queued under their keys');
      const keyOf = (r: Reservation) => fanIns.find((f) => f.id === r.id)?.flow?.key;
      const first = await reserveAll(b, 'w', t0 + 2);
      assert.deepStrictEqual(first.runs.map(keyOf).sort(), ['k', 'other'], 'one run of each key: k at its limit of 1');
      for (const r of first.runs) assert.equal(r.input, '[1,2]', 'the fan-in got its list');
      assert.deepStrictEqual((await reserveAll(b, 'w', t0 + 3)).runs, [], 'k is at its limit: its other steps wait, queued');
      await assertKeys(b, { k: [2, 1], other: [0, 1] }, 'one active per key');
      const waiting = fanIns.filter((f) => f.flow?.key === 'k' && !ids(first.runs).includes(f.id));
      for (const f of waiting) {
        assertFields(
          await getRun(b, f.id),
          { state: 'queued', flow: { group: GROUP, key: 'k', waiting: { reason: 'key_concurrency', active: 1, limit: 1 } } },
          'a step waiting for its key, its dependencies done',
        );
      }
      assert.deepStrictEqual(
        await b.settle(
          'w',
          first.runs.map((r) => ok(r)),
          t0 + 4,
        ),
        ['ok', 'ok'],
      );
      // The slot is free, but k's rate (one start a second, burst 1) holds it until t0 + 2 + 1000.
      const held = await reserveAll(b, 'w', t0 + 5);
      assert.deepStrictEqual(held.runs, [], 'held by its rate');
      assert.equal(held.nextAt, t0 + 1002, 'due when the rate lets k start again');
      const ran = new Set(ids(first.runs));
      for (const at of [t0 + 1002, t0 + 2002]) {
        const r = await reserveAll(b, 'w', at);
        assert.equal(r.runs.length, 1, `at ${at - t0}: one run of k, no more`);
        await assertKeys(b, { k: [at === t0 + 1002 ? 1 : 0, 1] }, `at ${at - t0}`);
        assert.deepStrictEqual((await reserveAll(b, 'w', at)).runs, [], 'no second one while the first is active');
        ran.add(r.runs[0]!.id);
        assert.deepStrictEqual(await b.settle('w', [ok(r.runs[0]!)], at), ['ok']);
      }
      assert.deepStrictEqual([...ran].sort(), ids(fanIns).sort(), 'every fan-in step ran once');
      await assertKeys(b, {}, 'every key forgotten once idle');
    });

    test('a workflow cancelled while its step is queued under a key frees the key; while active, its slot', async () => {
      const b = await open();
      const t0 = Date.now();
      const f = spec('k');
      const [a] = await b.enqueue([{ ...newRun(Q, t0), flow: f }], t0);
      assert.equal((await reserveAll(b, 'w', t0)).runs[0]?.id, a?.id, 'an enqueued run of k, active');
      // A root step of k, held behind the active run, and a step after it.
      const s1 = limited(t0, f, { input: '"s1"' });
      const d1 = workflowStep(Q, t0, { dependsOn: on(s1), inputFrom: 'value' });
      const w1 = newRunId(Q, t0);
      assert.deepStrictEqual(await b.createWorkflow({ id: w1, runs: [s1, d1] }, t0 + 1), { id: w1, created: true });
      const [e] = await b.enqueue([{ ...newRun(Q, t0 + 2), flow: f }], t0 + 2);
      await assertKeys(b, { k: [2, 1] }, 'the step and a later run queued under k');
      assert.deepStrictEqual(await b.cancelWorkflow(w1, t0 + 3), { outcome: 'cancelled', runs: 2 });
      await assertKeys(b, { k: [1, 1] }, 'the cancelled step left its key');
      assert.deepStrictEqual(
        await b.settle('w', [{ id: a!.id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN }], t0 + 4),
        ['ok'],
      );
      assert.deepStrictEqual(ids((await reserveAll(b, 'w', t0 + 5)).runs), [e!.id], 'the next run of k starts, not the cancelled step');
      assert.deepStrictEqual(
        await b.settle('w', [{ id: e!.id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN }], t0 + 6),
        ['ok'],
      );
      // A step of k active when its workflow is cancelled: its slot is freed at the cancel.
      const s2 = limited(t0 + 7, f, { input: '"s2"' });
      const w2 = newRunId(Q, t0 + 7);
      assert.deepStrictEqual(await b.createWorkflow({ id: w2, runs: [s2] }, t0 + 7), { id: w2, created: true });
      const [e2] = await b.enqueue([{ ...newRun(Q, t0 + 8), flow: f }], t0 + 8);
      assert.deepStrictEqual(ids((await reserveAll(b, 'w', t0 + 9)).runs), [s2.id], 'the step first (queued first)');
      assert.deepStrictEqual(await b.cancelWorkflow(w2, t0 + 10), { outcome: 'cancelled', runs: 1 });
      await assertKeys(b, { k: [1, 0] }, 'its slot freed');
      assert.deepStrictEqual(ids((await reserveAll(b, 'w', t0 + 11)).runs), [e2!.id], 'the next run of k starts');
      // A delayed root step counts in its key once promoted.
      const s3 = limited(t0 + 12, f, { input: '"s3"', runAt: t0 + 100 });
      const w3 = newRunId(Q, t0 + 12);
      assert.deepStrictEqual(await b.createWorkflow({ id: w3, runs: [s3] }, t0 + 12), { id: w3, created: true });
      assertFields(await getRun(b, s3.id), { state: 'scheduled' }, 'the delayed step');
      await assertKeys(b, { k: [0, 1] }, 'a scheduled step counts in no key');
      assert.deepStrictEqual((await reserveAll(b, 'w', t0 + 100)).runs, [], 'due, but k is at its limit');
      await assertKeys(b, { k: [1, 1] }, 'promoted: queued under k');
      assert.deepStrictEqual(
        await b.settle('w', [{ id: e2!.id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN }], t0 + 101),
        ['ok'],
      );
      assert.deepStrictEqual(ids((await reserveAll(b, 'w', t0 + 102)).runs), [s3.id]);
    });

    test('a purge takes a queued step out of its key; a step it makes ready (continue) joins its own key', async () => {
      const b = (await open()) as Broker & Partial<BrokerInspector>;
      if (typeof b.purge !== 'function') return;
      const t0 = Date.now();
      const s = limited(t0, spec('k'), { input: '"s"' });
      const d = limited(t0, spec('d'), { dependsOn: [{ id: s.id, onFailure: 'continue' }], inputFrom: 'list' });
      const id = newRunId(Q, t0);
      assert.deepStrictEqual(await b.createWorkflow({ id, runs: [s, d] }, t0), { id, created: true });
      await assertKeys(b, { k: [1, 0] }, 'the root queued under k');
      assert.equal(await b.purge(Q, t0 + 1), 1, 'the queued step purged (counts as cancelled for what waits for it)');
      await assertKeys(b, { d: [1, 0] }, 'k forgotten; the step after it queued under d');
      const r = (await reserveAll(b, 'w', t0 + 2)).runs;
      assert.deepStrictEqual(ids(r), [d.id]);
      assert.equal(r[0]!.input, '[null]', 'run anyway, with null for the purged step');
      await assertKeys(b, { d: [0, 1] }, 'active under d');
    });

    test('spawned runs keep their limits, and a replayed step goes back under its key', async () => {
      const b = await open();
      const t0 = Date.now();
      const [p] = await b.enqueue([newRun(Q, t0)], t0);
      const parent = (await reserveAll(b, 'w', t0)).runs[0]!;
      assert.equal(parent.id, p?.id);
      const kids = [0, 1, 2].map((i) => ({ ...newRun(Q, t0), input: String(i), flow: spec('k') }));
      const cont = { ...newRun(Q, t0), input: 'null', dependsOn: ids(kids).map((id) => ({ id })), inputFrom: 'list' as const };
      const spawn: SpawnSettlement = {
        id: parent.id,
        attempt: parent.attempt,
        outcome: 'spawned',
        runs: [...kids, cont],
        awaits: [{ id: cont.id }],
        resultFrom: 'value',
        retentionMs: RETAIN,
      };
      assert.deepStrictEqual(await b.settle('w', [spawn], t0 + 1), ['ok']);
      await assertKeys(b, { k: [3, 0] }, 'the spawned runs queued under k');
      const first = (await reserveAll(b, 'w', t0 + 2)).runs;
      assert.equal(first.length, 1, 'one at a time');
      assert.deepStrictEqual(
        await b.settle('w', [{ id: first[0]!.id, attempt: 1, outcome: 'failed', error: errorText('boom'), retentionMs: RETAIN }], t0 + 3),
        ['ok'],
      );
      assertFields(await getRun(b, cont.id), { state: 'cancelled' }, 'the continuation, after a failed page');
      for (const at of [t0 + 4, t0 + 5]) {
        const r = (await reserveAll(b, 'w', at)).runs;
        assert.equal(r.length, 1, 'one at a time');
        assert.deepStrictEqual(await b.settle('w', [ok(r[0]!, r[0]!.input)], at), ['ok']);
      }
      await assertKeys(b, {}, 'nothing left under k');
      assert.deepStrictEqual(await b.retry(first[0]!.id, t0 + 6), { outcome: 'queued' });
      await assertKeys(b, { k: [1, 0] }, 'the replayed page queued under k');
      assertFields(await getRun(b, cont.id), { state: 'waiting' }, 'the continuation waits again');
      const again = (await reserveAll(b, 'w', t0 + 7)).runs;
      assert.deepStrictEqual(ids(again), [first[0]!.id]);
      assert.deepStrictEqual(await b.settle('w', [ok(again[0]!, again[0]!.input)], t0 + 8), ['ok']);
      const last = (await reserveAll(b, 'w', t0 + 9)).runs;
      assert.deepStrictEqual(ids(last), [cont.id]);
      assert.equal(last[0]!.input, '[0,1,2]');
      assert.deepStrictEqual(await b.settle('w', [ok(last[0]!, '3')], t0 + 10), ['ok']);
      assertFields(await getRun(b, parent.id), { state: 'succeeded', result: '3' }, 'the parent');
    });

    test('steps in another queue than what they wait for (on Redis, through the relay) keep their limits', async () => {
      const b = await open();
      const t0 = Date.now();
      const fanIns: NewWorkflowRun[] = [];
      const roots: NewWorkflowRun[] = [];
      for (let i = 0; i < 2; i++) {
        // A root of Q2 (held until its workflow is complete, on Redis), then a fan-in in Q2 after a step of Q.
        const root = limited(t0, spec('r'), { queue: Q2, input: String(i) });
        const h = workflowStep(Q, t0, { input: String(i) });
        const f = limited(t0, spec('k'), { queue: Q2, dependsOn: on(h, root), inputFrom: 'list' });
        const id = newRunId(Q, t0);
        assert.deepStrictEqual(await b.createWorkflow({ id, runs: [h, root, f] }, t0), { id, created: true });
        roots.push(root);
        fanIns.push(f);
      }
      await assertKeys(b, { r: [2, 0] }, 'the roots queued under r', Q2);
      const rs = (await reserveAll(b, 'w', t0 + 1, { queues: [Q2] })).runs;
      assert.deepStrictEqual(ids(rs), [roots[0]!.id], 'one root of r at a time');
      const hs = (await reserveAll(b, 'w', t0 + 1)).runs;
      assert.equal(hs.length, 2);
      assert.deepStrictEqual(
        await b.settle(
          'w',
          [...hs, ...rs].map((r) => ok(r, r.input)),
          t0 + 2,
        ),
        ['ok', 'ok', 'ok'],
      );
      await assertKeys(b, { r: [1, 0], k: [1, 0] }, 'the first fan-in ready, under k', Q2);
      const next = (await reserveAll(b, 'w', t0 + 3, { queues: [Q2] })).runs;
      assert.deepStrictEqual(ids(next).sort(), [roots[1]!.id, fanIns[0]!.id].sort(), 'one of r, one of k');
      assert.deepStrictEqual(
        await b.settle(
          'w',
          next.map((r) => ok(r, r.input)),
          t0 + 4,
        ),
        ['ok', 'ok'],
      );
      const lastOne = (await reserveAll(b, 'w', t0 + 5, { queues: [Q2] })).runs;
      assert.deepStrictEqual(ids(lastOne), [fanIns[1]!.id]);
      assert.equal(lastOne[0]!.input, '[1,1]');
      assert.deepStrictEqual(await b.settle('w', [ok(lastOne[0]!)], t0 + 6), ['ok']);
      await assertKeys(b, {}, 'every key forgotten', Q2);
    });
  });
}
