/**
 * Turns the broker's per-minute counters and latency histograms (`BrokerInspector.stats`) into what
 * the overview shows: throughput, failure rate and latency percentiles, per queue and overall.
 */
import { LATENCY_BUCKETS_MS, type MinuteStats, type QueueCounts, RUN_STATES } from '../broker/types.ts';
import type { OverviewSeries, Percentiles } from './api-types.ts';

export const MINUTE = 60_000;

/** Window over which throughput per minute is averaged. */
export const THROUGHPUT_MINUTES = 5;

/**
 * The `q` quantile (0 < q <= 1) of a histogram over `LATENCY_BUCKETS_MS`, interpolated linearly
 * inside the bucket that holds it (the first bucket spans 0 to its bound). A quantile that falls in
 * the overflow bucket is reported as the last bound: the histogram cannot say more than "above it".
 * Null when the histogram is empty.
 */
export function quantile(counts: readonly number[], q: number, bounds: readonly number[] = LATENCY_BUCKETS_MS): number | null {
  let total = 0;
  for (const c of counts) total += Math.max(c, 0);
  if (total === 0) return null;
  const rank = Math.max(q * total, Number.MIN_VALUE);
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = Math.max(0, counts[i] ?? 0);
    if (c === 0) continue;
    if (seen + c >= rank) {
      if (i >= bounds.length) return bounds[bounds.length - 1] ?? null;
      const lower = i === 0 ? 0 : bounds[i - 1]!;
      const upper = bounds[i]!;
      return lower + ((rank - seen) / c) * (upper - lower);
    }
    seen += c;
  }
  return bounds[bounds.length - 1] ?? null;
}

export function percentiles(counts: readonly number[]): Percentiles {
  let count = 0;
  for (const c of counts) count += Math.max(c, 0);
  return { count, p50: quantile(counts, 0.5), p95: quantile(counts, 0.95), p99: quantile(counts, 0.99) };
}

/** Adds histogram `b` into `a` (bucket by bucket, growing `a` if needed). */
export function addInto(a: number[], b: readonly number[] | undefined): number[] {
  if (!b) return a;
  for (let i = 0; i < b.length; i++) a[i] = (a[i] ?? 0) + (b[i] ?? 0);
  return a;
}

export function emptyCounts(): QueueCounts {
  return Object.fromEntries(RUN_STATES.map((s) => [s, 0])) as QueueCounts;
}

export interface QueueStatsSummary {
  throughputPerMin: number;
  finished: number;
  failed: number;
  failureRate: number | null;
  wait: Percentiles;
  run: Percentiles;
}

/** Summarises one queue's minutes (any order) as of `now`. */
export function summarise(minutes: readonly MinuteStats[], now: number): QueueStatsSummary {
  const wait: number[] = [];
  const run: number[] = [];
  let succeeded = 0;
  let failed = 0;
  let recent = 0;
  const recentFrom = Math.floor(now / MINUTE) * MINUTE - (THROUGHPUT_MINUTES - 1) * MINUTE;
  for (const m of minutes) {
    succeeded += m.succeeded;
    failed += m.failed;
    if (m.minute >= recentFrom) recent += m.succeeded + m.failed;
    addInto(wait, m.wait);
    addInto(run, m.run);
  }
  const finished = succeeded + failed;
  return {
    throughputPerMin: recent / THROUGHPUT_MINUTES,
    finished,
    failed,
    failureRate: finished ? failed / finished : null,
    wait: percentiles(wait),
    run: percentiles(run),
  };
}

/** Per-minute series over all queues from `since` to `now`, one point per minute, gaps as zeros. */
export function buildSeries(byQueue: Record<string, MinuteStats[]>, since: number, now: number): OverviewSeries {
  const first = Math.floor(since / MINUTE) * MINUTE;
  const last = Math.floor(now / MINUTE) * MINUTE;
  const n = Math.max(1, Math.round((last - first) / MINUTE) + 1);
  const series: OverviewSeries = {
    minutes: Array.from({ length: n }, (_, i) => first + i * MINUTE),
    enqueued: new Array(n).fill(0),
    succeeded: new Array(n).fill(0),
    failed: new Array(n).fill(0),
    retried: new Array(n).fill(0),
    waitP50: [],
    waitP95: [],
    runP50: [],
    runP95: [],
  };
  const wait: number[][] = Array.from({ length: n }, () => []);
  const run: number[][] = Array.from({ length: n }, () => []);
  for (const minutes of Object.values(byQueue)) {
    for (const m of minutes) {
      const i = Math.round((Math.floor(m.minute / MINUTE) * MINUTE - first) / MINUTE);
      if (i < 0 || i >= n) continue;
      series.enqueued[i]! += m.enqueued;
      series.succeeded[i]! += m.succeeded;
      series.failed[i]! += m.failed;
      series.retried[i]! += m.retried;
      addInto(wait[i]!, m.wait);
      addInto(run[i]!, m.run);
    }
  }
  for (let i = 0; i < n; i++) {
    series.waitP50.push(quantile(wait[i]!, 0.5));
    series.waitP95.push(quantile(wait[i]!, 0.95));
    series.runP50.push(quantile(run[i]!, 0.5));
    series.runP95.push(quantile(run[i]!, 0.95));
  }
  return series;
}
