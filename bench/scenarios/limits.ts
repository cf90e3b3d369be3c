/**
 * Scenario: flow control's cost and its rate limiter's accuracy (docs/flow-control.md).
 *
 * - Processing no-op runs (one worker process, concurrency 50, results not kept) with per-key
 *   limits on (`limitsKeys` keys, a concurrency and a rate per key set high enough never to bind)
 *   against the same without limits, on both brokers: the runs take the flow-control path of
 *   reserve and settle, which is what is measured. BullMQ's open-source edition has no per-key
 *   limits (its groups are BullMQ Pro), so it has no figure there.
 * - The same with a global rate limit that never binds (1,000,000 starts/s): Errand's
 *   `limits.globalRate` against BullMQ's Worker `limiter: { max, duration }`, each against itself
 *   without the limit.
 * - A global rate limit of `limitsRate` starts/s that binds: `limitsRateRuns` runs queued, then
 *   drained by one worker of concurrency 50; the handlers' start times give the achieved rate after
 *   the first burst (both allow `limitsRate` starts at once: Errand's GCRA with its default burst,
 *   BullMQ's fixed window of 1 s) and the busiest second (any 1 s window).
 *
 * Variants of one peer are interleaved within each round (their order alternating between rounds),
 * each after a warm-up on the same session, so the machine's load falls on both alike.
 */
import { Collector, type Ctx, errMessage, type PeerDef, type ScenarioResult } from '../lib/context.ts';
import { drain } from '../lib/drain.ts';
import type { Child } from '../lib/proc.ts';
import type { BenchLimits } from '../peers/types.ts';
import { WARMUP_RUNS } from './process.ts';

const CONCURRENCY = 50;
/** A global rate that never binds. */
const UNBOUND_RATE = 1_000_000;

interface Variant {
  /** The column: the peer's id, with `-limits` (Errand) or `-limiter` (BullMQ) when limits are on. */
  column: string;
  limits?: BenchLimits;
}

export async function limitsScenario(ctx: Ctx): Promise<ScenarioResult> {
  const s = ctx.sizes;
  const col = new Collector();
  const cpu = new Collector();
  const notes: string[] = [];
  const raw: Record<string, unknown> = {};
  const keysMetric = `c=${CONCURRENCY}, per-key limits, ${s.limitsKeys.toLocaleString('en-US')} keys, not binding`;
  const globalMetric = `c=${CONCURRENCY}, global rate limit, not binding`;
  const rateLabel = `global rate ${s.limitsRate.toLocaleString('en-US')}/s`;
  const children = new Map<string, Child>();
  for (const p of ctx.peers) {
    try {
      children.set(p.id, await ctx.child(`limits-${p.id}`, p.driver));
    } catch (err) {
      notes.push(`${p.label}: could not start (${errMessage(err)})`);
    }
  }
  const on = (p: PeerDef) => (p.driver === 'errand' ? `${p.id}-limits` : `${p.id}-limiter`);
  try {
    for (let round = 0; round < s.rounds; round++) {
      for (const p of ctx.peers) {
        const c = children.get(p.id);
        if (!c) continue;
        // Processing with and without limits, in alternating order.
        const rows: { metric: string; variants: Variant[] }[] = [];
        if (p.driver === 'errand')
          rows.push({ metric: keysMetric, variants: [{ column: p.id }, { column: on(p), limits: { kind: 'keys', keys: s.limitsKeys } }] });
        rows.push({
          metric: globalMetric,
          variants: [{ column: p.id }, { column: on(p), limits: { kind: 'globalRate', perSecond: UNBOUND_RATE } }],
        });
        for (const row of rows) {
          const variants = round % 2 ? [...row.variants].reverse() : row.variants;
          for (const v of variants) await processing(ctx, c, p, row.metric, v, col, cpu);
        }
        await rateAccuracy(ctx, c, p, rateLabel, on(p), col, raw, round);
      }
      ctx.log(`  limits: round ${round + 1} of ${s.rounds} done`);
    }
  } finally {
    await Promise.all([...children.values()].map((c) => c.close()));
  }
  notes.push(
    `Processing: ${s.limitsRuns.toLocaleString('en-US')} no-op runs queued beforehand, drained by one worker process of concurrency ${CONCURRENCY}, results not kept; ` +
      `after a warm-up of ${WARMUP_RUNS} runs on the same session (same limits), not counted. Per-key limits: the key is the run's number modulo ${s.limitsKeys.toLocaleString('en-US')}, ` +
      'each key limited to 1,000 active runs and 1,000,000 starts/s (never binding: the runs pay for the flow-control path without waiting). ' +
      "BullMQ's open-source edition has no per-key limits (groups are BullMQ Pro): it has no figure there. " +
      `Global rate not binding: Errand \`limits.globalRate\` of ${UNBOUND_RATE.toLocaleString('en-US')} starts/s; BullMQ Worker \`limiter: { max: ${UNBOUND_RATE.toLocaleString('en-US')}, duration: 1000 }\`. ` +
      'With and without limits alternate within each round (their order swapped every round).',
  );
  notes.push(
    `${rateLabel}: ${s.limitsRateRuns.toLocaleString('en-US')} runs queued, one worker of concurrency ${CONCURRENCY}; Errand \`globalRate: { limit: ${s.limitsRate}, period: 1000 }\` ` +
      `(GCRA, default burst ${s.limitsRate}), BullMQ \`limiter: { max: ${s.limitsRate}, duration: 1000 }\` (a fixed window). Both may start ${s.limitsRate} runs at once; ` +
      '"achieved rate" is the starts after that first burst divided by the time from the first start to the last (the handlers\' start times): the limit is the right answer. ' +
      '"busiest second" is the most starts in any 1 s window (GCRA allows its burst plus a second of its rate: twice the limit; a fixed window allows two windows\' worth across a boundary).',
  );
  return { title: 'Flow control: limits and rate limiting', metrics: col.figures(), cpu: cpu.figures(), notes, raw };
}

async function processing(ctx: Ctx, c: Child, p: PeerDef, metric: string, v: Variant, col: Collector, cpu: Collector): Promise<void> {
  const n = ctx.sizes.limitsRuns;
  try {
    await c.request({ cmd: 'open', url: await p.freshUrl(), keep: false, limits: v.limits }, 30_000);
    const warm = Math.min(WARMUP_RUNS, n);
    await c.request({ cmd: 'enqueue', mode: 'batch', n: warm, batch: ctx.sizes.batchSize, offset: 1e9 }, 120_000);
    await drain([c], warm, CONCURRENCY, 60_000);
    await c.request({ cmd: 'enqueue', mode: 'batch', n, batch: ctx.sizes.batchSize }, 300_000);
    const redisCpu0 = await ctx.redis.cpuUs();
    const r = await drain([c], n, CONCURRENCY, Math.max(60_000, n * 10));
    const redisCpu = (await ctx.redis.cpuUs()) - redisCpu0;
    col.add(metric, v.column, r.perSecond, 'runs/s');
    cpu.add(metric, `${v.column} client`, r.workerCpuUs / n, 'µs');
    if (p.id !== 'errand-sqlite') cpu.add(metric, `${v.column} redis`, redisCpu / n, 'µs');
  } catch (err) {
    col.fail(metric, v.column, errMessage(err), 'runs/s');
    ctx.log(`  limits ${metric} ${v.column}: ${errMessage(err)}`);
  } finally {
    await c.request({ cmd: 'close' }, 30_000).catch(() => undefined);
  }
}

async function rateAccuracy(
  ctx: Ctx,
  c: Child,
  p: PeerDef,
  label: string,
  column: string,
  col: Collector,
  raw: Record<string, unknown>,
  round: number,
): Promise<void> {
  const s = ctx.sizes;
  const n = s.limitsRateRuns;
  const achieved = `${label}: achieved rate`;
  const busiest = `${label}: busiest second`;
  try {
    await c.request(
      { cmd: 'open', url: await p.freshUrl(), keep: false, limits: { kind: 'globalRate', perSecond: s.limitsRate }, starts: true },
      30_000,
    );
    await c.request({ cmd: 'enqueue', mode: 'batch', n, batch: s.batchSize }, 300_000);
    await drain([c], n, CONCURRENCY, Math.max(60_000, (n / s.limitsRate) * 3000));
    const { starts } = await c.request<{ type: string; starts: number[] }>({ cmd: 'starts' }, 30_000);
    if (starts.length < n) throw new Error(`${starts.length} starts recorded of ${n}`);
    const t = [...starts].sort((a, b) => a - b);
    const span = (t[t.length - 1]! - t[0]!) / 1000;
    const rate = span > 0 ? (t.length - s.limitsRate) / span : Number.NaN;
    let most = 0;
    for (let i = 0, j = 0; i < t.length; i++) {
      while (t[i]! - t[j]! >= 1000) j++;
      most = Math.max(most, i - j + 1);
    }
    col.add(achieved, column, rate, 'starts/s');
    col.add(busiest, column, most, 'starts');
    raw[`${column} round ${round}`] = { runs: t.length, spanS: span, achieved: rate, busiestSecond: most };
  } catch (err) {
    col.fail(achieved, column, errMessage(err), 'starts/s');
    ctx.log(`  limits ${label} ${column}: ${errMessage(err)}`);
  } finally {
    await c.request({ cmd: 'close' }, 30_000).catch(() => undefined);
  }
}
