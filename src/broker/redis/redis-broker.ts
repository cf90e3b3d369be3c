/**
 * The Redis broker: the Broker contract (`../types.ts`) over Redis 6.2+ or Redis Cluster, with one
 * Lua script per state transition (`./lua/*.lua`, loaded by `./scripts.ts`).
 *
 * Layout (details in `lua/common.lua`): every key of a queue shares the hash tag `{<queue>}`, so a
 * queue lives in one Cluster slot and no script touches two queues. A run is a small hash named by
 * the ULID part of its id; queued runs sit in one FIFO list per priority level, scheduled and
 * active runs in sorted sets by due time and lease expiry, finished runs in one sorted set per
 * state by the time in their id (listing, counts) and in one list per minute their retention ends,
 * from which `prune` deletes them.
 *
 * Batches: a batch of runs of one queue is one script call (chunked only when very large); calls
 * for several queues are issued together (ioredis writes them without waiting for replies).
 *
 * Connections per broker instance: one for commands, one subscriber (created on the first
 * `watch`/`onCancel`), and one blocking connection per queue that `waitForWork` waits on.
 */
import type { Logger } from 'pino';
import { BrokerUnavailableError, ConfigError } from '../../core/errors.ts';
import { QUEUE_NAME, timeOfRunId } from '../../core/ids.ts';
import {
  type Broker,
  type BrokerInspector,
  type BrokerOptions,
  type CancelOutcome,
  type EnqueueResult,
  LATENCY_BUCKETS_MS,
  type Lease,
  type MinuteStats,
  type NewRun,
  type QueueCounts,
  RUN_STATES,
  type Reservation,
  type ReserveRequest,
  type ReserveResult,
  type RetryOutcome,
  type RunFilter,
  type RunPage,
  type RunRecord,
  type RunState,
  type Settlement,
  type SettleStatus,
  type WorkerInfo,
  type WorkerStatus,
} from '../types.ts';
import { redact } from '../connect.ts';
import { ownRetention } from '../shared/options.ts';
import { CorruptRunError, corruptErrorText, decodeRun, QueueKeys, STATE_OF_CODE, splitRunId } from './codec.ts';
import { ConnectionGate, createClient, parseRedisUrl, type RedisClient, type RedisTarget, type TlsOptions } from './connection.ts';
import { defineScripts, runScript } from './scripts.ts';
import { WakeListener } from './wake.ts';

export { CorruptRunError } from './codec.ts';

const DAY = 86_400_000;

export interface RedisBrokerOptions extends BrokerOptions {
  /** `redis://[user:pass@]host:port[/db]`, `rediss://...` (TLS), `redis+cluster://host:port[,host:port...]`, `rediss+cluster://...`. */
  url: string;
  /**
   * Node `tls.connect` options (e.g. `{ ca }` for a private CA, `{ cert, key }` for client
   * certificates). Given, every connection speaks TLS, whatever the scheme. Default: TLS with the
   * system's CAs for `rediss://` URLs, none otherwise. (`connectBroker` reads `ERRAND_REDIS_CA`.)
   */
  tls?: TlsOptions;
  /** Prefix of every key. Default `errand`. */
  prefix?: string;
  /** Disconnects and reconnects are logged at warn. */
  logger?: Logger;
  /**
   * Retention of cancelled runs stored without one of their own (`NewRun.cancelledRetentionMs`), in
   * ms. Default 86400000 (1 day), the task default for cancelled runs.
   */
  cancelledRetentionMs?: number;
  /**
   * How long a command waits for a connection in progress before failing with
   * `BrokerUnavailableError`, in ms. While Redis is known to be down, commands fail at once.
   * Default 2000.
   */
  connectWaitMs?: number;
  /**
   * Entries `listRuns` examines per structure of a queue in one call (a page stops there and the
   * next one goes on). Default 20000.
   */
  listCap?: number;
}

/** Runs per script call (larger batches are split, in order). */
const CHUNK_RUNS = 500;
/** Payload bytes per script call, roughly (a call of several MB would hold Redis for too long). */
const CHUNK_BYTES = 4 * 1024 * 1024;
/** Scheduled runs promoted, and expired leases recovered, per reserve call. */
const HOUSEKEEPING_LIMIT = 1000;
/** Finished runs deleted per state per prune call. */
const PRUNE_LIMIT = 1000;
/** Runs deleted or replayed per purge / retryFailed call. */
const SLICE = 1000;
/** Entries a listing examines per structure of a queue (the listing then goes on from there). */
const LIST_CAP = 20_000;
/** Workers are listed this long after their last heartbeat, in ms. */
const WORKER_MEMORY_MS = 3_600_000;
const MINUTE = 60_000;
const CURSOR = /^[0-9A-HJKMNP-TV-Z]{26}$/;
const CODE_OF_STATE: Readonly<Record<RunState, string>> = {
  queued: 'q',
  scheduled: 's',
  active: 'a',
  succeeded: 'd',
  failed: 'f',
  cancelled: 'c',
};

interface ResolvedOptions {
  maxLeaseLosses: number;
  failedRetentionMs: number;
  cancelledRetentionMs: number;
}

function nonNegative(value: unknown, name: string, fallback: number, { integer = false, min = 0 } = {}): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || (integer && !Number.isInteger(value))) {
    throw new ConfigError(`RedisBroker: ${name} must be ${integer ? 'an integer' : 'a number'} >= ${min}, got ${String(value)}`);
  }
  return Math.floor(value);
}

/** Splits `items` into chunks of at most CHUNK_RUNS items and about CHUNK_BYTES. */
function chunk<T>(items: readonly T[], size: (item: T) => number): T[][] {
  const out: T[][] = [];
  let cur: T[] = [];
  let bytes = 0;
  for (const item of items) {
    const b = size(item);
    if (cur.length && (cur.length >= CHUNK_RUNS || bytes + b > CHUNK_BYTES)) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(item);
    bytes += b;
  }
  if (cur.length) out.push(cur);
  return out;
}

/** Groups items by the queue of their run id, keeping their indexes; items with an invalid id go to `invalid`. */
function byQueue<T extends { id: string }>(
  items: readonly T[],
): { groups: Map<string, { item: T; rid: string; index: number }[]>; invalid: number[] } {
  const groups = new Map<string, { item: T; rid: string; index: number }[]>();
  const invalid: number[] = [];
  items.forEach((item, index) => {
    const parts = splitRunId(item.id);
    if (!parts) {
      invalid.push(index);
      return;
    }
    let g = groups.get(parts.queue);
    if (!g) groups.set(parts.queue, (g = []));
    g.push({ item, rid: parts.rid, index });
  });
  return { groups, invalid };
}

const settlementSize = ({ item }: { item: Settlement }) =>
  (item.outcome === 'succeeded' ? (item.result?.length ?? 0) : item.error.length) + 100;

/** Whether settlements go in one call (what `chunk` would leave in one part), without splitting them. */
function fitsOneCall(group: readonly { item: Settlement }[]): boolean {
  if (group.length > CHUNK_RUNS) return false;
  let bytes = 0;
  for (const g of group) bytes += settlementSize(g);
  return group.length === 1 || bytes <= CHUNK_BYTES;
}

/** The ARGV of settlements, 5 per item (see settleItems in lua/common.lua). */
function pushSettlements(args: (string | number)[], part: readonly { item: Settlement; rid: string }[]): void {
  for (const { item, rid } of part) {
    if (item.outcome === 'succeeded') args.push(rid, item.attempt, 's', item.result ?? '', Math.max(0, Math.floor(item.retentionMs)));
    else if (item.outcome === 'failed') args.push(rid, item.attempt, 'f', item.error, Math.max(0, Math.floor(item.retentionMs)));
    else args.push(rid, item.attempt, 'r', item.error, Math.floor(item.runAt));
  }
}

function time(value: number, name: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value))
    throw new ConfigError(`RedisBroker: ${name} must be a finite number of ms, got ${String(value)}`);
  return Math.floor(value);
}

export class RedisBroker implements Broker, BrokerInspector {
  readonly kind = 'redis' as const;
  readonly remote = true;
  readonly prefix: string;
  readonly #target: RedisTarget;
  readonly #tls: TlsOptions | undefined;
  readonly #where: string;
  readonly #logger: Logger | undefined;
  readonly #options: ResolvedOptions;
  readonly #connectWaitMs: number;
  readonly #listCap: number;
  readonly #main: ConnectionGate;
  readonly #queuesKey: string;
  readonly #pausedKey: string;
  readonly #workersKey: string;
  readonly #eventsChannel: string;
  readonly #cancelsChannel: string;
  readonly #keys = new Map<string, QueueKeys>();
  /** Queues already added to the `<prefix>:queues` set by this instance. */
  readonly #knownQueues = new Set<string>();

  #sub: ConnectionGate | undefined;
  /** Set by onCancel(): subscribing or subscribed to cancel notices (unset when subscribing failed). */
  #cancelsSubscribed = false;
  /** The subscription to cancel notices while it is being made (reserve waits for it, boundedly). */
  #cancelsPending: Promise<void> | undefined;
  readonly #subscriptions = new Map<string, Promise<void>>();
  readonly #watchers = new Map<string, Set<() => void>>();
  readonly #cancelListeners = new Set<(ids: string[]) => void>();

  readonly #wakeGates = new Map<string, ConnectionGate>();
  readonly #wakeListeners = new Map<string, WakeListener>();
  readonly #waits = new Set<() => void>();
  #closed = false;

  constructor(options: RedisBrokerOptions) {
    if (!options || typeof options.url !== 'string') throw new ConfigError('RedisBroker: options.url is required (redis://host:port)');
    this.#target = parseRedisUrl(options.url);
    if (options.tls !== undefined && (options.tls === null || typeof options.tls !== 'object')) {
      throw new ConfigError('RedisBroker: tls must be an object of TLS options, e.g. { ca }');
    }
    this.#tls = options.tls;
    this.#where = this.#target.kind === 'single' ? redact(options.url) : this.#target.nodes.map((n) => `${n.host}:${n.port}`).join(',');
    const prefix = options.prefix ?? 'errand';
    if (typeof prefix !== 'string' || prefix === '' || /[{}\s]/.test(prefix)) {
      throw new ConfigError(`RedisBroker: prefix must be a non-empty string without braces or spaces, got ${JSON.stringify(prefix)}`);
    }
    this.prefix = prefix;
    this.#logger = options.logger;
    this.#options = {
      maxLeaseLosses: nonNegative(options.maxLeaseLosses, 'maxLeaseLosses', 3, { integer: true, min: 1 }),
      failedRetentionMs: nonNegative(options.failedRetentionMs, 'failedRetentionMs', 7 * DAY),
      cancelledRetentionMs: nonNegative(options.cancelledRetentionMs, 'cancelledRetentionMs', DAY),
    };
    this.#connectWaitMs = nonNegative(options.connectWaitMs, 'connectWaitMs', 2000);
    this.#listCap = nonNegative(options.listCap, 'listCap', LIST_CAP, { integer: true, min: 1 });
    this.#queuesKey = `${prefix}:queues`;
    this.#pausedKey = `${prefix}:paused`;
    this.#workersKey = `${prefix}:workers`;
    this.#eventsChannel = `${prefix}:events`;
    this.#cancelsChannel = `${prefix}:cancels`;
    const main = createClient(this.#target, 'main', this.#tls);
    defineScripts(main);
    this.#main = new ConnectionGate(main, this.#where, this.#logger, this.#connectWaitMs);
  }

  #k(queue: string): QueueKeys {
    let k = this.#keys.get(queue);
    if (!k) {
      k = new QueueKeys(this.prefix, queue);
      this.#keys.set(queue, k);
    }
    return k;
  }

  get #redis(): RedisClient {
    return this.#main.client;
  }

  async #ready(): Promise<RedisClient> {
    // As on SQLite: a call after close() is refused with BrokerUnavailableError, not ioredis's own error.
    if (this.#closed) throw new BrokerUnavailableError(`The Redis broker (${this.#where}) is closed`);
    await this.#main.ready();
    return this.#main.client;
  }

  /** Adds queues to the set of known queues (once per instance), alongside the caller's command. */
  #remember(queues: readonly string[]): Promise<unknown> {
    const fresh = queues.filter((q) => !this.#knownQueues.has(q));
    if (!fresh.length) return Promise.resolve();
    for (const q of fresh) this.#knownQueues.add(q);
    return this.#redis.sadd(this.#queuesKey, ...fresh).catch((err: unknown) => {
      for (const q of fresh) this.#knownQueues.delete(q);
      throw err;
    });
  }

  // -----------------------------------------------------------------------------------------------
  // Enqueue, reserve, settle

  async enqueue(runs: readonly NewRun[], now: number): Promise<EnqueueResult[]> {
    if (runs.length === 0) return [];
    now = time(now, 'now');
    // Runs by queue (indexes into `runs`), every id checked before anything is written.
    const groups = new Map<string, number[]>();
    const rids: string[] = new Array(runs.length);
    for (let i = 0; i < runs.length; i++) {
      const run = runs[i]!;
      const parts = splitRunId(run.id);
      if (!parts)
        throw new ConfigError(`enqueue: run id ${JSON.stringify(run.id)} is not a run id (expected <queue>.<ulid>, see newRunId)`);
      if (parts.queue !== run.queue) {
        throw new ConfigError(`enqueue: run ${run.id} names queue "${run.queue}", but its id belongs to queue "${parts.queue}"`);
      }
      rids[i] = parts.rid;
      const g = groups.get(parts.queue);
      if (g) g.push(i);
      else groups.set(parts.queue, [i]);
    }
    const redis = await this.#ready();
    const results: EnqueueResult[] = new Array(runs.length);
    const calls: Promise<unknown>[] = [];
    for (const [queue, indexes] of groups) {
      if (!this.#knownQueues.has(queue)) calls.push(this.#remember([queue]));
      const k = this.#k(queue);
      // Chunks of one queue go one after another, so that a retried call (a NOSCRIPT reload, a
      // cluster redirect) can never put a later chunk's runs ahead of an earlier one's (FIFO).
      let chain: Promise<unknown> = Promise.resolve();
      for (let from = 0; from < indexes.length; ) {
        // One call per CHUNK_RUNS runs or about CHUNK_BYTES of input.
        const part: number[] = [];
        const args: (string | number)[] = [k.base, now];
        let bytes = 0;
        while (from < indexes.length && part.length < CHUNK_RUNS && (part.length === 0 || bytes < CHUNK_BYTES)) {
          const i = indexes[from++]!;
          const run = runs[i]!;
          const runAt = Math.floor(run.runAt);
          part.push(i);
          bytes += run.input.length + 200;
          args.push(
            rids[i]!,
            run.task,
            run.input,
            Math.trunc(run.priority || 0),
            Number.isFinite(runAt) ? runAt : now,
            timeOfRunId(run.id) === now ? '' : now,
            run.idempotencyKey ?? '',
            run.idempotencyKey ? Math.max(1, Math.floor(run.idempotencyTtl ?? DAY)) : 0,
            run.traceparent ?? '',
            ownRetention(run.cancelledRetentionMs) ?? '',
          );
        }
        chain = chain.then(() =>
          runScript(redis, 'enqueue', [k.sched], args).then((reply) => {
            const r = reply as (string | number)[];
            for (let j = 0; j < part.length; j++) {
              results[part[j]!] = {
                id: k.idPrefix + String(r[j * 3]),
                created: r[j * 3 + 1] === 1,
                state: STATE_OF_CODE[String(r[j * 3 + 2])] ?? 'queued',
              };
            }
          }),
        );
      }
      calls.push(chain);
    }
    await (calls.length === 1 ? calls[0] : Promise.all(calls));
    return results;
  }

  /** One queue's reserve script; `settle`: this queue's outcomes to record first, in the same call. */
  #reserveCall(
    redis: RedisClient,
    queue: string,
    req: ReserveRequest,
    max: number,
    now: number,
    settle?: readonly { item: Settlement; rid: string; index: number }[],
    statuses?: SettleStatus[],
  ): Promise<{ queue: string; runs: Reservation[]; nextAt: number | null; queued: number }> {
    const k = this.#k(queue);
    const args: (string | number)[] = [
      k.base,
      req.workerId,
      max,
      now + Math.max(1, Math.floor(req.leaseMs)),
      now,
      this.#options.maxLeaseLosses,
      this.#options.failedRetentionMs,
      HOUSEKEEPING_LIMIT,
      this.#eventsChannel,
      k.idPrefix,
    ];
    if (settle) pushSettlements(args, settle);
    return runScript(redis, 'reserve', [k.sched, k.active, k.prios, k.paused], args).then((reply) => {
      const r = reply as (string | number)[];
      const m = Number(r[2]);
      if (settle && statuses)
        settle.forEach(({ index }, j) => {
          statuses[index] = r[3 + j] === 1 ? 'ok' : 'lost';
        });
      const runs: Reservation[] = [];
      for (let j = 3 + m; j + 6 < r.length; j += 7) {
        const id = k.id(String(r[j]));
        const e = String(r[j + 5]);
        const run: Reservation = {
          id,
          task: String(r[j + 1]),
          queue,
          input: String(r[j + 2]),
          attempt: Number(r[j + 3]),
          priority: Number(r[j + 4]),
          enqueuedAt: e === '' ? timeOfRunId(id) : Number(e),
          startedAt: now,
        };
        const tp = String(r[j + 6]);
        if (tp !== '') run.traceparent = tp;
        runs.push(run);
      }
      const nextAt = Number(r[0]);
      return { queue, runs, nextAt: nextAt < 0 ? null : nextAt, queued: Number(r[1]) };
    });
  }

  /**
   * One queue: one script call. Several queues: the first is asked for `max` runs while the
   * others only do their housekeeping and report how many runs they have queued, all in one
   * round; then, if slots remain, the other queues are asked, in order, for what they reported
   * (at most what remains), in a second round. Queues are served in the order requested and the
   * worker is never handed more than `max` runs.
   */
  async reserve(req: ReserveRequest): Promise<ReserveResult> {
    const now = time(req.now, 'now');
    const queues = [...new Set(req.queues)].filter((q) => QUEUE_NAME.test(q));
    const max = Math.max(0, Math.floor(req.max));
    const settlements = req.settle ?? [];
    if (queues.length === 0 && settlements.length === 0) return { runs: [], nextAt: null };
    const redis = await this.#ready();
    // Outcomes ride along with the first call to their queue when they fit in one call; the others
    // (other queues, or too many) are settled by a settle call made at the same time.
    const settled: SettleStatus[] = settlements.map(() => 'lost');
    const along = new Map<string, { item: Settlement; rid: string; index: number }[]>();
    let apart: Promise<void> | undefined;
    if (settlements.length) {
      const { groups } = byQueue(settlements);
      const rest: number[] = [];
      for (const [queue, group] of groups) {
        if (queues.includes(queue) && fitsOneCall(group)) along.set(queue, group);
        else for (const { index } of group) rest.push(index);
      }
      if (rest.length)
        apart = this.settle(
          req.workerId,
          rest.map((i) => settlements[i]!),
          now,
        ).then((r) =>
          rest.forEach((i, j) => {
            settled[i] = r[j]!;
          }),
        );
    }
    if (queues.length === 0) {
      await apart;
      return { runs: [], nextAt: null, settled };
    }
    // Runs leased after onCancel() get their cancel notices: wait (boundedly) for the subscription.
    if (this.#cancelsPending) await this.#bounded(this.#cancelsPending);
    const [first] = await Promise.all([
      Promise.all(queues.map((q, i) => this.#reserveCall(redis, q, req, i === 0 ? max : 0, now, along.get(q), settled))),
      apart,
    ]);
    const byQueueRuns = new Map<string, Reservation[]>(first.map((r) => [r.queue, r.runs]));
    let nextAt: number | null = null;
    const earliest = (t: number | null) => {
      if (t !== null && (nextAt === null || t < nextAt)) nextAt = t;
    };
    for (const r of first) earliest(r.nextAt);
    let left = max - (first[0]?.runs.length ?? 0);
    if (left > 0 && queues.length > 1) {
      const second: Promise<{ queue: string; runs: Reservation[]; nextAt: number | null }>[] = [];
      for (const r of first.slice(1)) {
        if (left <= 0) break;
        if (r.queued <= 0) continue;
        const take = Math.min(r.queued, left);
        left -= take;
        second.push(this.#reserveCall(redis, r.queue, req, take, now));
      }
      for (const r of await Promise.all(second)) {
        byQueueRuns.set(r.queue, [...(byQueueRuns.get(r.queue) ?? []), ...r.runs]);
        earliest(r.nextAt);
      }
    }
    const runs = queues.flatMap((q) => byQueueRuns.get(q) ?? []);
    return settlements.length ? { runs, nextAt, settled } : { runs, nextAt };
  }

  async settle(workerId: string, settlements: readonly Settlement[], now: number): Promise<SettleStatus[]> {
    if (settlements.length === 0) return [];
    now = time(now, 'now');
    const statuses: SettleStatus[] = settlements.map(() => 'lost');
    const { groups } = byQueue(settlements);
    if (groups.size === 0) return statuses;
    const redis = await this.#ready();
    const calls: Promise<void>[] = [];
    for (const [queue, group] of groups) {
      const k = this.#k(queue);
      for (const part of chunk(group, settlementSize)) {
        const args: (string | number)[] = [k.base, workerId, now, this.#eventsChannel, k.idPrefix];
        pushSettlements(args, part);
        calls.push(
          runScript(redis, 'settle', [k.active, k.sched], args).then((reply) => {
            const r = reply as number[];
            part.forEach(({ index }, j) => {
              statuses[index] = r[j] === 1 ? 'ok' : 'lost';
            });
          }),
        );
      }
    }
    await Promise.all(calls);
    return statuses;
  }

  async renew(workerId: string, leases: readonly Lease[], leaseMs: number, now: number): Promise<string[]> {
    if (leases.length === 0) return [];
    now = time(now, 'now');
    const { groups, invalid } = byQueue(leases);
    const lost = invalid.map((i) => leases[i]!.id);
    if (groups.size === 0) return lost;
    const redis = await this.#ready();
    const expiry = now + Math.max(1, Math.floor(leaseMs));
    const calls: Promise<void>[] = [];
    for (const [queue, group] of groups) {
      const k = this.#k(queue);
      for (const part of chunk(group, () => 40)) {
        const args: (string | number)[] = [k.base, workerId, expiry];
        for (const { item, rid } of part) args.push(rid, item.attempt);
        calls.push(
          runScript(redis, 'renew', [k.active], args).then((reply) => {
            for (const rid of reply as string[]) lost.push(k.id(rid));
          }),
        );
      }
    }
    await Promise.all(calls);
    return lost;
  }

  async release(workerId: string, leases: readonly Lease[], now: number): Promise<void> {
    if (leases.length === 0) return;
    now = time(now, 'now');
    const { groups } = byQueue(leases);
    if (groups.size === 0) return;
    const redis = await this.#ready();
    const calls: Promise<unknown>[] = [];
    for (const [queue, group] of groups) {
      const k = this.#k(queue);
      for (const part of chunk(group, () => 40)) {
        const args: (string | number)[] = [k.base, workerId, now, this.#eventsChannel, k.idPrefix];
        for (const { item, rid } of part) args.push(rid, item.attempt);
        calls.push(runScript(redis, 'release', [k.active], args));
      }
    }
    await Promise.all(calls);
  }

  async progress(workerId: string, lease: Lease, progress: string): Promise<SettleStatus> {
    const parts = splitRunId(lease.id);
    if (!parts) return 'lost';
    const k = this.#k(parts.queue);
    const redis = await this.#ready();
    const r = await runScript(redis, 'progress', [k.run(parts.rid)], [workerId, lease.attempt, progress, this.#eventsChannel, lease.id]);
    return r === 1 ? 'ok' : 'lost';
  }

  // -----------------------------------------------------------------------------------------------
  // Reading and administration

  async getRun(id: string): Promise<RunRecord | null> {
    const parts = splitRunId(id);
    if (!parts) return null;
    const key = this.#k(parts.queue).run(parts.rid);
    const redis = await this.#ready();
    let h: Record<string, string>;
    try {
      h = await redis.hgetall(key);
    } catch (err) {
      if (!(err instanceof Error && err.message.startsWith('WRONGTYPE'))) throw err;
      // Not a hash: shown as a failed run saying so (the next reserve that meets it fails it for good).
      return {
        id,
        task: '',
        queue: parts.queue,
        state: 'failed',
        priority: 0,
        input: '',
        error: corruptErrorText(id, key, 'the key is not a hash'),
        attempts: 0,
        leaseLosses: 0,
        enqueuedAt: timeOfRunId(id),
        history: [],
      };
    }
    if (Object.keys(h).length === 0) return null;
    return decodeRun(id, parts.queue, key, h);
  }

  async cancel(id: string, now: number): Promise<CancelOutcome> {
    now = time(now, 'now');
    const parts = splitRunId(id);
    if (!parts) return { outcome: 'not_found' };
    const k = this.#k(parts.queue);
    const redis = await this.#ready();
    const r = (await runScript(
      redis,
      'cancel',
      [k.run(parts.rid)],
      [k.base, parts.rid, now, this.#options.cancelledRetentionMs, this.#eventsChannel, this.#cancelsChannel, id],
    )) as string[];
    switch (r[0]) {
      case 'C':
        return { outcome: 'cancelled', previous: this.#state(r[1], id, k.run(parts.rid)) };
      case 'F':
        return { outcome: 'finished', state: this.#state(r[1], id, k.run(parts.rid)) };
      case 'N':
        return { outcome: 'not_found' };
      default:
        throw new CorruptRunError(id, k.run(parts.rid), 'it is not a hash with a known state');
    }
  }

  async retry(id: string, now: number): Promise<RetryOutcome> {
    now = time(now, 'now');
    const parts = splitRunId(id);
    if (!parts) return { outcome: 'not_found' };
    const k = this.#k(parts.queue);
    const redis = await this.#ready();
    const r = (await runScript(redis, 'retry', [k.run(parts.rid)], [k.base, parts.rid, this.#eventsChannel, id, now])) as string[];
    switch (r[0]) {
      case 'Q':
        return { outcome: 'queued' };
      case 'S':
        return { outcome: 'not_failed', state: this.#state(r[1], id, k.run(parts.rid)) };
      case 'N':
        return { outcome: 'not_found' };
      default:
        throw new CorruptRunError(id, k.run(parts.rid), 'it is not a hash with a known state');
    }
  }

  #state(code: string | undefined, id: string, key: string): RunState {
    const state = code === undefined ? undefined : STATE_OF_CODE[code];
    if (!state) throw new CorruptRunError(id, key, `unknown state code ${JSON.stringify(code)}`);
    return state;
  }

  /** Waits for `p`, at most connectWaitMs; never throws. */
  async #bounded(p: Promise<unknown>): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([p.catch(() => {}), new Promise((r) => (timer = setTimeout(r, this.#connectWaitMs)))]);
    clearTimeout(timer);
  }

  async #allQueues(redis: RedisClient): Promise<string[]> {
    return (await redis.smembers(this.#queuesKey)).filter((q) => QUEUE_NAME.test(q)).sort();
  }

  async counts(queues?: readonly string[]): Promise<Record<string, QueueCounts>> {
    const redis = await this.#ready();
    const list = queues ? [...new Set(queues)] : await this.#allQueues(redis);
    const out: Record<string, QueueCounts> = {};
    await Promise.all(
      list.map(async (queue) => {
        if (!QUEUE_NAME.test(queue)) {
          out[queue] = { queued: 0, scheduled: 0, active: 0, succeeded: 0, failed: 0, cancelled: 0 };
          return;
        }
        const k = this.#k(queue);
        const r = (await runScript(
          redis,
          'counts',
          [k.prios, k.sched, k.active, k.succeeded, k.failed, k.cancelled],
          [k.base],
        )) as number[];
        out[queue] = { queued: r[0]!, scheduled: r[1]!, active: r[2]!, succeeded: r[3]!, failed: r[4]!, cancelled: r[5]! };
      }),
    );
    // Keys in the order asked (Promise.all filled them in reply order).
    return Object.fromEntries(list.map((q) => [q, out[q]!]));
  }

  async prune(now: number): Promise<number> {
    now = time(now, 'now');
    const redis = await this.#ready();
    const queues = await this.#allQueues(redis);
    const removed = await Promise.all(
      queues.map(async (queue) => {
        const k = this.#k(queue);
        let total = 0;
        for (;;) {
          const [n, more] = (await runScript(
            redis,
            'prune',
            [k.succeeded, k.failed, k.cancelled, k.expiryMinutes],
            [k.base, now, PRUNE_LIMIT, PRUNE_LIMIT, this.#eventsChannel, k.idPrefix],
          )) as [number, number];
          total += n;
          if (!more) return total;
        }
      }),
    );
    return removed.reduce((a, b) => a + b, 0);
  }

  // -----------------------------------------------------------------------------------------------
  // Wake-ups, watching, cancel notices

  async waitForWork(queues: readonly string[], until: number | null, signal: AbortSignal): Promise<void> {
    if (signal.aborted || this.#closed) return;
    const delay = until === null ? null : until - Date.now();
    if (delay !== null && delay <= 0) return;
    const listeners = [...new Set(queues)].filter((q) => QUEUE_NAME.test(q)).map((q) => this.#wakeListener(q));
    await new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      let finished = false;
      const done = () => {
        if (finished) return;
        finished = true;
        if (timer) clearTimeout(timer);
        signal.removeEventListener('abort', done);
        for (const l of listeners) l.delete(done);
        this.#waits.delete(done);
        resolve();
      };
      signal.addEventListener('abort', done, { once: true });
      // setTimeout takes at most 2^31-1 ms: a later `until` wakes early, which is allowed.
      if (delay !== null) timer = setTimeout(done, Math.min(delay, 2 ** 31 - 1));
      this.#waits.add(done);
      for (const l of listeners) l.add(done);
    });
  }

  #wakeListener(queue: string): WakeListener {
    let l = this.#wakeListeners.get(queue);
    if (!l) {
      const gate = new ConnectionGate(
        createClient(this.#target, 'blocking', this.#tls),
        this.#where,
        this.#logger,
        this.#connectWaitMs,
        true,
      );
      this.#wakeGates.set(queue, gate);
      const k = this.#k(queue);
      l = new WakeListener(
        gate.client,
        k.wake,
        () => this.#main.ready().then(() => runScript(this.#redis, 'wake', [k.wake], [])),
        () => this.#closed,
      );
      this.#wakeListeners.set(queue, l);
    }
    return l;
  }

  #subscriber(): ConnectionGate {
    if (!this.#sub) {
      const gate = new ConnectionGate(
        createClient(this.#target, 'subscriber', this.#tls),
        this.#where,
        this.#logger,
        this.#connectWaitMs,
        true,
      );
      let readyOnce = false;
      gate.client.on('ready', () => {
        // After a reconnect, events may have been missed: tell every watcher to look again.
        if (readyOnce) for (const set of this.#watchers.values()) for (const fn of [...set]) safeCall(fn);
        readyOnce = true;
      });
      gate.client.on('message', (channel: string, message: string) => {
        if (channel === this.#eventsChannel) {
          const set = this.#watchers.get(message);
          if (set) for (const fn of [...set]) safeCall(fn);
        } else if (channel === this.#cancelsChannel) {
          for (const fn of [...this.#cancelListeners]) safeCall(() => fn([message]));
        }
      });
      this.#sub = gate;
    }
    return this.#sub;
  }

  #subscribe(channel: string): Promise<void> {
    let p = this.#subscriptions.get(channel);
    if (!p) {
      p = this.#subscriber()
        .client.subscribe(channel)
        .then(() => undefined);
      p.catch(() => this.#subscriptions.delete(channel));
      this.#subscriptions.set(channel, p);
    }
    return p;
  }

  async watch(id: string, listener: () => void): Promise<() => void> {
    let set = this.#watchers.get(id);
    if (!set) this.#watchers.set(id, (set = new Set()));
    // A wrapper per call: the same function watched twice is stopped twice independently.
    const entry = () => listener();
    set.add(entry);
    let stopped = false;
    const stop = () => {
      if (stopped) return;
      stopped = true;
      const s = this.#watchers.get(id);
      s?.delete(entry);
      if (s && s.size === 0) this.#watchers.delete(id);
    };
    const parts = splitRunId(id);
    if (!parts) return stop;
    try {
      await this.#main.ready();
      await this.#subscribe(this.#eventsChannel);
      await runScript(this.#redis, 'watch', [this.#k(parts.queue).run(parts.rid)], []);
    } catch (err) {
      stop();
      throw err;
    }
    return stop;
  }

  onCancel(listener: (ids: string[]) => void): () => void {
    const entry = (ids: string[]) => listener(ids);
    this.#cancelListeners.add(entry);
    if (!this.#closed && !this.#cancelsSubscribed) {
      const subscribed = this.#subscribe(this.#cancelsChannel).then(
        () => {
          if (this.#cancelsPending === subscribed) this.#cancelsPending = undefined;
        },
        (err: unknown) => {
          if (this.#cancelsPending === subscribed) {
            this.#cancelsPending = undefined;
            this.#cancelsSubscribed = false;
          }
          this.#logger?.warn(
            { err: (err as Error).message },
            'Redis: subscribing to cancel notices failed (renew still reports cancelled runs)',
          );
        },
      );
      this.#cancelsSubscribed = true;
      this.#cancelsPending = subscribed;
    }
    return () => {
      this.#cancelListeners.delete(entry);
    };
  }

  // -----------------------------------------------------------------------------------------------
  // Inspection and administration (BrokerInspector)

  /**
   * Newest first by run id, keyset-paginated on the id (the cursor is the ULID of the last run
   * of the page). Each queue's structures are read by `lua/list.lua` (at most `limit + 1` runs
   * per queue), and the queues' pages are merged here.
   */
  async listRuns(filter: RunFilter): Promise<RunPage> {
    const limit = Math.min(500, Math.max(1, Math.floor(Number(filter.limit)) || 1));
    const { queue, task, state } = filter;
    if (state !== undefined && !(RUN_STATES as readonly string[]).includes(state)) return { runs: [], next: null };
    const cursor = filter.cursor ?? '';
    if (cursor !== '' && !CURSOR.test(cursor)) {
      throw new ConfigError(`Invalid cursor ${JSON.stringify(filter.cursor)}: pass the "next" of a previous page`);
    }
    const redis = await this.#ready();
    const queues = queue !== undefined ? (QUEUE_NAME.test(queue) ? [queue] : []) : await this.#allQueues(redis);
    const codes = state !== undefined ? CODE_OF_STATE[state] : 'qsadfc';
    const pages = await Promise.all(
      queues.map(async (q) => {
        const k = this.#k(q);
        const [boundary, ...rids] = (await runScript(
          redis,
          'list',
          [k.prios, k.sched, k.active, k.succeeded, k.failed, k.cancelled],
          [k.base, codes, cursor, limit + 1, task ?? '', this.#listCap],
        )) as string[];
        return { boundary: boundary ?? '', runs: rids.map((rid) => ({ rid, queue: q })) };
      }),
    );
    // A queue whose structures were not read to their end is exact only down to its boundary:
    // the page stops there, and the next page starts there.
    let boundary = '';
    for (const p of pages) if (p.boundary > boundary) boundary = p.boundary;
    const merged = pages
      .flatMap((p) => p.runs)
      .filter((r) => r.rid >= boundary)
      .sort((a, b) => (a.rid < b.rid ? 1 : a.rid > b.rid ? -1 : a.queue < b.queue ? 1 : -1));
    const page = merged.slice(0, limit);
    const records = await Promise.all(
      page.map(async ({ rid, queue: q }) => {
        const k = this.#k(q);
        try {
          const h = await redis.hgetall(k.run(rid));
          return Object.keys(h).length ? decodeRun(k.id(rid), q, k.run(rid), h) : null;
        } catch {
          return null; // not a hash: left out of the page
        }
      }),
    );
    const last = page[page.length - 1];
    return {
      runs: records.filter((r): r is RunRecord => r !== null),
      next: merged.length > limit && last ? last.rid : boundary !== '' ? boundary : null,
    };
  }

  async listQueues(): Promise<string[]> {
    return this.#allQueues(await this.#ready());
  }

  async heartbeat(worker: WorkerInfo, ttlMs: number, now: number): Promise<void> {
    const status: WorkerStatus = {
      id: worker.id,
      host: worker.host,
      pid: worker.pid,
      queues: [...worker.queues],
      concurrency: worker.concurrency,
      active: worker.active,
      startedAt: worker.startedAt,
      lastSeen: now,
      ttlMs,
    };
    await (await this.#ready()).hset(this.#workersKey, worker.id, JSON.stringify(status));
  }

  async removeWorker(id: string): Promise<void> {
    await (await this.#ready()).hdel(this.#workersKey, id);
  }

  async listWorkers(now: number): Promise<WorkerStatus[]> {
    const redis = await this.#ready();
    const all = await redis.hgetall(this.#workersKey);
    const out: WorkerStatus[] = [];
    const forgotten: string[] = [];
    for (const [id, text] of Object.entries(all)) {
      try {
        const w = JSON.parse(text) as WorkerStatus;
        if (w.lastSeen < now - WORKER_MEMORY_MS) forgotten.push(id);
        else out.push(w);
      } catch {
        // A corrupt registry entry is skipped: the worker rewrites it on its next heartbeat.
      }
    }
    if (forgotten.length) await redis.hdel(this.#workersKey, ...forgotten);
    return out.sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  async pause(queue: string): Promise<void> {
    const k = this.#k(checkQueue(queue));
    const redis = await this.#ready();
    await Promise.all([redis.set(k.paused, '1'), redis.sadd(this.#pausedKey, queue), this.#remember([queue])]);
  }

  async resume(queue: string): Promise<void> {
    const k = this.#k(checkQueue(queue));
    const redis = await this.#ready();
    await Promise.all([redis.del(k.paused), redis.srem(this.#pausedKey, queue)]);
    await runScript(redis, 'wake', [k.wake], []);
  }

  async pausedQueues(): Promise<string[]> {
    return (await (await this.#ready()).smembers(this.#pausedKey)).sort();
  }

  async purge(queue: string, _now: number): Promise<number> {
    if (!QUEUE_NAME.test(queue)) return 0;
    const k = this.#k(queue);
    const redis = await this.#ready();
    let total = 0;
    for (;;) {
      const [n, more] = (await runScript(redis, 'purge', [k.prios, k.sched], [k.base, SLICE, this.#eventsChannel, k.idPrefix])) as [
        number,
        number,
      ];
      total += n;
      if (!more) return total;
    }
  }

  async retryFailed(queue: string, task: string | undefined, now: number): Promise<number> {
    if (!QUEUE_NAME.test(queue)) return 0;
    now = time(now, 'now');
    const k = this.#k(queue);
    const redis = await this.#ready();
    let total = 0;
    let offset = 0;
    for (;;) {
      const [replayed, skipped, scanned] = (await runScript(
        redis,
        'retryfailed',
        [k.failed],
        [k.base, task ?? '', offset, SLICE, this.#eventsChannel, k.idPrefix, now],
      )) as [number, number, number];
      total += replayed;
      offset += skipped;
      if (scanned < SLICE) return total;
    }
  }

  async stats(queues: readonly string[], since: number): Promise<Record<string, MinuteStats[]>> {
    const redis = await this.#ready();
    const from = Math.floor(since / MINUTE) * MINUTE;
    const out: Record<string, MinuteStats[]> = {};
    const buckets = LATENCY_BUCKETS_MS.length + 1;
    await Promise.all(
      [...new Set(queues)].map(async (queue) => {
        if (!QUEUE_NAME.test(queue)) {
          out[queue] = [];
          return;
        }
        const k = this.#k(queue);
        const minutes = (await redis.zrangebyscore(k.statMinutes, from, '+inf')).map(Number).sort((a, b) => a - b);
        const rows = await Promise.all(minutes.map((m) => redis.hgetall(k.stats(m))));
        out[queue] = minutes.flatMap((minute, i) => {
          const h = rows[i] ?? {};
          if (Object.keys(h).length === 0) return []; // expired
          const n = (f: string) => Number(h[f] ?? 0) || 0;
          return [
            {
              minute,
              enqueued: n('e'),
              succeeded: n('d'),
              failed: n('f'),
              retried: n('r'),
              wait: Array.from({ length: buckets }, (_, j) => n(`w${j}`)),
              run: Array.from({ length: buckets }, (_, j) => n(`u${j}`)),
            },
          ];
        });
      }),
    );
    return Object.fromEntries(queues.map((q) => [q, out[q] ?? []]));
  }

  // -----------------------------------------------------------------------------------------------

  async ping(): Promise<void> {
    const redis = await this.#ready();
    await redis.ping();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const done of [...this.#waits]) done();
    for (const gate of this.#wakeGates.values()) gate.client.disconnect();
    await Promise.all([...this.#wakeGates.values()].map((g) => g.close()));
    if (this.#sub) await this.#sub.close();
    await this.#main.close();
    this.#watchers.clear();
    this.#cancelListeners.clear();
  }
}

function checkQueue(queue: string): string {
  if (typeof queue !== 'string' || !QUEUE_NAME.test(queue)) {
    throw new ConfigError(`Queue name ${JSON.stringify(queue)} is invalid: use 1 to 64 letters, digits, "_" or "-"`);
  }
  return queue;
}

function safeCall(fn: () => void): void {
  try {
    fn();
  } catch {
    // A listener's error is its own; the dispatch goes on.
  }
}
