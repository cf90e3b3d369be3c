/**
 * Scenario 3, latency from enqueue to handler start under a steady load: a producer process enqueues
 * one run at a time at a fixed rate (not awaiting each), a worker process (concurrency 50, results not
 * kept) records, in its handler, the time since the producer stamped the run. Both use the machine's
 * monotonic clock, shared by every process. The first part of each round is a warm-up, not counted.
 */
import { Collector, type Ctx, errMessage, type ScenarioResult } from '../lib/context.ts';
import { type Child, withTimeout } from '../lib/proc.ts';

const CONCURRENCY = 50;

export async function latencyScenario(ctx: Ctx): Promise<ScenarioResult> {
  const s = ctx.sizes;
  const col = new Collector();
  const notes: string[] = [];
  const raw: Record<string, unknown[]> = {};
  const pairs = new Map<string, { worker: Child; producer: Child }>();
  // --quick leaves Errand on SQLite out here (no target concerns it) to stay under two minutes.
  const peers = ctx.quick ? ctx.peers.filter((p) => p.id !== 'errand-sqlite') : ctx.peers;
  if (peers.length < ctx.peers.length) notes.push('--quick: Errand (SQLite) not measured here.');
  for (const p of peers) {
    try {
      const worker = await ctx.child(`latency-worker-${p.id}`, p.driver);
      const producer = await ctx.child(`latency-producer-${p.id}`, p.driver);
      pairs.set(p.id, { worker, producer });
    } catch (err) {
      notes.push(`${p.label}: could not start (${errMessage(err)})`);
    }
  }
  try {
    for (const rate of s.latencyRates) {
      const label = `${rate.toLocaleString('en-US')}/s`;
      for (let round = 0; round < s.rounds; round++) {
        for (const p of peers) {
          const pair = pairs.get(p.id);
          if (!pair) continue;
          const { worker, producer } = pair;
          let handled = 0;
          const off = worker.on((m) => {
            if (m.type === 'progress') handled = Number(m.count);
          });
          try {
            const url = await p.freshUrl();
            await worker.request({ cmd: 'open', url, keep: false }, 30_000);
            await producer.request({ cmd: 'open', url, keep: false }, 30_000);
            await worker.request({ cmd: 'work', concurrency: CONCURRENCY }, 30_000);
            const prod = await producer.request<{
              type: string;
              sent: number;
              errors: number;
              achievedRate: number;
              maxOutstanding: number;
              lastError: string;
            }>({ cmd: 'produce', rate, durationMs: s.latencyDurationMs, warmupMs: s.latencyWarmupMs }, s.latencyDurationMs + 60_000);
            if (prod.errors) throw new Error(`${prod.errors} enqueue errors (${prod.lastError})`);
            await withTimeout(
              (async () => {
                while (handled < prod.sent) await new Promise((r) => setTimeout(r, 10));
              })(),
              60_000,
              `${prod.sent} runs to be handled (handled ${handled})`,
            );
            const lat = await worker.request<{ type: string; n: number; p50: number; p99: number; p999: number; max: number }>(
              { cmd: 'latency' },
              10_000,
            );
            await worker.request({ cmd: 'stopwork' }, 30_000);
            col.add(`p50 at ${label}`, p.id, lat.p50 / 1000, 'ms');
            col.add(`p99 at ${label}`, p.id, lat.p99 / 1000, 'ms');
            col.extra(`p99 at ${label}`, p.id, { achievedRate: Math.round(prod.achievedRate) });
            const { type: _t, reqId: _r, ...summary } = lat as typeof lat & { reqId?: number };
            (raw[`${p.id} ${label}`] ??= []).push({ ...summary, achievedRate: prod.achievedRate, maxOutstanding: prod.maxOutstanding });
            if (prod.achievedRate < rate * 0.9)
              notes.push(`${p.label} at ${label}: the producer reached only ${Math.round(prod.achievedRate)}/s in round ${round + 1}.`);
          } catch (err) {
            col.fail(`p50 at ${label}`, p.id, errMessage(err), 'ms');
            col.fail(`p99 at ${label}`, p.id, errMessage(err), 'ms');
            ctx.log(`  latency ${label} ${p.id}: ${errMessage(err)}`);
            await worker.request({ cmd: 'stopwork' }, 30_000).catch(() => undefined);
          } finally {
            off();
            await worker.request({ cmd: 'close' }, 30_000).catch(() => undefined);
            await producer.request({ cmd: 'close' }, 30_000).catch(() => undefined);
          }
        }
      }
      ctx.log(`  latency: ${label} done`);
    }
  } finally {
    await Promise.all([...pairs.values()].flatMap(({ worker, producer }) => [worker.close(), producer.close()]));
  }
  notes.push(
    `Each round: ${s.latencyDurationMs} ms of steady load, the first ${s.latencyWarmupMs} ms not counted; worker concurrency ${CONCURRENCY}, results not kept; ` +
      'producer and worker in separate processes. p50/p99 are per round; the table shows the median round, with the min and max rounds.',
  );
  return { title: 'Latency, enqueue to handler start', metrics: col.figures(), notes, raw };
}
