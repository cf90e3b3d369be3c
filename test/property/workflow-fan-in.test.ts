// Property: workflow fan-in and failure propagation (docs/workflows.md) against a model, on the
// SQLite broker and on Redis. Random DAGs (up to 12 steps, each step's edges under one policy:
// cancel, skip or continue), random steps failing for good, runs settled in random order, in
// concurrent batches, some executed twice (a lease left to expire, the run reserved again by
// another worker, both executions settling: the late one is lost). Each step must end in the state
// the model says, run only if the model says it runs, and get exactly the input the model builds
// from its dependencies' results, every time it is handed out. Bounded: 25 cases per broker; and
// 25 more with the steps spread at random over three queues (on Redis every edge between queues
// goes through the relay: docs/workflows.md).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { RedisBroker } from '../../src/broker/redis/redis-broker.ts';
import { SqliteBroker } from '../../src/broker/sqlite/sqlite-broker.ts';
import type { Broker, DependencyPolicy, NewWorkflowRun, Reservation, RunState } from '../../src/broker/types.ts';
import { newRunId } from '../../src/core/ids.ts';
import { dropRedisPrefixes, REDIS_URL } from '../fixtures/brokers.ts';
import { tempDir, uniquePrefix } from '../helpers.ts';

const Q = 'prop';
const CASES = 25;

interface Spec {
  deps: number[];
  policy: DependencyPolicy;
  fails: boolean;
}

const dagArb = fc.integer({ min: 2, max: 12 }).chain((n) =>
  fc.tuple(
    ...Array.from({ length: n }, (_, i) =>
      fc.record({
        deps: i === 0 ? fc.constant([]) : fc.uniqueArray(fc.integer({ min: 0, max: i - 1 }), { maxLength: Math.min(i, 4) }),
        policy: fc.constantFrom<DependencyPolicy>('cancel', 'skip', 'continue'),
        fails: fc.integer({ min: 0, max: 3 }).map((n) => n === 0),
      }),
    ),
  ),
);

/** What the broker must do: final state, and the input when the step runs. */
function model(specs: Spec[]): { state: RunState; input?: string; result: string | null }[] {
  const out: { state: RunState; input?: string; result: string | null }[] = [];
  specs.forEach((s, i) => {
    const depOk = s.deps.map((d) => out[d]!.state === 'succeeded');
    if (s.deps.length && depOk.includes(false) && s.policy !== 'continue') {
      out.push(s.policy === 'cancel' ? { state: 'cancelled', result: null } : { state: 'succeeded', result: null });
      return;
    }
    const input = s.deps.length ? `[${s.deps.map((d, j) => (depOk[j] ? (out[d]!.result ?? 'null') : 'null')).join(',')}]` : `"in${i}"`;
    out.push(s.fails ? { state: 'failed', input, result: null } : { state: 'succeeded', input, result: `"r${i}"` });
  });
  return out;
}

async function check(b: Broker, specs: Spec[], seed: number, queues: readonly string[] = [Q]): Promise<void> {
  let rnd = seed;
  const random = () => {
    rnd = (rnd * 1103515245 + 12345) % 2147483648;
    return rnd / 2147483648;
  };
  let now = Date.now();
  const runs: NewWorkflowRun[] = specs.map((_, i) => {
    const queue = queues[Math.floor(random() * queues.length)] as string;
    return { id: newRunId(queue, now), task: 't', queue, input: `"in${i}"`, priority: 0, runAt: now };
  });
  specs.forEach((s, i) => {
    if (!s.deps.length) return;
    runs[i]!.dependsOn = s.deps.map((d) => ({ id: runs[d]!.id, onFailure: s.policy }));
    runs[i]!.inputFrom = 'list';
  });
  const index = new Map(runs.map((r, i) => [r.id, i]));
  await b.createWorkflow({ id: newRunId(runs[0]!.queue, now), runs }, now);
  const expected = model(specs);
  const seen: Reservation[] = [];
  for (let guard = 0; guard < 200; guard++) {
    now += 10;
    const got = (await b.reserve({ workerId: 'w1', queues: [...queues], max: 1 + Math.floor(random() * 4), leaseMs: 5, now })).runs;
    if (got.length === 0) {
      const counts = await b.counts([...queues]);
      if (queues.every((q) => counts[q]!.queued + counts[q]!.active + counts[q]!.waiting === 0)) break;
      continue;
    }
    seen.push(...got);
    // Some executions are duplicated: the lease expires and another worker gets the run again.
    let batch = got.map((r) => ({ r, worker: 'w1' }));
    if (random() < 0.4) {
      now += 100;
      const again = (await b.reserve({ workerId: 'w2', queues: [...queues], max: 100, leaseMs: 60_000, now })).runs;
      seen.push(...again);
      batch = [...again.map((r) => ({ r, worker: 'w2' })), ...batch];
    }
    batch.sort(() => random() - 0.5);
    now += 1;
    const settleOne = ({ r, worker }: { r: Reservation; worker: string }) => {
      const i = index.get(r.id)!;
      return b.settle(
        worker,
        [
          specs[i]!.fails
            ? { id: r.id, attempt: r.attempt, outcome: 'failed' as const, error: '{"name":"Error","message":"x"}', retentionMs: 60_000 }
            : { id: r.id, attempt: r.attempt, outcome: 'succeeded' as const, result: `"r${i}"`, retentionMs: random() < 0.2 ? 0 : 60_000 },
        ],
        now,
      );
    };
    if (random() < 0.5) await Promise.all(batch.map(settleOne));
    else for (const x of batch) await settleOne(x);
  }
  for (const r of seen) {
    const i = index.get(r.id)!;
    assert.notEqual(expected[i]!.input, undefined, `step ${i} ran, but the model says it does not`);
    assert.equal(r.input, expected[i]!.input, `step ${i}'s input`);
  }
  for (const [i, r] of runs.entries()) {
    const rec = await b.getRun(r.id);
    if (!rec) {
      assert.equal(expected[i]!.state, 'succeeded', `step ${i} deleted at once (retention 0) only if it succeeded`);
      continue;
    }
    assert.equal(rec.state, expected[i]!.state, `step ${i}'s state (specs ${JSON.stringify(specs)})`);
    if (expected[i]!.input !== undefined)
      assert.ok(
        seen.some((s) => s.id === r.id),
        `step ${i} ran`,
      );
  }
}

const prefixes: string[] = [];
const brokers: { name: string; open: () => Promise<Broker> }[] = [
  { name: 'sqlite', open: async () => new SqliteBroker({ path: join(tempDir('errand-prop-wf'), 'p.db'), maxLeaseLosses: 1000 }) },
  {
    name: 'redis',
    open: async () => {
      const prefix = uniquePrefix('errand-prop-wf');
      prefixes.push(prefix);
      return new RedisBroker({ url: REDIS_URL, prefix, maxLeaseLosses: 1000 });
    },
  },
];

for (const { name, open } of brokers) {
  describe(`property: workflow fan-in on ${name}`, () => {
    const opened: Broker[] = [];
    after(async () => {
      for (const b of opened) await b.close();
    });
    it('matches the model: states, who runs, and every input', { timeout: 120_000 }, async () => {
      await fc.assert(
        fc.asyncProperty(dagArb, fc.integer({ min: 1, max: 2 ** 30 }), async (specs, seed) => {
          const b = await open();
          opened.push(b);
          await check(b, specs as Spec[], seed);
        }),
        { numRuns: CASES },
      );
    });
    it('matches the model with the steps spread over three queues', { timeout: 120_000 }, async () => {
      await fc.assert(
        fc.asyncProperty(dagArb, fc.integer({ min: 1, max: 2 ** 30 }), async (specs, seed) => {
          const b = await open();
          opened.push(b);
          await check(b, specs as Spec[], seed, [Q, `${Q}-x`, `${Q}-y`]);
        }),
        { numRuns: CASES },
      );
    });
  });
}

// Every key of the prefixes used (by prefix, never a flush).
after(async () => {
  await dropRedisPrefixes(prefixes, REDIS_URL);
});
