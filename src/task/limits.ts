/**
 * A task's flow-control limits (docs/flow-control.md): the `limits` option's types, its checks at
 * definition (ConfigError naming the task and the field), and its rates as the broker takes them.
 */
import type { FlowRate } from '../broker/types.ts';
import { ConfigError } from '../core/errors.ts';
import { show, unknownKey } from '../core/show.ts';

/** A task's concurrency and rate limits (see `TaskOptions.limits` and docs/flow-control.md). */
export interface TaskLimits<I> {
  /** The key of a run, from its validated input (1 to 256 characters); `undefined`: the run counts against `global` only. */
  key?: (input: I) => string | undefined;
  /** At most this many active runs per key (a positive integer). Needs `key`. */
  concurrency?: number;
  /**
   * Limits of chosen keys: a number replaces `concurrency` for that key; `{ concurrency?, rate? }`
   * replaces either or both (what it leaves out stays the task's). Needs `key`.
   */
  overrides?: Record<string, number | KeyLimits>;
  /** At most this many active runs of the task in its queue, all keys together (a positive integer). */
  global?: number;
  /** At most `limit` starts per `period` ms per key, up to `burst` (default `limit`) at once. Needs `key`. */
  rate?: RateLimit;
  /** At most `limit` starts per `period` ms of the task in its queue, all keys together. */
  globalRate?: RateLimit;
}

/** The limits of one key, in `TaskLimits.overrides`. */
export interface KeyLimits {
  concurrency?: number;
  rate?: RateLimit;
  /** Weighted fairness: this key is served `weight` runs in a row per turn of the task's keys (1 to 1000; default 1). */
  weight?: number;
}

/** `limit` starts per `period` ms, at most `burst` (default `limit`) of them at once. */
export interface RateLimit {
  limit: number;
  period: number;
  burst?: number;
}

const LIMIT_KEYS = ['key', 'concurrency', 'overrides', 'global', 'rate', 'globalRate'];
const KEY_LIMIT_KEYS = ['concurrency', 'rate', 'weight'];
const RATE_KEYS = ['limit', 'period', 'burst'];

function checkRate(r: unknown, name: string, where: string): void {
  if (r === undefined) return;
  if (!r || typeof r !== 'object' || Array.isArray(r)) throw new ConfigError(`${where}: ${name} must be { limit, period, burst? }`);
  const o = r as Record<string, unknown>;
  const unknown = unknownKey(o, RATE_KEYS, 'a rate field');
  if (unknown) throw new ConfigError(`${where}: ${name}: ${unknown}`);
  for (const k of ['limit', 'period'] as const) {
    if (typeof o[k] !== 'number' || !Number.isSafeInteger(o[k]) || (o[k] as number) < 1) {
      throw new ConfigError(`${where}: ${name}.${k} must be a positive integer${k === 'period' ? ' of ms' : ''}, got ${show(o[k])}`);
    }
  }
  if (o.burst !== undefined && (typeof o.burst !== 'number' || !Number.isSafeInteger(o.burst) || o.burst < 1)) {
    throw new ConfigError(`${where}: ${name}.burst must be a positive integer, got ${show(o.burst)}`);
  }
}

/** A rate limit as the broker takes it (see `FlowRate`). */
export function flowRate(r: RateLimit): FlowRate {
  return { interval: r.period / r.limit, burst: r.burst ?? r.limit };
}

/** `limits` checked at definition: ConfigError naming the task and the field. */
export function checkLimits<I>(limits: TaskLimits<I> | undefined, where: string): TaskLimits<I> | undefined {
  if (limits === undefined) return undefined;
  if (!limits || typeof limits !== 'object' || Array.isArray(limits)) throw new ConfigError(`${where}: limits must be an object`);
  const unknown = unknownKey(limits, LIMIT_KEYS, 'a limit');
  if (unknown) throw new ConfigError(`${where}: limits: ${unknown}`);
  const positive = (v: unknown, name: string) => {
    if (v !== undefined && (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1)) {
      throw new ConfigError(`${where}: ${name} must be a positive integer, got ${show(v)}`);
    }
  };
  positive(limits.concurrency, 'limits.concurrency');
  positive(limits.global, 'limits.global');
  if (limits.overrides !== undefined) {
    if (!limits.overrides || typeof limits.overrides !== 'object' || Array.isArray(limits.overrides)) {
      throw new ConfigError(`${where}: limits.overrides must be an object of key -> limit`);
    }
    for (const [k, v] of Object.entries(limits.overrides)) {
      const name = `limits.overrides[${JSON.stringify(k)}]`;
      if (typeof v === 'number') {
        positive(v, name);
        continue;
      }
      if (!v || typeof v !== 'object' || Array.isArray(v)) {
        throw new ConfigError(`${where}: ${name} must be a positive integer or { concurrency?, rate? }, got ${show(v)}`);
      }
      const unknownField = unknownKey(v, KEY_LIMIT_KEYS, 'a key limit');
      if (unknownField) throw new ConfigError(`${where}: ${name}: ${unknownField}`);
      positive(v.concurrency, `${name}.concurrency`);
      positive(v.weight, `${name}.weight`);
      if ((v.weight ?? 0) > 1000) throw new ConfigError(`${where}: ${name}.weight must be at most 1000, got ${v.weight}`);
      checkRate(v.rate, `${name}.rate`, where);
    }
  }
  if (limits.key !== undefined && typeof limits.key !== 'function') {
    throw new ConfigError(`${where}: limits.key must be a function of the input returning the run's key`);
  }
  checkRate(limits.rate, 'limits.rate', where);
  checkRate(limits.globalRate, 'limits.globalRate', where);
  if ((limits.concurrency !== undefined || limits.overrides !== undefined || limits.rate !== undefined) && !limits.key) {
    throw new ConfigError(
      `${where}: limits.concurrency, limits.overrides and limits.rate are per key: give limits.key too (or use limits.global, limits.globalRate)`,
    );
  }
  if (
    limits.concurrency === undefined &&
    limits.overrides === undefined &&
    limits.global === undefined &&
    limits.rate === undefined &&
    limits.globalRate === undefined
  ) {
    throw new ConfigError(`${where}: limits needs concurrency or rate (with key), overrides, global or globalRate`);
  }
  const out: TaskLimits<I> = { ...limits };
  if (limits.overrides) out.overrides = { ...limits.overrides };
  return out;
}
