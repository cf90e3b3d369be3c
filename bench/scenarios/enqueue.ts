/**
 * Scenario 1, enqueue: runs/s created (a) one at a time, each awaited; (b) 10,000 at once, not
 * awaited one by one (`Promise.all`); (c) through the batch API (`enqueueMany` / `addBulk`) in
 * chunks. One child process per peer; empty storage before each measurement; peers interleaved
 * within a round so that background noise falls on all of them alike.
 */
import type { Child } from '../lib/proc.ts';
import { Collector, type Ctx, errMessage, type ScenarioResult } from '../lib/context.ts';

export async function enqueueScenario(ctx: Ctx): Promise<ScenarioResult> {
  const s = ctx.sizes;
  const col = new Collector();
  const cpu = new Collector();
  const notes: string[] = [];
  const children = new Map<string, Child>();
  for (const p of ctx.peers) {
    try {
      children.set(p.id, await ctx.child(`enqueue-${p.id}`, p.driver));
    } catch (err) {
      notes.push(`${p.label}: could not start (${errMessage(err)})`);
    }
  }
  const modes = [
    { metric: 'one at a time', mode: 'serial', n: s.enqueueSerial },
    { metric: `${s.enqueueConcurrent.toLocaleString('en-US')} concurrent`, mode: 'concurrent', n: s.enqueueConcurrent },
    { metric: `batch API (${s.batchSize.toLocaleString('en-US')} per call)`, mode: 'batch', n: s.enqueueBatch },
  ];
  try {
    for (let round = 0; round < s.rounds; round++) {
      for (const m of modes) {
        for (const p of ctx.peers) {
          const c = children.get(p.id);
          if (!c) continue;
          try {
            await c.request({ cmd: 'open', url: await p.freshUrl(), keep: true }, 30_000);
            // A short warm-up on the same session (JIT, connection, scripts loaded), not counted.
            await c.request({ cmd: 'enqueue', mode: m.mode, n: Math.min(200, m.n), batch: s.batchSize, offset: 1e9 }, 30_000);
            const redisCpu0 = await ctx.redis.cpuUs();
            const r = await c.request<{ type: string; ms: number; cpuUs: number }>(
              { cmd: 'enqueue', mode: m.mode, n: m.n, batch: s.batchSize },
              Math.max(60_000, m.n * 5),
            );
            const redisCpu = (await ctx.redis.cpuUs()) - redisCpu0;
            col.add(m.metric, p.id, m.n / (r.ms / 1000), 'runs/s');
            cpu.add(m.metric, `${p.id} client`, r.cpuUs / m.n, 'µs');
            if (p.id !== 'errand-sqlite') cpu.add(m.metric, `${p.id} redis`, redisCpu / m.n, 'µs');
            await c.request({ cmd: 'close' }, 30_000);
          } catch (err) {
            col.fail(m.metric, p.id, errMessage(err), 'runs/s');
            ctx.log(`  enqueue ${m.mode} ${p.id}: ${errMessage(err)}`);
          }
        }
      }
      ctx.log(`  enqueue: round ${round + 1}/${s.rounds} done`);
    }
  } finally {
    await Promise.all([...children.values()].map((c) => c.close()));
  }
  notes.push(
    `Payload: the seed's welcome-email input ({username, email}). Errand validates it against a zod schema at enqueue; BullMQ stores it as given. ` +
      `"One at a time": ${s.enqueueSerial.toLocaleString('en-US')} sequential awaited calls; "concurrent": ${s.enqueueConcurrent.toLocaleString('en-US')} calls started together; ` +
      `batch: ${s.enqueueBatch.toLocaleString('en-US')} runs in calls of ${s.batchSize}.`,
  );
  return { title: 'Enqueue', metrics: col.figures(), cpu: cpu.figures(), notes };
}
