/**
 * Scenario: fan-out / fan-in. Flows of children and a parent that runs once they all succeeded and
 * reads their results: Errand's chord (docs/workflows.md) against BullMQ's FlowProducer flows. The
 * flows are created first (timed: flows created per second), then one worker process (concurrency
 * 50) is timed until every child and every parent has finished (runs per second, parents included).
 * Results kept (Errand's default retention; BullMQ removeOnComplete {age: 86400}).
 */
import { Collector, type Ctx, errMessage, type ScenarioResult } from '../lib/context.ts';
import { drain } from '../lib/drain.ts';
import type { Child } from '../lib/proc.ts';

const CONCURRENCY = 50;

export async function flowScenario(ctx: Ctx): Promise<ScenarioResult> {
  const s = ctx.sizes;
  const col = new Collector();
  const cpu = new Collector();
  const notes: string[] = [];
  const configs = [
    { metric: `${s.flows} flows of ${s.flowChildren} children`, flows: s.flows, children: s.flowChildren },
    { metric: `1 flow of ${s.flowFanIn.toLocaleString('en-US')} children`, flows: 1, children: s.flowFanIn },
  ];
  const children = new Map<string, Child>();
  for (const p of ctx.peers) {
    try {
      children.set(p.id, await ctx.child(`flow-${p.id}`, p.driver));
    } catch (err) {
      notes.push(`${p.label}: could not start (${errMessage(err)})`);
    }
  }
  try {
    for (const cfg of configs) {
      const n = cfg.flows * (cfg.children + 1);
      for (let round = 0; round < s.rounds; round++) {
        for (const p of ctx.peers) {
          const c = children.get(p.id);
          if (!c) continue;
          try {
            await c.request({ cmd: 'open', url: await p.freshUrl(), keep: true }, 30_000);
            // Warm-up, not counted: two small flows created and drained.
            await c.request({ cmd: 'flows', flows: 2, children: 20 }, 60_000);
            await drain([c], 2 * 21, CONCURRENCY, 60_000);
            const created = await c.request<{ type: string; ms: number }>(
              { cmd: 'flows', flows: cfg.flows, children: cfg.children },
              300_000,
            );
            col.add(`create: ${cfg.metric}`, p.id, cfg.flows / (created.ms / 1000), 'flows/s');
            const redisCpu0 = await ctx.redis.cpuUs();
            const r = await drain([c], n, CONCURRENCY, Math.max(60_000, n * 10));
            const redisCpu = (await ctx.redis.cpuUs()) - redisCpu0;
            col.add(`run: ${cfg.metric}`, p.id, r.perSecond, 'runs/s');
            cpu.add(`run: ${cfg.metric}`, `${p.id} client`, r.workerCpuUs / n, 'µs');
            if (p.id !== 'errand-sqlite') cpu.add(`run: ${cfg.metric}`, `${p.id} redis`, redisCpu / n, 'µs');
            await c.request({ cmd: 'close' }, 30_000);
          } catch (err) {
            col.fail(`run: ${cfg.metric}`, p.id, errMessage(err), 'runs/s');
            ctx.log(`  flow ${cfg.metric} ${p.id}: ${errMessage(err)}`);
            await c.request({ cmd: 'close' }, 30_000).catch(() => undefined);
          }
        }
      }
      ctx.log(`  flow: ${cfg.metric} done`);
    }
  } finally {
    await Promise.all([...children.values()].map((c) => c.close()));
  }
  notes.push(
    'Each flow: children (no-op runs) and one parent that gets their results once all succeeded (Errand: chord(group(...), collect.next()), ' +
      "the list as its input; BullMQ: FlowProducer.add with children, the parent calling job.getChildrenValues()). 'create' times creating the flows " +
      `one after another; 'run' times one worker process (concurrency ${CONCURRENCY}) from its start until no child or parent is left, parents counted as runs. ` +
      'Results kept (1 day). A warm-up of two flows of 20 children, drained and not counted, precedes each measurement.',
  );
  return { title: 'Fan-out / fan-in: chords against BullMQ flows', metrics: col.figures(), cpu: cpu.figures(), notes };
}
