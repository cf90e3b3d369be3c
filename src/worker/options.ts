// The worker's options, their defaults and checks, and the events it reports.
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { Reservation } from '../broker/types.ts';
import { ConfigError } from '../core/errors.ts';
import { checkFields, checkTimerMs } from '../core/fields.ts';
import { checkQueueName } from '../core/ids.ts';
import { MAX_TIMER_MS, show } from '../core/show.ts';
import type { WorkerHost } from './host.ts';

export interface WorkerOptions {
  /** Queues to take runs from, in order of preference, each the queue of one of the app's tasks. Default: all of them. */
  queues?: string[];
  /** Runs executed at once, 1 to 10000. Default 10. */
  concurrency?: number;
  /**
   * Lease length in ms: a run whose worker stops renewing (killed, cut off) runs elsewhere after
   * this long, 100 to 2147483647. Default 8000. A stall of the event loop shorter than `leaseMs - renewEvery` (minus a
   * renewal's round trip) never loses a lease: 5 s with the defaults (docs/reliability.md).
   */
  leaseMs?: number;
  /** How often leases are renewed (all of them in one call), in ms. Default leaseMs / 4. */
  renewEvery?: number;
  /** On stop, how long active runs may finish before they are aborted and handed back, in ms. Default 10000. */
  shutdownGraceMs?: number;
  /** How often finished runs past their retention are deleted, in ms. Default 60000. */
  pruneEvery?: number;
  /** Default `<host>:<pid>:<random>`. */
  id?: string;
  logger?: Logger;
  /**
   * Fire the schedules of the worker's queues (every worker may: each nominal time fires once
   * whatever their number), and upsert the app's declared schedules at start. Default true.
   */
  schedules?: boolean;
  /**
   * A run of a task this worker does not define (a rolling deploy: the API knows a task that this
   * worker's code does not yet) is handed back, its attempt not counted, for a worker that defines
   * it; once this worker has met it for this long, in ms, it fails with reason `unknown_task`.
   * 0 to 2147483647; 0 fails it at once. Default 300000 (5 minutes).
   */
  unknownTaskWaitMs?: number;
}

/** What a worker reports about each run (for metrics and tests). */
export interface RunEvent {
  type: 'start' | 'success' | 'retry' | 'failure' | 'backoff' | 'lost' | 'released';
  run: Reservation;
  /** Handler time in ms (not for `start`). */
  durationMs?: number;
  error?: unknown;
  /** For `retry`: when the next attempt is due; for `backoff` (the handler threw `ctx.backOff`): until when it waits. */
  retryAt?: number;
}

/** The options checked, with their defaults. */
export interface WorkerSettings {
  id: string;
  queues: string[];
  concurrency: number;
  leaseMs: number;
  renewEvery: number;
  shutdownGraceMs: number;
  pruneEvery: number;
  logger: Logger;
  schedules: boolean;
  unknownTaskWaitMs: number;
}

/** Every field of `WorkerOptions`: another is refused by name. */
const WORKER_OPTION_KEYS = [
  'queues',
  'concurrency',
  'leaseMs',
  'renewEvery',
  'shutdownGraceMs',
  'pruneEvery',
  'id',
  'logger',
  'schedules',
  'unknownTaskWaitMs',
];

/** Checks the options (a `ConfigError` names the bad one) and fills in the defaults. */
export function workerSettings(host: WorkerHost, options: WorkerOptions): WorkerSettings {
  checkFields(options, WORKER_OPTION_KEYS, 'Worker options', 'a worker option');
  if (options.queues !== undefined && !Array.isArray(options.queues)) {
    throw new ConfigError(`Worker option queues must be an array of queue names, got ${show(options.queues)}`);
  }
  const given = options.queues ?? [...new Set([...host.tasks.values()].map((t) => t.queue))];
  if (given.length === 0) throw new ConfigError('The worker has no queue: define tasks first or pass queues');
  const queues = [...new Set(given.map((q) => checkQueueName(q, 'Worker')))];
  const foreign = foreignQueues(queues, host.tasks.values(), "the app's");
  if (foreign) throw new ConfigError(`Worker option queues: ${foreign}`);
  const concurrency = intOption(options.concurrency ?? 10, 'concurrency', 1, MAX_CONCURRENCY);
  // Timers longer than Node's longest (2^31-1 ms) fire after 1 ms: renewals and prunes would spin.
  const leaseMs = intOption(options.leaseMs ?? DEFAULT_LEASE_MS, 'leaseMs', MIN_LEASE_MS, MAX_TIMER_MS);
  const renewEvery = intOption(options.renewEvery ?? Math.max(1, Math.floor(leaseMs / 4)), 'renewEvery', 1, MAX_TIMER_MS);
  if (renewEvery >= leaseMs) throw new ConfigError(`renewEvery (${renewEvery}) must be shorter than leaseMs (${leaseMs})`);
  if (options.id !== undefined && (typeof options.id !== 'string' || options.id.length === 0)) {
    throw new ConfigError(`Worker option id must be a non-empty string, got ${show(options.id)}`);
  }
  if (options.schedules !== undefined && typeof options.schedules !== 'boolean') {
    throw new ConfigError(`Worker option schedules must be true or false, got ${show(options.schedules)}`);
  }
  const id = options.id ?? `${hostname()}:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
  return {
    id,
    queues,
    concurrency,
    leaseMs,
    renewEvery,
    shutdownGraceMs: checkTimerMs(options.shutdownGraceMs ?? 10_000, 'Worker option shutdownGraceMs'),
    pruneEvery: intOption(options.pruneEvery ?? 60_000, 'pruneEvery', 1, MAX_TIMER_MS),
    logger: (options.logger ?? host.logger).child({ worker: id }),
    schedules: options.schedules ?? true,
    unknownTaskWaitMs: intOption(options.unknownTaskWaitMs ?? DEFAULT_UNKNOWN_TASK_WAIT_MS, 'unknownTaskWaitMs', 0, MAX_TIMER_MS),
  };
}

/**
 * The queues among `queues` that none of `tasks` uses, said as a refusal (else undefined): a worker
 * fails the runs of tasks it does not define (after `unknownTaskWaitMs`), so it takes only the
 * queues of its tasks, not those of another service's workers. The one check of `errand.worker({ queues })`
 * and `errand worker --queues`; `whose` names the tasks ("the app's", "the module's").
 */
export function foreignQueues(queues: readonly string[], tasks: Iterable<{ queue: string }>, whose: string): string | undefined {
  const known = [...new Set([...tasks].map((t) => t.queue))];
  const unknown = queues.filter((q) => !known.includes(q));
  if (!unknown.length) return undefined;
  const list = (qs: string[]) => qs.map((q) => JSON.stringify(q)).join(', ');
  return `unknown queue${unknown.length > 1 ? 's' : ''} ${list(unknown)}: ${whose} tasks use ${list(known) || 'no queue'} (a worker would fail the runs of tasks it does not define, so it takes only their queues)`;
}

/**
 * The default lease: a dead worker's runs start elsewhere within about 8 s (the lease, plus a
 * reserve), and, renewed every 2 s, a lease survives an event-loop stall of up to 6 s less a
 * renewal's round trip (documented as 5 s).
 */
export const DEFAULT_LEASE_MS = 8000;

/** How long a worker hands back a run of a task it does not define before failing it (`unknownTaskWaitMs`). */
export const DEFAULT_UNKNOWN_TASK_WAIT_MS = 300_000;

/** The shortest lease (a shorter one would be renewed every few ms), for the API and `errand worker --lease-ms`. */
export const MIN_LEASE_MS = 100;

/** The most runs a worker executes at once, for the API and `errand worker --concurrency`. */
export const MAX_CONCURRENCY = 10_000;

function intOption(v: unknown, name: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    throw new ConfigError(`Worker option ${name} must be an integer from ${min} to ${max}, got ${show(v)}`);
  return v;
}
