import { ConfigError } from '../core/errors.ts';
import { checkDuration, checkFields, isPlainObject } from '../core/fields.ts';
import { show } from '../core/show.ts';

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** How a failing run is retried. */
export interface RetryPolicy {
  /** Total attempts, the first included. 1 means never retry. Default 3. */
  maxAttempts?: number;
  /** `exponential`: base * 2^(attempt-1); `fixed`: base every time. Default `exponential`. */
  backoff?: 'exponential' | 'fixed';
  /** First delay in ms. Default 1000. */
  base?: number;
  /** Largest delay in ms. Default 300000 (5 minutes). */
  cap?: number;
  /** Random spread, 0 to 1: the delay is multiplied by a factor in [1 - jitter, 1]. Default 0.2. */
  jitter?: number;
}

/** How long finished runs are kept, in ms. 0 deletes the run as soon as it finishes. */
export interface Retention {
  /** Default 86400000 (1 day). */
  succeeded?: number;
  /** Default 604800000 (7 days): failed runs are the dead letters you inspect and replay. */
  failed?: number;
  /** Default 86400000 (1 day). */
  cancelled?: number;
}

export interface TaskDefaults {
  /** Queue the task's runs go to unless `enqueue` says otherwise. Default `default`. */
  queue: string;
  /** Higher runs first; integer in [-1000, 1000]. Default 0. */
  priority: number;
  retries: Required<RetryPolicy>;
  /** Longest an attempt may run, in ms; then its signal aborts and the attempt fails. Default 300000 (5 minutes). */
  timeout: number;
  retention: Required<Retention>;
  /** How long an idempotency key holds, in ms. Default 86400000 (1 day). */
  idempotencyTtl: number;
}

export const DEFAULTS: TaskDefaults = {
  queue: 'default',
  priority: 0,
  retries: { maxAttempts: 3, backoff: 'exponential', base: SECOND, cap: 5 * MINUTE, jitter: 0.2 },
  timeout: 5 * MINUTE,
  retention: { succeeded: DAY, failed: 7 * DAY, cancelled: DAY },
  idempotencyTtl: DAY,
};

export const PRIORITY_MIN = -1000;
export const PRIORITY_MAX = 1000;

export function checkPriority(priority: unknown, where: string): number {
  if (typeof priority !== 'number' || !Number.isInteger(priority) || priority < PRIORITY_MIN || priority > PRIORITY_MAX) {
    throw new ConfigError(`${where}: priority must be an integer from ${PRIORITY_MIN} to ${PRIORITY_MAX}, got ${show(priority)}`);
  }
  return priority;
}

const RETRY_FIELDS = ['maxAttempts', 'backoff', 'base', 'cap', 'jitter'];
const RETENTION_FIELDS = ['succeeded', 'failed', 'cancelled'];

export function resolveRetries(policy: RetryPolicy | number | undefined, where: string): Required<RetryPolicy> {
  if (policy !== undefined && (typeof policy === 'number' ? !Number.isInteger(policy) || policy < 0 : !isPlainObject(policy))) {
    throw new ConfigError(
      `${where}: retries must be a number of retries after the first attempt (an integer >= 0) or a policy { maxAttempts, backoff, base, cap, jitter }, got ${show(policy)}`,
    );
  }
  if (typeof policy === 'object') checkFields(policy, RETRY_FIELDS, `${where}: retries`, 'a retries field');
  const p: RetryPolicy = typeof policy === 'number' ? { maxAttempts: policy + 1 } : (policy ?? {});
  const out = { ...DEFAULTS.retries, ...Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined)) } as Required<RetryPolicy>;
  if (!Number.isInteger(out.maxAttempts) || out.maxAttempts < 1) {
    throw new ConfigError(`${where}: retries.maxAttempts must be an integer >= 1, got ${show(out.maxAttempts)}`);
  }
  if (out.backoff !== 'exponential' && out.backoff !== 'fixed') {
    throw new ConfigError(`${where}: retries.backoff must be "exponential" or "fixed", got ${show(out.backoff)}`);
  }
  checkDuration(out.base, `${where}: retries.base`);
  checkDuration(out.cap, `${where}: retries.cap`);
  if (out.cap < out.base) {
    throw new ConfigError(
      p.cap === undefined
        ? `${where}: retries.base (${out.base}) is over the default retries.cap (${out.cap}): give a retries.cap of at least ${out.base}`
        : `${where}: retries.cap (${out.cap}) must be at least retries.base (${out.base}): the cap bounds every delay`,
    );
  }
  if (typeof out.jitter !== 'number' || !(out.jitter >= 0 && out.jitter <= 1)) {
    throw new ConfigError(`${where}: retries.jitter must be a number from 0 to 1, got ${show(out.jitter)}`);
  }
  return out;
}

export function resolveRetention(retention: Retention | number | undefined, where: string): Required<Retention> {
  if (retention !== undefined && typeof retention !== 'number' && !isPlainObject(retention)) {
    throw new ConfigError(`${where}: retention must be a number of ms or { succeeded, failed, cancelled }, got ${show(retention)}`);
  }
  if (typeof retention === 'object') checkFields(retention, RETENTION_FIELDS, `${where}: retention`, 'a retention field');
  const r: Retention =
    typeof retention === 'number' ? { succeeded: retention, failed: retention, cancelled: retention } : (retention ?? {});
  const out = { ...DEFAULTS.retention };
  for (const key of ['succeeded', 'failed', 'cancelled'] as const) {
    if (r[key] !== undefined) out[key] = checkDuration(r[key], `${where}: retention${typeof retention === 'number' ? '' : `.${key}`}`);
  }
  return out;
}

/** Delay before the retry that follows attempt `attempt` (1-based). */
export function backoffDelay(policy: Required<RetryPolicy>, attempt: number, random = Math.random): number {
  const raw = policy.backoff === 'fixed' ? policy.base : policy.base * 2 ** Math.max(0, attempt - 1);
  const capped = Math.min(policy.cap, raw);
  return Math.round(capped * (1 - policy.jitter * random()));
}
