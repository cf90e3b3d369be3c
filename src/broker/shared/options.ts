/**
 * What both brokers share about their options and limits: time constants, defaults, the checks of
 * option values (a bad value is a `ConfigError` naming the broker and the option), page limits and
 * the retention a run carries with it.
 */
import { ConfigError } from '../../core/errors.ts';
import { show } from '../../core/show.ts';

export const MINUTE = 60_000;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

/** Defaults of `BrokerOptions` and of the brokers' own retention option. */
export const DEFAULTS = {
  maxLeaseLosses: 3,
  failedRetentionMs: 7 * DAY,
  cancelledRetentionMs: DAY,
  idempotencyTtlMs: DAY,
} as const;

/** Workers are listed this long after their last heartbeat, then forgotten. */
export const WORKER_MEMORY_MS = HOUR;
/** Per-minute stats are kept this long (the contract asks for at least 24 hours). */
export const STATS_RETENTION_MS = 2 * DAY;
/** Cancel notices are kept this long (SQLite's cancel log): listeners further behind rely on renew. */
export const CANCEL_LOG_RETENTION_MS = HOUR;
/** Runs deleted or replayed per transaction or script call by the bulk operations (purge, prune, retryFailed). */
export const SLICE = 1000;
/** Largest page of `listRuns`. */
export const MAX_PAGE = 500;

/** An integer >= 1 (default when undefined). */
/** A Redis key prefix: non-empty, without braces (cluster hash tags) or spaces. A ConfigError naming `where` otherwise. */
export function checkPrefix(where: string, prefix: unknown): string {
  if (typeof prefix !== 'string' || prefix === '' || /[{}\s]/.test(prefix)) {
    throw new ConfigError(`${where}: prefix must be a non-empty string without braces or spaces, got ${show(prefix)}`);
  }
  return prefix;
}

export function positiveInt(broker: string, name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new ConfigError(`${broker}: ${name} must be a positive integer, got ${show(value)}`);
  }
  return value;
}

/** A finite number of ms >= 0, rounded down (default when undefined). */
export function nonNegativeMs(broker: string, name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new ConfigError(`${broker}: ${name} must be a non-negative number of ms, got ${show(value)}`);
  }
  return Math.floor(value);
}

/** The page size of a `RunFilter`: integers rounded down, clamped into 1..MAX_PAGE (anything else: 1). */
export function pageLimit(limit: unknown): number {
  return Math.min(MAX_PAGE, Math.max(1, Math.floor(Number(limit)) || 1));
}

/** The ConfigError of a cursor a broker did not make. */
export function invalidCursor(cursor: unknown): ConfigError {
  return new ConfigError(`Invalid cursor ${show(cursor)}: pass the "next" of a previous page`);
}

/** A run's own retention once cancelled (NewRun.cancelledRetentionMs), as stored: whole ms >= 0, or undefined. */
export function ownRetention(ms: number | undefined): number | undefined {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return undefined;
  return Math.max(0, Math.floor(ms));
}
