/**
 * What the guard (`guard.ts`) checks and maps on every broker call, kept apart from the guard's
 * dispatch: a failure as an Errand error (`asBrokerError`), `now` as whole ms (`checkNow`), and a
 * run's flow spec (`checkFlow`, docs/flow-control.md). Queue names are checked by `checkQueueName`
 * (core/ids.ts, which the task and worker options use too).
 */
import { BrokerFullError, BrokerUnavailableError, ConfigError, ErrandError } from '../../core/errors.ts';
import { show } from '../../core/show.ts';

/**
 * Client errors whose own words mean nothing to a user of Errand, by the error's name: ioredis's
 * "Reached the max retries per request limit (which is 0)" is a command cut off by a lost connection.
 */
const REWORDED: Record<string, string> = {
  MaxRetriesPerRequestError:
    'the connection was lost while the call was on its way, so it may or may not have been applied (an enqueue with an idempotency key is safe to repeat)',
};

/**
 * Redis's refusal of a write when its used memory is over `maxmemory` (policy `noeviction`), as a
 * command's reply or from inside a script (whose first write that needs memory is refused: the
 * script stops before it changed anything).
 */
const REDIS_OOM = /^OOM command not allowed\b/;

/** Redis's OOM refusal as the error every caller sees; undefined for any other error. */
export function redisOutOfMemory(err: unknown): BrokerFullError | undefined {
  if (!(err instanceof Error) || !REDIS_OOM.test(err.message)) return undefined;
  return new BrokerFullError(
    'memory',
    'Redis is out of memory (its used memory is over maxmemory, and with maxmemory-policy noeviction it refuses writes): nothing was done. ' +
      'Memory comes back as finished runs are pruned at the end of their retention; to free it sooner raise maxmemory, lower the retention of finished runs or purge queues',
    { cause: err },
  );
}

/** A failure as an Errand error: Errand's own as they are, Redis out of memory as BrokerFullError, anything else as BrokerUnavailableError. */
export function asBrokerError(err: unknown, kind: string): ErrandError {
  if (err instanceof ErrandError) return err;
  const full = redisOutOfMemory(err);
  if (full) return full;
  const message = (err instanceof Error && REWORDED[err.name]) || (err instanceof Error ? err.message : String(err));
  return new BrokerUnavailableError(`The ${kind} broker failed: ${message}`, { cause: err });
}

/** `now` as whole ms; a ConfigError naming the method when it is not a finite number. */
export function checkNow(now: unknown, method: string): number {
  if (typeof now !== 'number' || !Number.isFinite(now)) {
    throw new ConfigError(`${method}: now must be a finite number of ms since the epoch, got ${show(now)}`);
  }
  return Math.floor(now);
}

const FLOW_GROUP = /^[A-Za-z0-9_.:-]{1,128}$/;

/** Throws a ConfigError naming what is wrong with a run's flow spec (see `FlowSpec`). */
export function checkFlow(flow: unknown, where: string): void {
  if (!flow || typeof flow !== 'object') throw new ConfigError(`${where}: flow must be an object, got ${show(flow)}`);
  const f = flow as Record<string, unknown>;
  if (typeof f.group !== 'string' || !FLOW_GROUP.test(f.group)) {
    throw new ConfigError(`${where}: flow.group ${show(f.group)} is invalid: use 1 to 128 letters, digits, "_", ".", ":" or "-"`);
  }
  if (typeof f.key !== 'string' || f.key.length > 256 || !f.key.isWellFormed()) {
    throw new ConfigError(`${where}: flow.key must be a string of at most 256 characters of well-formed Unicode, got ${typeof f.key}`);
  }
  for (const name of ['rate', 'groupRate'] as const) {
    const r = f[name] as Record<string, unknown> | undefined;
    if (r === undefined) continue;
    if (!r || typeof r !== 'object') throw new ConfigError(`${where}: flow.${name} must be { interval, burst }, got ${show(r)}`);
    if (typeof r.interval !== 'number' || !Number.isFinite(r.interval) || r.interval <= 0) {
      throw new ConfigError(`${where}: flow.${name}.interval must be a positive number of ms, got ${show(r.interval)}`);
    }
    if (typeof r.burst !== 'number' || !Number.isSafeInteger(r.burst) || r.burst < 1) {
      throw new ConfigError(`${where}: flow.${name}.burst must be a positive integer, got ${show(r.burst)}`);
    }
  }
  for (const name of ['concurrency', 'groupConcurrency'] as const) {
    const v = f[name];
    if (v !== undefined && (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)) {
      throw new ConfigError(`${where}: flow.${name} must be a non-negative integer (0: unlimited), got ${show(v)}`);
    }
  }
  if (f.weight !== undefined && (typeof f.weight !== 'number' || !Number.isSafeInteger(f.weight) || f.weight < 1 || f.weight > 1000)) {
    throw new ConfigError(`${where}: flow.weight must be an integer from 1 to 1000, got ${show(f.weight)}`);
  }
}
