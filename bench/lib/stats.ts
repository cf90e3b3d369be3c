/** A figure measured over several rounds: its median, min and max, and every round's value. */
export interface Figure {
  median: number;
  min: number;
  max: number;
  rounds: number[];
  unit: string;
  /** Set when the figure could not be measured (a peer skipped, a timeout): why. */
  error?: string;
  /** Anything worth knowing about how it was measured. */
  extra?: Record<string, unknown>;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Nearest-rank percentile (p in 0..100) of sorted values. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export function figure(rounds: readonly number[], unit: string, extra?: Record<string, unknown>): Figure {
  const finite = rounds.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return failed(unit, 'no round produced a value');
  const f: Figure = { median: median(finite), min: Math.min(...finite), max: Math.max(...finite), rounds: [...rounds], unit };
  if (extra) f.extra = extra;
  return f;
}

export function failed(unit: string, error: string): Figure {
  return { median: Number.NaN, min: Number.NaN, max: Number.NaN, rounds: [], unit, error };
}

/** A figure with a value (not skipped, not failed). */
export function ok(f: Figure | undefined): f is Figure & { error: undefined } {
  return !!f && !f.error && Number.isFinite(f.median);
}

/** Human formatting: 12345 -> "12,345", 1.234 -> "1.23". */
export function fmt(v: number, unit = ''): string {
  if (!Number.isFinite(v)) return 'n/a';
  let s: string;
  const a = Math.abs(v);
  if (a >= 100) s = Math.round(v).toLocaleString('en-US');
  else if (a >= 10) s = v.toFixed(1);
  else if (a >= 1) s = v.toFixed(2);
  else s = v.toPrecision(2);
  return unit ? `${s} ${unit}` : s;
}

export function fmtBytes(v: number): string {
  if (!Number.isFinite(v)) return 'n/a';
  if (Math.abs(v) >= 1024 * 1024) return `${(v / 1024 / 1024).toFixed(1)} MiB`;
  if (Math.abs(v) >= 10 * 1024) return `${(v / 1024).toFixed(1)} KiB`;
  return `${Math.round(v)} B`;
}
