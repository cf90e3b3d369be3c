// Fault: workflows (docs/workflows.md) while worker processes are killed with SIGKILL and Redis is
// killed with SIGKILL and restarted (its own redis-server, AOF appendfsync always):
// - a chord of 1,000 steps, and a 3-level DAG (4 steps, 2 joins of 2, 1 join of those), run by 3
//   worker processes; and the same DAG twice with its steps spread over three queues (every edge
//   but one crossing queues: the relay between slots, docs/workflows.md), one made before the
//   workers start, one made in flight just before Redis is killed;
// - each dependent step exists once (its run created once, with the workflow) and starts only after
//   every step it waits for succeeded: its first execution starts after their last success;
// - its input is the full, ordered result list (the chord: count 1,000, the exact sum), the DAG's
//   the exact sums; a handler may run more than once (at least once: only in a killed process,
//   every execution but the last), and the fan-in stays exact anyway.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { chord, dag, group } from '../../src/index.ts';
import { waitFor } from '../helpers.ts';
import { figure, type Proc, START_LIMIT_MS, workflowKillRig } from './harness.ts';

const PARTS = 1000;
const WORKERS = 3;
/** How long a part works: the chord takes several seconds, so kills and the restart land mid-flow. */
const PART_MS = 80;
const MAX_KILLS = 10;

describe('fault: workflows while workers are killed and Redis restarts', () => {
  it('makes each dependent ready once, with the full result list', { timeout: 600_000 }, async () => {
    const QUEUES = ['wflow', 'wflow2', 'wflow3'];
    const rig = await workflowKillRig({ label: 'errand-fault-workflow', prefix: 'fault-wf', queues: QUEUES, partMs: PART_MS });
    const { procs, redis, app, broker } = rig;
    // The same tasks as the workers' (test/faults/fixtures/tasks.ts), to build the shapes here.
    const WF = { queue: 'wflow', retries: { maxAttempts: 1 }, retention: 3_600_000 } as const;
    const part = app.task('wf_part', { ...WF, input: z.number().int() }, (n) => n * 2);
    const gather = app.task('wf_gather', { ...WF, input: z.array(z.number().int()) }, (ns) => ({
      count: ns.length,
      sum: ns.reduce((a, b) => a + b, 0),
    }));
    const pair = app.task('wf_pair', { ...WF, input: z.object({ a: z.number().int(), b: z.number().int() }) }, ({ a, b }) => a + b);
    // Every queue's counts, summed.
    const counts = async () => {
      const all = await broker.counts(QUEUES);
      const sum = { waiting: 0, queued: 0, scheduled: 0, active: 0, succeeded: 0, failed: 0, cancelled: 0 };
      for (const q of QUEUES) for (const key of Object.keys(sum) as (keyof typeof sum)[]) sum[key] += all[q]?.[key] ?? 0;
      return sum;
    };
    // The DAG of `small` with its steps in three queues.
    const acrossQueues = () =>
      app.workflow(
        dag({
          a1: part.step(1),
          a2: part.step(2, { queue: 'wflow2' }),
          a3: part.step(3, { queue: 'wflow3' }),
          a4: part.step(4, { queue: 'wflow2' }),
          b1: pair.join({ a: 'a1', b: 'a2' }, { queue: 'wflow3' }),
          b2: pair.join({ a: 'a3', b: 'a4' }),
          c: pair.join({ a: 'b1', b: 'b2' }, { queue: 'wflow2' }),
        }),
      );
    const workers: Proc[] = [];
    let kills = 0;
    let restarts = 0;
    try {
      const big = await app.workflow(chord(group(...Array.from({ length: PARTS }, (_, i) => part.step(i))), gather.next()));
      const small = await app.workflow(
        dag({
          a1: part.step(1),
          a2: part.step(2),
          a3: part.step(3),
          a4: part.step(4),
          b1: pair.join({ a: 'a1', b: 'a2' }),
          b2: pair.join({ a: 'a3', b: 'a4' }),
          c: pair.join({ a: 'b1', b: 'b2' }),
        }),
      );
      const across = [await acrossQueues()];
      for (let i = 0; i < WORKERS; i++) workers.push(rig.worker(`worker-${i}`));
      await waitFor(async () => (await counts()).succeeded > 50, { timeoutMs: START_LIMIT_MS, message: 'the first runs to succeed' });

      // Storm: a worker killed every 700 ms (and restarted), at most MAX_KILLS times, Redis killed
      // and restarted once in the middle, while steps still wait; then one more kill.
      const killOne = async () => {
        const i = kills % WORKERS;
        await procs.kill(workers[i]!, 'SIGKILL');
        kills++;
        workers[i] = rig.worker(`worker-${i}-after-kill-${kills}`);
      };
      let waitingAtRestart = 0;
      while (kills < MAX_KILLS) {
        const c = await counts().catch(() => undefined);
        if (c && c.waiting === 0 && c.queued === 0) break;
        await sleep(700);
        await killOne();
        if (kills === 3) {
          across.push(await acrossQueues());
          waitingAtRestart = (await counts()).waiting;
          await redis.kill9();
          await redis.start();
          restarts++;
        }
      }
      await killOne();

      const done = await waitFor(
        async () => {
          const c = await counts();
          return c.waiting + c.queued + c.scheduled + c.active === 0 ? c : undefined;
        },
        { timeoutMs: START_LIMIT_MS, intervalMs: 50, message: 'every step finished' },
      );
      assert.ok(restarts === 1, 'Redis was restarted once');
      assert.ok(waitingAtRestart > 0, 'steps were still waiting when Redis was killed');
      assert.ok(kills >= 3, `workers were killed (got ${kills})`);
      assert.deepEqual(done, { waiting: 0, queued: 0, scheduled: 0, active: 0, succeeded: PARTS + 1 + 7 * 3, failed: 0, cancelled: 0 });

      // The values: the full list, in order (its sum is exact only if each part counted once).
      const expectedSum = 2 * ((PARTS * (PARTS - 1)) / 2);
      assert.deepEqual(await big.result({ timeout: 10_000 }), { count: PARTS, sum: expectedSum });
      const bigInfo = await big.info();
      const callback = bigInfo.runs.find((r) => r.task === 'wf_gather')!;
      assert.deepEqual(
        callback.input,
        Array.from({ length: PARTS }, (_, i) => 2 * i),
        'the callback got every result, in order',
      );
      assert.equal(bigInfo.runs.filter((r) => r.task === 'wf_gather').length, 1, 'the callback exists once');
      const r = await small.result({ timeout: 10_000 });
      assert.deepEqual(r, { a1: 2, a2: 4, a3: 6, a4: 8, b1: 6, b2: 14, c: 20 });
      for (const wf of across) assert.deepEqual(await wf.result({ timeout: 10_000 }), r, 'the DAG over three queues, the same values');

      // Ready once: every dependent's first execution starts after the last success of what it waits for.
      const runs = rig.executions();
      const lastSuccess = (ids: string[]) => Math.max(...ids.map((id) => runs.get(id)!.at(-1)!.endedAt ?? Number.POSITIVE_INFINITY));
      const smallInfo = await small.info();
      const acrossInfo = await Promise.all(across.map((wf) => wf.info()));
      for (const info of acrossInfo) {
        assert.equal(info.runs.length, 7, 'each step of a DAG over three queues exists once');
        assert.deepEqual(new Set(info.runs.map((x) => x.queue)), new Set(QUEUES), 'in three queues');
      }
      const byId = new Map([...bigInfo.runs, ...smallInfo.runs, ...acrossInfo.flatMap((i) => i.runs)].map((x) => [x.id, x]));
      for (const edgeSet of [bigInfo.edges, smallInfo.edges, ...acrossInfo.map((i) => i.edges)]) {
        const deps = new Map<string, string[]>();
        for (const e of edgeSet) deps.set(e.to, [...(deps.get(e.to) ?? []), e.from]);
        for (const [to, from] of deps) {
          const first = runs.get(to)?.[0];
          assert.ok(first, `dependent ${byId.get(to)?.task} executed`);
          assert.ok(first.startedAt >= lastSuccess(from), `dependent ${to} started after its ${from.length} dependencies succeeded`);
        }
      }
      // At least once, and again only after a kill: every execution but the last was in a killed process.
      const duplicates = rig.ranAgainOnlyAfterKills(workers);
      figure('workflow-kill', { parts: PARTS, kills, redisRestarts: restarts, duplicateExecutions: duplicates });
    } finally {
      await rig.close();
    }
  });
});
