/**
 * Scenario 2, processing: no-op runs/s at concurrency 1, 50 and 100, with finished runs kept (1 day,
 * with their result) and without (deleted as they finish). The queue is filled first (batch API),
 * then the worker (its own process) is started and timed until every outcome is stored. Each
 * measurement follows a warm-up on the same session (a few hundred runs queued and drained, not
 * counted: JIT, connections, scripts loaded), as in the enqueue scenario.
 */
import { Collector, type Ctx, errMessage, type ScenarioResult } from '../lib/context.ts';
import { drain } from '../lib/drain.ts';
import type { Child } from '../lib/proc.ts';

/** Runs queued and drained before each measurement, not counted. */
export const WARMUP_RUNS = 500;

export async function processScenario(ctx: Ctx): Promise<ScenarioResult> {
  const s = ctx.sizes;
  const col = new Collector();
  const cpu = new Collector();
  const notes: string[] = [];
  const configs: { metric: string; concurrency: number; keep: boolean; n: number }[] = [];
  for (const concurrency of [1, 50, 100])
    for (const keep of [true, false])
      configs.push({
        metric: `c=${concurrency}, ${keep ? 'results kept' : 'results not kept'}`,
        concurrency,
        keep,
        n: concurrency === 1 ? s.processC1 : s.processMany,
      });
  const children = new Map<string, Child>();
  for (const p of ctx.peers) {
    try {
      children.set(p.id, await ctx.child(`process-${p.id}`, p.driver));
    } catch (err) {
      notes.push(`${p.label}: could not start (${errMessage(err)})`);
    }
  }
  try {
    for (const cfg of configs) {
      for (let round = 0; round < s.rounds; round++) {
        for (const p of ctx.peers) {
          const c = children.get(p.id);
          if (!c) continue;
          try {
            await c.request({ cmd: 'open', url: await p.freshUrl(), keep: cfg.keep }, 30_000);
            const warm = Math.min(WARMUP_RUNS, cfg.n);
            await c.request({ cmd: 'enqueue', mode: 'batch', n: warm, batch: s.batchSize, offset: 1e9 }, 120_000);
            await drain([c], warm, cfg.concurrency, 60_000);
            await c.request({ cmd: 'enqueue', mode: 'batch', n: cfg.n, batch: s.batchSize }, 120_000);
            const redisCpu0 = await ctx.redis.cpuUs();
            const r = await drain([c], cfg.n, cfg.concurrency, Math.max(60_000, cfg.n * 10));
            const redisCpu = (await ctx.redis.cpuUs()) - redisCpu0;
            col.add(cfg.metric, p.id, r.perSecond, 'runs/s');
            cpu.add(cfg.metric, `${p.id} client`, r.workerCpuUs / cfg.n, 'µs');
            if (p.id !== 'errand-sqlite') cpu.add(cfg.metric, `${p.id} redis`, redisCpu / cfg.n, 'µs');
            await c.request({ cmd: 'close' }, 30_000);
          } catch (err) {
            col.fail(cfg.metric, p.id, errMessage(err), 'runs/s');
            ctx.log(`  process ${cfg.metric} ${p.id}: ${errMessage(err)}`);
            await c.request({ cmd: 'close' }, 30_000).catch(() => undefined);
          }
        }
      }
      ctx.log(`  process: ${cfg.metric} done`);
    }
  } finally {
    await Promise.all([...children.values()].map((c) => c.close()));
  }
  notes.push(
    `Runs per round: ${s.processC1.toLocaleString('en-US')} at concurrency 1, ${s.processMany.toLocaleString('en-US')} at 50 and 100, queued beforehand. ` +
      'Timed from the start command to the moment the broker reports no run waiting or active. ' +
      `Before each measurement, a warm-up on the same session: ${WARMUP_RUNS} runs queued and drained, not counted. ` +
      '"Results kept": finished runs kept 1 day with their result (Errand default retention; BullMQ removeOnComplete {age: 86400}); ' +
      '"not kept": deleted as they finish (Errand retention.succeeded 0; BullMQ removeOnComplete true).',
  );
  return { title: 'Processing no-op runs', metrics: col.figures(), cpu: cpu.figures(), notes };
}
