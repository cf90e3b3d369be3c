/**
 * An Errand worker serving Celery tasks: it takes protocol 2 JSON messages from Celery queues on
 * Redis, runs the TypeScript handler registered under the message's task name, and writes the
 * outcome to Celery's Redis result backend so that Python's `AsyncResult(id).get()` returns it.
 *
 *   const worker = createCeleryWorker({ url: process.env.REDIS_URL });
 *   worker.register('tasks.add', { args: z.tuple([z.number(), z.number()]) }, ([a, b]) => a + b);
 *   await worker.start();
 *
 * Semantics (Celery's, unless said otherwise):
 * - late acknowledgement: a message is acknowledged in the same MULTI that stores its outcome and
 *   sends its callbacks, retry or chain; a worker killed before that leaves it in `unacked`, and it
 *   is redelivered after the visibility timeout (see `transport.ts`);
 * - args/kwargs are validated with the task's zod schemas; a message that fails (or that is not a
 *   JSON protocol 2 message) is FAILURE in the result backend with the reason, then acknowledged;
 * - retries: `ctx.retry()` or `autoretry` sends the message again with `retries + 1` and an ETA,
 *   stores RETRY; past `maxRetries` (default 3) the task is FAILURE;
 * - `expires` passed: REVOKED (`TaskRevokedError('expired')`), as Celery does; so is a task revoked by
 *   id (`AsyncResult.revoke()`, heard through the remote control, see pidbox.ts) when it arrives;
 * - link/link_error/chain: sent on success (with the result prepended) or failure (with the task id);
 *   a chord's header task adds its part and the last one sends the body, as Celery's Redis backend
 *   does (see chord.ts).
 * - A task this worker has no handler for is handed back to the back of its queue for a Celery
 *   worker to run (`unknownTasks: 'requeue'`, the default), or failed (`'fail'`).
 * - With `errand: { broker }`, every task that ends here is recorded in that Errand broker, so that
 *   Errand's dashboard shows it (see record.ts).
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { output, ZodType } from 'zod';
import type { CeleryHandler, CeleryTaskOptions, RegisteredTask } from './task.ts';
import { ConfigError } from '../core/errors.ts';
import { checkTimerMs } from '../core/fields.ts';
import { show } from '../core/show.ts';
import type { RunError } from '../core/run.ts';
import { ResultBackend } from './backend.ts';
import { CeleryClient, checkCeleryRedisUrl } from './client.ts';
import { type CeleryMetrics, createCeleryMetrics } from './metrics.ts';
import { decodeMessage, type CeleryTaskMessage } from './protocol.ts';
import { Pidbox } from './pidbox.ts';
import { type CeleryRecordOptions, CeleryRecorder } from './record.ts';
import { celeryExceptionInfo, chordSender, type Outcome, runMessage, type SettleContext, settle } from './run.ts';
import { fireChord, recoverChords } from './chord.ts';
import { type Claimed, Transport } from './transport.ts';

export type { CeleryHandler, CeleryTaskContext, CeleryTaskOptions, RegisteredTask } from './task.ts';

export interface CeleryWorkerOptions {
  url?: string;
  redis?: Redis;
  /** Queues to consume, in order of preference. Default `['celery']`. */
  queues?: string[];
  /** Messages run at once. Default 10. */
  concurrency?: number;
  /**
   * After this long without acknowledgement a delivery is restored to its queue (kombu's
   * `visibility_timeout`, default one hour). Keep it equal to the Python workers' setting.
   */
  visibilityTimeoutMs?: number;
  /**
   * Queues for the tasks this worker sends (the next step of a chain, links, errbacks, chord bodies,
   * group members) whose signature names none: Celery's `task_routes` as task name -> queue. Keep it
   * equal to the Python app's.
   */
  routes?: Record<string, string>;
  /** The queue for the rest (Celery's `task_default_queue`). Default `celery`. */
  defaultQueue?: string;
  /** `requeue` (default): a task without a handler goes back to its queue; `fail`: FAILURE NotRegistered. */
  unknownTasks?: 'requeue' | 'fail';
  /** Result expiry in seconds (Celery's `result_expires`). Default 86400. */
  resultExpires?: number;
  logger?: Logger;
  /** For the metrics; default a registry of its own (`worker.metrics.registry`). */
  metrics?: CeleryMetrics;
  /** The worker's name (Celery's `hostname`). Default `errand@<host>`. */
  hostname?: string;
  /** Answer `celery inspect ping`, `registered`, `active`, `revoked` and `control revoke` (see pidbox.ts). Default true. */
  remoteControl?: boolean;
  /**
   * Show this worker's tasks in Errand's dashboard: each task that ends here is recorded as a finished
   * run of `broker` (queue `celery-<queue>`), and the worker appears in its worker list (see record.ts).
   */
  errand?: CeleryRecordOptions;
}

/** Celery's worker keeps this many revoked ids (`REVOKES_MAX`), each for three hours (`REVOKE_EXPIRES`). */
const REVOKES_MAX = 50_000;
const REVOKE_EXPIRES_MS = 3 * 3_600_000;

export class CeleryWorker {
  readonly tasks = new Map<string, RegisteredTask>();
  readonly metrics: CeleryMetrics;
  readonly hostname: string;
  readonly client: CeleryClient;
  private readonly redis: Redis;
  private readonly blocking: Redis;
  private readonly transport: Transport;
  private readonly backend: ResultBackend;
  private readonly concurrency: number;
  private readonly routes: Map<string, string>;
  private readonly defaultQueue: string;
  private readonly visibilityMs: number;
  private readonly active = new Map<string, Promise<void>>();
  private readonly abort = new AbortController();
  private running = false;
  private loop: Promise<void> | undefined;
  private timers: NodeJS.Timeout[] = [];
  private wake: (() => void) | undefined;
  private nextDue: number | undefined;
  private readonly owned: boolean;
  private pidbox: Pidbox | undefined;
  private readonly recorder: CeleryRecorder | undefined;
  private lastRedisError: Error | undefined;
  /** Revoked task ids -> until when (ms), oldest first (Celery's worker_state.revoked). */
  private readonly revoked = new Map<string, number>();
  /** The tasks running here, by Celery id: `revoke(terminate=True)` aborts their signal; `inspect active` lists them. */
  private readonly runningTasks = new Map<string, { abort: AbortController; msg: CeleryTaskMessage; startedAt: number }>();

  private readonly o: CeleryWorkerOptions;

  constructor(o: CeleryWorkerOptions = {}) {
    this.o = o;
    if (!o.redis && !o.url) throw new ConfigError('createCeleryWorker: give url (redis://host:port/db) or redis (an ioredis client)');
    if (o.url !== undefined) checkCeleryRedisUrl(o.url, 'createCeleryWorker');
    const queues = o.queues ?? ['celery'];
    if (!Array.isArray(queues) || queues.length === 0 || queues.some((q) => typeof q !== 'string' || q.length === 0)) {
      throw new ConfigError('createCeleryWorker: queues must be a non-empty array of queue names');
    }
    const routes = o.routes ?? {};
    if (
      typeof routes !== 'object' ||
      routes === null ||
      Array.isArray(routes) ||
      Object.values(routes).some((q) => typeof q !== 'string' || q.length === 0)
    )
      throw new ConfigError(`createCeleryWorker: routes must map task names to queue names, got ${show(routes)}`);
    if (o.defaultQueue !== undefined && !(typeof o.defaultQueue === 'string' && o.defaultQueue.length > 0))
      throw new ConfigError(`createCeleryWorker: defaultQueue must be a non-empty queue name, got ${show(o.defaultQueue)}`);
    this.routes = new Map(Object.entries(routes));
    this.defaultQueue = o.defaultQueue ?? 'celery';
    this.concurrency = o.concurrency ?? 10;
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1)
      throw new ConfigError('createCeleryWorker: concurrency must be an integer >= 1');
    this.visibilityMs = o.visibilityTimeoutMs ?? 3_600_000;
    if (!(Number.isFinite(this.visibilityMs) && this.visibilityMs >= 1000))
      throw new ConfigError('createCeleryWorker: visibilityTimeoutMs must be at least 1000');
    this.owned = !o.redis;
    this.redis = o.redis ?? new Redis(o.url as string, { maxRetriesPerRequest: null, lazyConnect: true });
    this.redis.on('error', (err) => {
      this.lastRedisError = err;
      this.o.logger?.warn({ err: err.message }, 'celery worker: Redis connection error');
    });
    this.blocking = this.redis.duplicate();
    this.blocking.on('error', () => {});
    this.transport = new Transport(this.redis, queues);
    this.backend = new ResultBackend(this.redis, o.resultExpires ?? 86_400);
    this.client = new CeleryClient({ redis: this.redis, queue: queues[0] as string });
    this.metrics = o.metrics ?? createCeleryMetrics();
    this.hostname = o.hostname ?? `errand@${hostname()}`;
    this.recorder = o.errand ? new CeleryRecorder(o.errand, o.logger, this.hostname) : undefined;
  }

  /** Registers `handler` under the Celery task name `name` (e.g. `tasks.send_welcome_email`). */
  register<AS extends ZodType<unknown[]> | undefined = undefined, KS extends ZodType<Record<string, unknown>> | undefined = undefined>(
    name: string,
    options: CeleryTaskOptions & { args?: AS; kwargs?: KS },
    handler: CeleryHandler<
      AS extends ZodType<unknown[]> ? output<AS> : unknown[],
      KS extends ZodType<Record<string, unknown>> ? output<KS> : Record<string, unknown>
    >,
  ): this {
    if (typeof name !== 'string' || name.length === 0) throw new ConfigError('register: the task name must be a non-empty string');
    if (typeof handler !== 'function') throw new ConfigError(`register(${JSON.stringify(name)}): the handler must be a function`);
    if (this.tasks.has(name)) throw new ConfigError(`register: ${JSON.stringify(name)} is already registered`);
    for (const k of ['args', 'kwargs'] as const) {
      const s = options[k] as { safeParse?: unknown } | undefined;
      if (s !== undefined && typeof s?.safeParse !== 'function')
        throw new ConfigError(`register(${JSON.stringify(name)}): ${k} must be a zod schema`);
    }
    const mr = options.maxRetries ?? 3;
    if (!Number.isInteger(mr) || mr < 0) throw new ConfigError(`register(${JSON.stringify(name)}): maxRetries must be an integer >= 0`);
    this.tasks.set(name, { name, options, handler: handler as unknown as CeleryHandler });
    return this;
  }

  async start(): Promise<void> {
    if (this.running) return;
    if (this.redis.status === 'wait') {
      // The first connection: a Redis that cannot be reached fails start() (later drops are retried).
      try {
        await this.redis.connect();
      } catch (err) {
        this.redis.disconnect();
        throw new Error(`cannot connect to Redis: ${(this.lastRedisError ?? (err as Error)).message}`);
      }
    }
    await this.redis.ping();
    this.running = true;
    await this.transport.restoreVisible(this.visibilityMs);
    this.nextDue = await this.transport.promote();
    // Renew in-flight deliveries well within the visibility timeout; look for lost ones as often.
    const every = Math.max(500, Math.min(this.visibilityMs / 3, 30_000));
    this.timers.push(
      setInterval(() => {
        this.transport.renew([...this.active.keys()]).catch(() => {});
        this.transport.restoreVisible(this.visibilityMs).catch(() => {});
        recoverChords(chordSender(this.settleContext), this.visibilityMs, this.o.logger).catch(() => {});
      }, every),
    );
    if (this.o.remoteControl ?? true) {
      this.pidbox = new Pidbox(this.redis, this.hostname, {
        tasks: () => [...this.tasks.keys()],
        revoke: (ids, terminate) => this.revoke(ids, terminate),
        active: () => this.activeTasks(),
        revoked: () => this.revokedIds(),
      });
      await this.pidbox.start();
    }
    this.recorder?.startHeartbeat(
      () => ({ queues: this.transport.queues, concurrency: this.concurrency, active: this.active.size }),
      Date.now(),
    );
    this.loop = this.run();
    this.o.logger?.info({ queues: this.transport.queues, tasks: [...this.tasks.keys()] }, 'celery worker started');
  }

  /**
   * Flags `ids` as revoked, as Celery's `revoke` control command does: a message with one of these
   * ids that this worker takes is REVOKED, not run. With `terminate`, a handler running one of them
   * here has its `ctx.signal` aborted and its task ends REVOKED (`terminated`).
   */
  revoke(ids: string[], terminate = false): string {
    const until = Date.now() + REVOKE_EXPIRES_MS;
    for (const id of ids) {
      this.revoked.delete(id);
      this.revoked.set(id, until);
    }
    for (const id of this.revoked.keys()) {
      if (this.revoked.size <= REVOKES_MAX) break;
      this.revoked.delete(id);
    }
    this.o.logger?.info({ ids, terminate }, 'celery worker: tasks flagged as revoked');
    if (!terminate) return `tasks ${ids.join(', ')} flagged as revoked`;
    const terminated = ids.filter((id) => {
      const running = this.runningTasks.get(id);
      running?.abort.abort(Object.assign(new Error(`task ${id} was revoked with terminate`), { name: 'TaskRevokedError' }));
      return running !== undefined;
    });
    return terminated.length ? `terminate: ${terminated.join(', ')}` : 'terminate: tasks unknown';
  }

  /** What `celery inspect active` shows of each task running here (Celery's `Request.info()`). */
  activeTasks(): Record<string, unknown>[] {
    return [...this.runningTasks.values()].map(({ msg, startedAt }) => ({
      id: msg.id,
      name: msg.task,
      args: msg.args,
      kwargs: msg.kwargs,
      type: msg.task,
      hostname: this.hostname,
      time_start: startedAt / 1000,
      acknowledged: false,
      delivery_info: {
        exchange: msg.exchange,
        routing_key: msg.routingKey,
        priority: msg.priority,
        redelivered: msg.envelope.headers.redelivered === true,
      },
      worker_pid: process.pid,
    }));
  }

  /** The ids revoked and still kept (`celery inspect revoked`). */
  revokedIds(): string[] {
    return [...this.revoked.keys()].filter((id) => this.isRevoked(id));
  }

  private isRevoked(id: string): boolean {
    const until = this.revoked.get(id);
    if (until === undefined) return false;
    if (until > Date.now()) return true;
    this.revoked.delete(id);
    return false;
  }

  private async run(): Promise<void> {
    while (this.running) {
      try {
        if (this.active.size >= this.concurrency) {
          await new Promise<void>((resolve) => {
            this.wake = resolve;
          });
          continue;
        }
        if (this.nextDue !== undefined && this.nextDue <= Date.now()) this.nextDue = await this.transport.promote();
        const claimed = await this.transport.claim(this.concurrency - this.active.size);
        if (claimed.length) {
          for (const c of claimed) this.dispatch(c);
          continue;
        }
        // Idle: block until the first queue has a message (BLMOVE back onto itself leaves the list
        // as it was), at most 1 s (the other lists and the next ETA are looked at after it).
        const waitS = Math.max(0.01, Math.min(1, this.nextDue === undefined ? 1 : (this.nextDue - Date.now()) / 1000));
        const first = this.transport.queues[0] as string;
        await this.blocking.blmove(first, first, 'RIGHT', 'RIGHT', waitS.toFixed(3));
      } catch (err) {
        if (!this.running) break;
        this.o.logger?.warn({ err: (err as Error).message }, 'celery worker: Redis call failed; retrying in 1 s');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  private dispatch(c: Claimed): void {
    const key = c.tag || randomUUID();
    const p = this.handle(c)
      .catch((err) => this.o.logger?.error({ err, tag: c.tag }, 'celery worker: a message could not be settled; it stays unacked'))
      .finally(() => {
        this.active.delete(key);
        const w = this.wake;
        this.wake = undefined;
        w?.();
      });
    this.active.set(key, p);
  }

  private async handle(c: Claimed): Promise<void> {
    const receivedAt = Date.now();
    if (!c.tag) {
      await this.transport.reject(c.raw);
      this.metrics.count('unknown', 'rejected');
      this.o.logger?.error({ list: c.list, raw: c.raw.slice(0, 200) }, 'celery worker: not a message; kept in the rejected list');
      return;
    }
    let msg: CeleryTaskMessage;
    try {
      msg = decodeMessage(c.raw);
    } catch (err) {
      return this.finish(c, undefined, { kind: 'invalid', error: err }, receivedAt);
    }
    const task = this.tasks.get(msg.task);
    if (!task) {
      if ((this.o.unknownTasks ?? 'requeue') === 'requeue') {
        await this.transport.requeue(c.tag, c.list, c.raw).exec();
        this.metrics.count(msg.task, 'requeued');
        // Give a Celery worker the chance to take it before this one looks again.
        await new Promise((r) => setTimeout(r, 250));
        return;
      }
      const error = Object.assign(new Error(msg.task), { name: 'NotRegistered' });
      return this.finish(c, msg, { kind: 'failure', error }, receivedAt);
    }
    if (msg.expires && msg.expires.getTime() <= Date.now()) return this.finish(c, msg, { kind: 'revoked', reason: 'expired' }, receivedAt);
    if (this.isRevoked(msg.id)) return this.finish(c, msg, { kind: 'revoked', reason: 'revoked' }, receivedAt);
    if (msg.eta && msg.eta.getTime() > Date.now()) {
      if (await this.transport.schedule(c.tag, c.list, msg.eta.getTime(), c.raw)) {
        this.metrics.count(msg.task, 'scheduled');
        if (this.nextDue === undefined || msg.eta.getTime() < this.nextDue) this.nextDue = msg.eta.getTime();
      }
      return;
    }
    this.metrics.count(msg.task, 'received');
    if (task.options.trackStarted) await this.backend.store(msg.id, 'STARTED', { pid: process.pid, hostname: this.hostname });
    const startedAt = Date.now();
    const own = new AbortController();
    this.runningTasks.set(msg.id, { abort: own, msg, startedAt });
    let outcome: Outcome;
    try {
      outcome = await runMessage(task, msg, AbortSignal.any([this.abort.signal, own.signal]));
    } finally {
      this.runningTasks.delete(msg.id);
    }
    if (own.signal.aborted) outcome = { kind: 'revoked', reason: 'terminated' };
    return this.finish(c, msg, outcome, receivedAt, startedAt);
  }

  private get settleContext(): SettleContext {
    return {
      transport: this.transport,
      backend: this.backend,
      hostname: this.hostname,
      queueFor: (task) => this.routes.get(task) ?? this.defaultQueue,
    };
  }

  private async finish(
    c: Claimed,
    msg: CeleryTaskMessage | undefined,
    outcome: Outcome,
    receivedAt: number,
    startedAt = receivedAt,
  ): Promise<void> {
    const gid = await settle(this.settleContext, c, msg, outcome);
    if (gid !== undefined) {
      // The outcome is stored and acknowledged; were the body not sent now, recoverChords sends it.
      await fireChord(chordSender(this.settleContext), gid).catch((err) =>
        this.o.logger?.error(
          { err, group: gid },
          'celery worker: a chord body could not be sent; it is retried after the visibility timeout',
        ),
      );
    }
    this.metrics.count(msg?.task ?? 'unknown', outcome.kind);
    if (this.recorder && msg && outcome.kind !== 'retry') this.record(msg, outcome, receivedAt, startedAt);
    if (outcome.kind !== 'success') {
      this.o.logger?.warn(
        { task: msg?.task, id: msg?.id, outcome: outcome.kind, err: (outcome as { error?: Error }).error?.message },
        'celery task did not succeed',
      );
    }
  }

  /** Hands a task that ended here to the recorder (see record.ts). */
  private record(msg: CeleryTaskMessage, outcome: Exclude<Outcome, { kind: 'retry' }>, receivedAt: number, startedAt: number): void {
    let ended: { ok: true; value: unknown } | { ok: false; error: RunError };
    if (outcome.kind === 'success') ended = { ok: true, value: outcome.value };
    else if (outcome.kind === 'revoked')
      ended = { ok: false, error: { name: 'TaskRevokedError', message: outcome.reason, reason: outcome.reason } };
    else {
      const i = celeryExceptionInfo(outcome.error);
      const m = Array.isArray(i.exc_message) ? i.exc_message.map(String).join(', ') : String(i.exc_message ?? '');
      ended = { ok: false, error: { name: i.exc_type, message: m, ...(outcome.kind === 'invalid' ? { reason: 'invalid_input' } : {}) } };
    }
    this.recorder?.add(
      {
        celeryQueue: msg.routingKey || this.transport.queues[0] || 'celery',
        task: msg.task,
        taskId: msg.id,
        args: msg.args,
        kwargs: msg.kwargs,
        retries: msg.retries,
        receivedAt,
        startedAt,
        outcome: ended,
      },
      this.hostname,
    );
  }

  /** Stops taking messages and waits for the running ones (at most `graceMs`, default 30 s); the rest stay unacked. */
  async stop(graceMs = 30_000): Promise<void> {
    checkTimerMs(graceMs, 'stop(): graceMs');
    if (!this.running) return;
    this.running = false;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.wake?.();
    this.blocking.disconnect();
    await this.loop;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.active.values()]),
      new Promise((r) => {
        timer = setTimeout(r, graceMs);
      }),
    ]);
    if (timer) clearTimeout(timer);
    this.abort.abort();
    await this.pidbox?.stop();
    await this.recorder?.close();
    await this.backend.close();
    if (this.owned) await this.redis.quit().catch(() => this.redis.disconnect());
  }
}

export function createCeleryWorker(o: CeleryWorkerOptions): CeleryWorker {
  return new CeleryWorker(o);
}
