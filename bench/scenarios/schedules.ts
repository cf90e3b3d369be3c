/**
 * Scenario: the cost of schedules to the reserve path. No-op runs/s at concurrency 50 (results
 * kept), on fresh storage with no schedule and with 10,000 schedules of the worker's queue stored
 * (yearly, so none fires during the measurement: what is measured is the workers' firing loop and
 * the storage beside the runs, not the runs schedules create). Errand only (BullMQ and Celery have
 * no leaderless schedules to compare). Target: within 5% of none.
 */
import { connectBroker } from '../../src/broker/connect.ts';
import { guardBroker } from '../../src/broker/shared/guard.ts';
import { DEFAULT_POLICIES, scheduleDefinition } from '../../src/schedule/plan.ts';
import { compileSchedule } from '../../src/schedule/spec.ts';
import { Collector, type Ctx, errMessage, type ScenarioResult } from '../lib/context.ts';
import { drain } from '../lib/drain.ts';
import type { Child } from '../lib/proc.ts';
import { WARMUP_RUNS } from './process.ts';

const CONCURRENCY = 50;
const QUEUE = 'bench';

/** Stores `n` yearly schedules of the bench queue on the storage at `url`. */
async function storeSchedules(url: string, n: number): Promise<void> {
  const broker = guardBroker(await connectBroker(url));
  try {
    const schedule = compileSchedule({ cron: '0 0 1 1 *' });
    const now = Date.now();
    for (let i = 0; i < n; i += 200) {
      await Promise.all(
        Array.from({ length: Math.min(200, n - i) }, (_, j) =>
          broker.upsertSchedule(
            scheduleDefinition(
              {
                id: `bench-${i + j}`,
                queue: QUEUE,
                task: 'bench_noop',
                schedule,
                input: '{"username":"u","email":"e"}',
                policies: DEFAULT_POLICIES,
                version: 1,
              },
              now,
            ),
            now,
          ),
        ),
      );
    }
  } finally {
    await broker.close();
  }
}

export async function schedulesScenario(ctx: Ctx): Promise<ScenarioResult> {
  const s = ctx.sizes;
  const col = new Collector();
  const notes: string[] = [];
  const peers = ctx.peers.filter((p) => p.driver === 'errand');
  const counts = [0, 10_000];
  const children = new Map<string, Child>();
  for (const p of peers) {
    try {
      children.set(p.id, await ctx.child(`schedules-${p.id}`, p.driver));
    } catch (err) {
      notes.push(`${p.label}: could not start (${errMessage(err)})`);
    }
  }
  try {
    for (let round = 0; round < s.rounds; round++) {
      for (const count of counts) {
        const metric = `c=${CONCURRENCY}, ${count.toLocaleString('en-US')} schedules stored`;
        for (const p of peers) {
          const c = children.get(p.id);
          if (!c) continue;
          try {
            const url = await p.freshUrl();
            if (count) await storeSchedules(url, count);
            await c.request({ cmd: 'open', url, keep: true }, 30_000);
            const warm = Math.min(WARMUP_RUNS, s.processMany);
            await c.request({ cmd: 'enqueue', mode: 'batch', n: warm, batch: s.batchSize, offset: 1e9 }, 120_000);
            await drain([c], warm, CONCURRENCY, 60_000);
            await c.request({ cmd: 'enqueue', mode: 'batch', n: s.processMany, batch: s.batchSize }, 120_000);
            const r = await drain([c], s.processMany, CONCURRENCY, Math.max(60_000, s.processMany * 10));
            col.add(metric, p.id, r.perSecond, 'runs/s');
            await c.request({ cmd: 'close' }, 30_000);
          } catch (err) {
            col.fail(metric, p.id, errMessage(err), 'runs/s');
            ctx.log(`  schedules ${metric} ${p.id}: ${errMessage(err)}`);
            await c.request({ cmd: 'close' }, 30_000).catch(() => undefined);
          }
        }
      }
      ctx.log(`  schedules: round ${round + 1} done`);
    }
  } finally {
    await Promise.all([...children.values()].map((c) => c.close()));
  }
  notes.push(
    `Runs per round: ${s.processMany.toLocaleString('en-US')} no-op runs queued beforehand, drained at concurrency ${CONCURRENCY} by one worker that fires schedules (the default), ` +
      "on fresh storage holding no schedule, then 10,000 schedules of the worker's queue (yearly: none due during the measurement). " +
      `Before each measurement a warm-up of ${WARMUP_RUNS} runs. Target: throughput with 10,000 schedules within 5% of none.`,
  );
  return { title: 'Reserve throughput with schedules stored', metrics: col.figures(), notes };
}
