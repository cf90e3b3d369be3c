/**
 * When a task's runs may run, besides `delay`/`runAt` (docs/flow-control.md): a deadline to start
 * (`expiresIn`), throttling (at most one run per window per key) and debouncing (the last input of
 * a burst wins). Checked when the task is defined, applied by `TaskDefinition.prepare`.
 */
import type { NewRun } from '../broker/types.ts';
import { ConfigError, InputError } from '../core/errors.ts';
import { checkDuration } from '../core/fields.ts';
import { show } from '../core/show.ts';

/** The task options of this file (part of `TaskOptions`). */
export interface RunTimingOptions<I> {
  /**
   * A run not started within this many ms of becoming due is dropped, never run: failed with
   * reason `expired` by the broker (no attempt counted). Per enqueue: `expiresIn`, `expiresAt`.
   */
  expiresIn?: number;
  /**
   * At most one run per `window` ms per key: an enqueue whose key already has a run created within
   * the window returns that run (as an idempotency key does, for `window` ms); `undefined` from
   * `key`: not throttled. Not together with `idempotencyKey` or `debounce`.
   */
  throttle?: { key: (input: I) => string | undefined; window: number };
  /**
   * Runs of one key enqueued within `window` ms of each other make one run, with the last input:
   * each enqueue replaces the waiting run's input and moves its start to `window` ms later, but
   * never later than `maxWait` ms after the first enqueue of the burst (default: no bound).
   * `undefined` from `key`: not debounced. Not together with `idempotencyKey`, `throttle` or a
   * `delay`/`runAt`.
   */
  debounce?: { key: (input: I) => string | undefined; window: number; maxWait?: number };
}

/** The options of `RunTimingOptions`, checked. */
export interface RunTiming<I> {
  expiresIn?: number;
  throttle?: { key: (input: I) => string | undefined; window: number };
  debounce?: { key: (input: I) => string | undefined; window: number; maxWait?: number };
}

export function checkRunTiming<I>(o: RunTimingOptions<I> & { idempotencyKey?: unknown }, where: string): RunTiming<I> {
  const out: RunTiming<I> = {};
  if (o.expiresIn !== undefined) out.expiresIn = checkDuration(o.expiresIn, `${where}: expiresIn`, { allowZero: false });
  const keyed = (name: 'throttle' | 'debounce', v: unknown) => {
    if (!v || typeof v !== 'object') throw new ConfigError(`${where}: ${name} must be { key: (input) => string, window }`);
    const r = v as Record<string, unknown>;
    if (typeof r.key !== 'function') throw new ConfigError(`${where}: ${name}.key must be a function (input) => string | undefined`);
    if (o.idempotencyKey !== undefined) throw new ConfigError(`${where}: ${name} and idempotencyKey cannot be used together`);
    for (const k of Object.keys(r)) {
      if (!['key', 'window', ...(name === 'debounce' ? ['maxWait'] : [])].includes(k)) {
        throw new ConfigError(`${where}: ${name}.${k} is not a ${name} option`);
      }
    }
    return {
      key: r.key as (input: I) => string | undefined,
      window: checkDuration(r.window, `${where}: ${name}.window`, { allowZero: false }),
    };
  };
  if (o.throttle !== undefined) out.throttle = keyed('throttle', o.throttle);
  if (o.debounce !== undefined) {
    if (out.throttle) throw new ConfigError(`${where}: throttle and debounce cannot be used together`);
    const d: NonNullable<RunTiming<I>['debounce']> = keyed('debounce', o.debounce);
    const maxWait = (o.debounce as { maxWait?: unknown }).maxWait;
    if (maxWait !== undefined) {
      d.maxWait = checkDuration(maxWait, `${where}: debounce.maxWait`, { allowZero: false });
      if (d.maxWait < d.window)
        throw new ConfigError(`${where}: debounce.maxWait (${d.maxWait}) must be at least its window (${d.window})`);
    }
    out.debounce = d;
  }
  return out;
}

/** What `prepare` was given that this file reads. */
export interface TimingRequest {
  expiresIn?: number;
  expiresAt?: Date | number;
  idempotencyKey?: string;
  delay?: number;
  runAt?: Date | number;
}

function keyOf<I>(task: string, name: string, fn: (input: I) => string | undefined, input: I): string | undefined {
  const key = fn(input);
  if (key !== undefined && (typeof key !== 'string' || key.length === 0 || key.length > 256 || !key.isWellFormed())) {
    throw new ConfigError(`Task "${task}": ${name}.key() must return a string of 1 to 256 characters or undefined, got ${show(key)}`);
  }
  return key;
}

/** Sets a prepared run's deadline to start, throttle key or debounce (the run's runAt already set). */
export function applyRunTiming<I>(run: NewRun, t: RunTiming<I>, input: I, o: TimingRequest, now: number): void {
  const at = o.expiresAt;
  const startBy = at !== undefined ? (at instanceof Date ? at.getTime() : Math.floor(at)) : run.runAt + (o.expiresIn ?? t.expiresIn ?? NaN);
  const bad = (path: string, message: string) => new InputError([{ path: [path], message, code: 'invalid_option' }], run.task, 'options');
  if (startBy < Math.max(run.runAt, now)) {
    throw bad(
      'expiresAt',
      `is ${new Date(startBy).toISOString()}, before the run is due (${new Date(Math.max(run.runAt, now)).toISOString()})`,
    );
  }
  if (Number.isFinite(startBy)) run.startBy = Math.floor(startBy);
  if (t.throttle) {
    const key = keyOf(run.task, 'throttle', t.throttle.key, input);
    if (key !== undefined) {
      if (o.idempotencyKey !== undefined) throw bad('idempotencyKey', `is not taken: task "${run.task}" throttles its runs by key`);
      // An idempotency key for the window: the same machinery, atomic in enqueue on every broker.
      run.idempotencyKey = `throttle:${key}`;
      run.idempotencyTtl = t.throttle.window;
    }
  }
  if (t.debounce) {
    const key = keyOf(run.task, 'debounce', t.debounce.key, input);
    if (key !== undefined) {
      if (o.idempotencyKey !== undefined) throw bad('idempotencyKey', `is not taken: task "${run.task}" debounces its runs by key`);
      if (o.delay !== undefined || o.runAt !== undefined) {
        throw bad(
          o.delay !== undefined ? 'delay' : 'runAt',
          `is not taken: task "${run.task}" debounces its runs (their start is the window's end)`,
        );
      }
      run.runAt = now + t.debounce.window;
      run.debounce = { key, maxAt: t.debounce.maxWait === undefined ? null : now + t.debounce.maxWait };
      if (run.startBy !== undefined && run.startBy < run.runAt) run.startBy = run.runAt;
    }
  }
}
