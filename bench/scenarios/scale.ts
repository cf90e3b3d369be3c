/**
 * Scenario 6, scale: 1, 2 and 4 worker processes (concurrency 50 each, results not kept) on one
 * Redis, draining the same pre-filled queue. On a 2-core machine, more processes than cores compete
 * with Redis itself for the CPU: the figures show the cost of coordination, not a speed-up.
 */
import { Collector, type Ctx, errMessage, type ScenarioResult } from '../lib/context.ts';
import { drain } from '../lib/drain.ts';
import type { Child } from '../lib/proc.ts';
import { WARMUP_RUNS } from './process.ts';

export async function scaleScenario(ctx: Ctx): Promise<ScenarioResult> {
  const s = ctx.sizes;
  const col = new Collector();
  const cpu = new Collector();
  const notes: string[] = [];
  const peers = ctx.peers.filter((p) => p.id !== 'errand-sqlite');
  for (const k of s.scaleProcesses) {
    const metric = `${k} worker process${k > 1 ? 'es' : ''}`;
    for (const p of peers) {
      const workers: Child[] = [];
      try {
        for (let i = 0; i < k; i++) workers.push(await ctx.child(`scale-${p.id}-${k}-${i}`, p.driver));
      } catch (err) {
        col.fail(metric, p.id, errMessage(err), 'runs/s');
        await Promise.all(workers.map((w) => w.close()));
        continue;
      }
      try {
        for (let round = 0; round < s.rounds; round++) {
          try {
            const url = await p.freshUrl();
            for (const w of workers) await w.request({ cmd: 'open', url, keep: false }, 30_000);
            // A warm-up (not counted), as in the processing scenario.
            const warm = Math.min(WARMUP_RUNS * k, s.scaleRuns);
            await workers[0]!.request({ cmd: 'enqueue', mode: 'batch', n: warm, batch: s.batchSize, offset: 1e9 }, 120_000);
            await drain(workers, warm, s.scaleConcurrency, 60_000);
            await workers[0]!.request({ cmd: 'enqueue', mode: 'batch', n: s.scaleRuns, batch: s.batchSize }, 300_000);
            const redisCpu0 = await ctx.redis.cpuUs();
            const r = await drain(workers, s.scaleRuns, s.scaleConcurrency, Math.max(60_000, s.scaleRuns * 10));
            const redisCpu = (await ctx.redis.cpuUs()) - redisCpu0;
            col.add(metric, p.id, r.perSecond, 'runs/s');
            cpu.add(metric, `${p.id} client`, r.workerCpuUs / s.scaleRuns, 'µs');
            cpu.add(metric, `${p.id} redis`, redisCpu / s.scaleRuns, 'µs');
          } catch (err) {
            col.fail(metric, p.id, errMessage(err), 'runs/s');
            ctx.log(`  scale ${metric} ${p.id}: ${errMessage(err)}`);
          } finally {
            for (const w of workers) await w.request({ cmd: 'close' }, 30_000).catch(() => undefined);
          }
        }
      } finally {
        await Promise.all(workers.map((w) => w.close()));
      }
    }
    ctx.log(`  scale: ${metric} done`);
  }
  notes.push(
    `${s.scaleRuns.toLocaleString('en-US')} runs queued beforehand, drained by k worker processes of concurrency ${s.scaleConcurrency} each, results not kept; ` +
      `after a warm-up of ${WARMUP_RUNS} runs per process, drained and not counted.`,
  );
  return { title: 'Scale: worker processes on one Redis', metrics: col.figures(), cpu: cpu.figures(), notes };
}
