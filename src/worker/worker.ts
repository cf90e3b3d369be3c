// The worker: its life cycle (start, stop, signals) and the reservation loop. Runs are executed by
// the executor (executor.ts), their leases kept by the lease book (leases.ts), and what a handler
// sees as `ctx` is in run-context.ts. The worker takes a WorkerHost (host.ts), not the app.
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { Broker, BrokerInspector, Reservation } from '../broker/types.ts';
import { BrokerConfigError, ConfigError } from '../core/errors.ts';
import { inIsolate } from '../task/isolation.ts';
import { type Executor, InlineExecutor, type Outcome } from './executor.ts';
import type { WorkerHost } from './host.ts';
import { backOffMs, LeaseBook, LeaseLostError, sleep } from './leases.ts';
import { type RunEvent, type WorkerOptions, workerSettings } from './options.ts';
import { type ActiveRun, flushProgress, reportProgress } from './run-context.ts';
import { type FireEvent, ScheduleFirer } from './schedules.ts';

export type { WorkerHost } from './host.ts';
export type { RunEvent, WorkerOptions } from './options.ts';

/**
 * Runs handlers: reserves runs in batches sized to its free slots, holds each under a lease that it
 * renews while the handler works, settles outcomes in batches, and sleeps on the broker's wake-up
 * signal when there is nothing to do.
 */
export class Worker extends EventEmitter {
  readonly id: string;
  readonly queues: string[];
  readonly concurrency: number;
  readonly leaseMs: number;
  readonly renewEvery: number;
  readonly shutdownGraceMs: number;
  readonly pruneEvery: number;
  readonly logger: Logger;
  /** Whether this worker fires the schedules of its queues. */
  readonly firesSchedules: boolean;
  readonly #host: WorkerHost;
  #firer: ScheduleFirer | undefined;
  #broker: Broker | undefined;
  readonly #book: LeaseBook;
  readonly #executor: Executor;
  #state: 'new' | 'running' | 'stopping' | 'stopped' = 'new';
  /** Broker calls of the engine (#pump) in progress: reservations, the wait for work, a back-off. */
  readonly #calls = new Set<Promise<void>>();
  #pumpScheduled = false;
  /** Reservation calls in flight, and the slots they may fill. */
  #inflight = 0;
  #reserving = 0;
  /** The last reply brought no run: wait for work once no call is in flight. */
  #drained = false;
  #nextAt: number | null = null;
  /** The `now` of the reserve that gave #nextAt. */
  #reservedAt = 0;
  #waiting = false;
  #backingOff = false;
  #failures = 0;
  #lastFull = false;
  /** Average handler time of recent runs, in ms (exponentially weighted). */
  #runMs = Number.POSITIVE_INFINITY;
  readonly #stop = new AbortController();
  #slotWaiter: (() => void) | undefined;
  #renewTimer: NodeJS.Timeout | undefined;
  #pruneTimer: NodeJS.Timeout | undefined;
  #heartbeatTimer: NodeJS.Timeout | undefined;
  readonly #startedAt = Date.now();
  #stopPromise: Promise<void> | undefined;
  #unsubscribeCancel: (() => void) | undefined;
  #lastErrorLog = 0;

  /** `host`: what the worker needs from its app (`Errand.worker()` passes one; an `Errand` fits too). */
  constructor(host: WorkerHost, options: WorkerOptions = {}) {
    super();
    this.#host = host;
    const settings = workerSettings(host, options);
    this.id = settings.id;
    this.queues = settings.queues;
    this.concurrency = settings.concurrency;
    this.leaseMs = settings.leaseMs;
    this.renewEvery = settings.renewEvery;
    this.shutdownGraceMs = settings.shutdownGraceMs;
    this.pruneEvery = settings.pruneEvery;
    this.logger = settings.logger;
    this.firesSchedules = settings.schedules;
    this.#book = new LeaseBook({
      id: this.id,
      leaseMs: this.leaseMs,
      logger: this.logger,
      brokerError: (err, message) => this.#logBrokerError(err, message),
      report: (event) => this.emit('run', event),
    });
    this.#executor = new InlineExecutor({
      tasks: host.tasks,
      redactPaths: (task) => host.redactPaths(task),
      logger: this.logger,
      progress: (entry, value) => reportProgress(entry, value, this.#sendProgress),
      concurrency: this.concurrency,
      maxInputBytes: host.maxInputBytes,
    });
  }

  /** Runs currently executing. */
  get activeCount(): number {
    return this.#book.active.size;
  }

  get state(): 'new' | 'running' | 'stopping' | 'stopped' {
    return this.#state;
  }

  /**
   * Connects to the broker and starts taking runs. Resolves once connected. Rejects when the broker
   * cannot be used as configured (a bad URL; `BrokerConfigError`: Redis refused the credentials or
   * the TLS set-up); a broker that is merely unreachable is waited for (logged, then retried). A
   * `stop()` that comes while it connects (a signal at start-up) leaves nothing started behind it.
   */
  async start(): Promise<this> {
    if (inIsolate()) throw new ConfigError(ISOLATE_START);
    if (this.#state !== 'new') throw new ConfigError(`Worker ${this.id} was already started`);
    this.#state = 'running';
    try {
      this.#broker = await this.#host.broker();
      await this.#broker.ping();
    } catch (err) {
      if (err instanceof ConfigError || err instanceof BrokerConfigError) {
        this.#state = 'new';
        throw err;
      }
      this.logger.warn({ err }, 'broker unreachable at start; the worker waits for it');
      this.#broker ??= await this.#host.broker();
    }
    if (this.#state !== 'running') return this;
    this.#book.broker = this.#broker;
    this.#unsubscribeCancel = this.#broker.onCancel((ids) => {
      for (const id of ids) this.#book.detach(id, 'lost', new LeaseLostError(`Run ${id} was cancelled`));
    });
    (this.#renewTimer = setInterval(() => void this.#book.renew(), this.renewEvery)).unref();
    (this.#pruneTimer = setInterval(() => void this.#prune(), this.pruneEvery)).unref();
    if (isInspector(this.#broker)) {
      void this.#heartbeat();
      this.#heartbeatTimer = setInterval(() => void this.#heartbeat(), HEARTBEAT_EVERY_MS);
      this.#heartbeatTimer.unref();
    }
    if (this.firesSchedules) {
      // Declares the app's schedules of its queues, then fires them in the background (schedules.ts).
      this.#firer = new ScheduleFirer({
        broker: this.#broker,
        queues: this.queues,
        logger: this.logger,
        declared: this.#host.scheduleDefinitions?.(Date.now()),
        onFire: (e: FireEvent) => this.emit('schedule', e),
        flowOf: (task, input) => this.#host.tasks.get(task)?.flowOfStored(input),
      });
      await this.#firer.start();
    }
    this.logger.info({ queues: this.queues, concurrency: this.concurrency }, 'worker started');
    this.#pump();
    return this;
  }

  /**
   * Stops gracefully: no new reservations; active runs get `graceMs` to finish; the rest see their
   * signal abort and are handed back to the queue. Resolves when everything is settled or released.
   */
  stop(options: { graceMs?: number } = {}): Promise<void> {
    this.#stopPromise ??= this.#shutdown(options.graceMs ?? this.shutdownGraceMs);
    return this.#stopPromise;
  }

  /** Stops on SIGTERM or SIGINT (a second signal stops at once, without grace). Returns a function removing the handlers. */
  handleSignals(onStopped?: () => void): () => void {
    let count = 0;
    const handler = (signal: NodeJS.Signals) => {
      count++;
      if (count === 1) {
        this.logger.info({ signal, active: this.#book.active.size, graceMs: this.shutdownGraceMs }, 'stopping: finishing active runs');
        void this.stop().then(() => onStopped?.());
      } else {
        this.logger.warn({ signal }, 'stopping now: handing active runs back');
        void this.stop({ graceMs: 0 });
        void this.#shutdownNow();
      }
    };
    process.on('SIGTERM', handler);
    process.on('SIGINT', handler);
    return () => {
      process.off('SIGTERM', handler);
      process.off('SIGINT', handler);
    };
  }

  /**
   * The worker's engine, run (at most once per turn of the event loop, see #schedule) whenever
   * something changes: a run finished, a reservation came back, a wait or a back-off ended.
   *
   * Reservations: with a remote broker, while the last reply filled every slot it asked for (runs
   * are waiting), up to two calls in flight, each for at most half the slots, so that the runs of
   * one reply execute while the broker serves the other call (the worker's and the broker's work
   * overlap instead of taking turns); otherwise one call at a time (at a low rate a second call
   * would come back empty: one more broker call per run, for nothing).
   * Outcomes of finished runs ride along with the next reservation (one round trip for both);
   * when no reservation goes out, they are sent on their own (LeaseBook#flush). When a reply brings
   * no run, the worker waits for the broker's wake-up signal (or the next due time) once its other
   * call is back.
   */
  #pump(): void {
    this.#pumpScheduled = false;
    const book = this.#book;
    if (this.#state === 'running' && !this.#waiting && !this.#backingOff) {
      const calls = this.#broker!.remote && this.#lastFull ? 2 : 1;
      const chunk = Math.ceil(this.concurrency / calls);
      const capacity = this.concurrency + (this.#prefetchOk() ? 1 : 0);
      const free = capacity - book.active.size - book.buffer.length - this.#reserving;
      if (!this.#drained && free > 0 && this.#inflight < calls && (this.#inflight === 0 || free >= chunk)) {
        this.#reserve(Math.min(free, chunk));
        // The second call goes out a turn later, so that the broker's replies come apart.
        if (free > chunk) this.#schedule();
      }
      if (this.#drained && this.#inflight === 0) this.#wait();
    }
    if (book.pending.length && !book.flushing) void book.flush();
  }

  /**
   * Prefetch: while runs are short (their average time under PREFETCH_RUN_MS) and the last
   * reservation filled every slot it asked for (more runs are likely queued), the worker holds one
   * run more than its concurrency, so that the next run starts as soon as a slot frees instead of
   * a round trip later (at concurrency 1 the worker's and the broker's work then overlap). The
   * held run waits at most about one short run; it is renewed, handed back on stop, and recovered
   * like an active run if the worker dies.
   */
  #prefetchOk(): boolean {
    return this.#lastFull && this.#runMs < PREFETCH_RUN_MS;
  }

  #schedule(): void {
    if (this.#pumpScheduled) return;
    this.#pumpScheduled = true;
    setImmediate(() => this.#pump());
  }

  #reserve(max: number): void {
    const broker = this.#broker!;
    const book = this.#book;
    const settle = book.takePending();
    const now = Date.now();
    this.#inflight++;
    this.#reserving += max;
    this.#track(
      broker
        .reserve({
          workerId: this.id,
          queues: this.queues,
          max,
          leaseMs: this.leaseMs,
          now,
          ...(settle.length ? { settle } : {}),
        })
        .then(
          async (result) => {
            this.#inflight--;
            this.#reserving -= max;
            this.#failures = 0;
            if (settle.length) book.settled(settle, result.settled);
            if (this.#state !== 'running') {
              // Stopped while reserving: hand these back at once.
              if (result.runs.length) await book.release(result.runs.map((r) => ({ id: r.id, attempt: r.attempt })));
              return;
            }
            for (const run of result.runs) {
              if (book.active.size < this.concurrency) this.#execute(run);
              else book.buffer.push(run);
            }
            this.#drained = result.runs.length === 0;
            this.#lastFull = result.runs.length === max;
            this.#nextAt = result.nextAt;
            this.#reservedAt = now;
            this.#schedule();
          },
          (err: unknown) => {
            this.#inflight--;
            this.#reserving -= max;
            book.putBack(settle);
            this.#logBrokerError(err, 'reserve failed; retrying');
            this.#backOff();
          },
        ),
    );
  }

  /** Keeps a call of the engine in #calls until it has settled (stop waits for them). */
  #track(call: Promise<void>): void {
    this.#calls.add(call);
    void call.catch((err: unknown) => this.logger.error({ err }, 'worker: unexpected error')).finally(() => this.#calls.delete(call));
  }

  /**
   * Nothing to reserve: sleeps until the broker signals work, the next due time, or stop. The due
   * time the broker gave (`nextAt`: the earliest scheduled run or lease expiry) was true when the
   * last reserve ran; a lease taken since then by another worker (which may die) expires no earlier
   * than that reserve's time plus a lease, so the worker wakes by then to look again. Among workers
   * with the same `leaseMs`, an idle worker thus reserves a dead worker's runs as their leases
   * expire, without an enqueue to wake it: one reserve per lease period while idle, more only while
   * other workers hold leases (it wakes at each expiry they had when it looked).
   */
  #wait(): void {
    this.#waiting = true;
    const recheck = this.#reservedAt + this.leaseMs;
    const until = this.#nextAt === null ? recheck : Math.min(this.#nextAt, recheck);
    this.#track(
      this.#broker!.waitForWork(this.queues, until, this.#stop.signal).then(
        () => {
          this.#waiting = false;
          this.#drained = false;
          this.#schedule();
        },
        (err: unknown) => {
          this.#waiting = false;
          this.#drained = false;
          this.#logBrokerError(err, 'waiting for work failed; retrying');
          this.#backOff();
        },
      ),
    );
  }

  /** After a broker error: no reservation for a while (longer after each consecutive failure). */
  #backOff(): void {
    this.#failures++;
    this.#backingOff = true;
    this.#track(
      sleep(backOffMs(this.#failures), this.#stop.signal).then(() => {
        this.#backingOff = false;
        this.#schedule();
      }),
    );
  }

  /** Starts a run in a free slot; when it ends, its outcome is queued and the next prefetched run takes the slot. */
  #execute(run: Reservation): void {
    const entry: ActiveRun = { run };
    const book = this.#book;
    book.active.set(run.id, entry);
    if (this.listenerCount('run')) this.emit('run', { type: 'start', run } satisfies RunEvent);
    void this.#executor.execute(entry).then(
      (outcome) => this.#finished(entry, outcome),
      (err: unknown) => {
        // An executor never rejects; should one do so, the run's lease expires and the run comes back.
        this.logger.error({ err, runId: run.id }, 'worker: unexpected error');
        this.#finished(entry, undefined);
      },
    );
  }

  /** A run ended: its outcome is queued (to be stored), reported, and its slot given to the next run. */
  #finished(entry: ActiveRun, outcome: Outcome | undefined): void {
    const { run } = entry;
    const book = this.#book;
    try {
      if (outcome?.settlement) {
        this.#observeRunTime(outcome.durationMs);
        flushProgress(entry, this.#sendProgress);
        book.settle(outcome.settlement);
      }
      if (outcome) this.#report(run, outcome);
    } finally {
      if (entry.progressTimer) clearTimeout(entry.progressTimer);
      book.active.delete(run.id);
      const next = this.#state === 'running' ? book.buffer.shift() : undefined;
      if (next) this.#execute(next);
      const waiter = this.#slotWaiter;
      this.#slotWaiter = undefined;
      waiter?.();
      this.#schedule();
    }
  }

  /** The `run` event of an outcome (a success's only when someone listens: it is the hot path). */
  #report(run: Reservation, outcome: Outcome): void {
    const { type, durationMs } = outcome;
    if (type === 'success' && !this.listenerCount('run')) return;
    if (type === 'retry' || type === 'backoff')
      this.emit('run', { type, run, durationMs, error: outcome.error, retryAt: outcome.retryAt } satisfies RunEvent);
    else if (type === 'failure') this.emit('run', { type, run, durationMs, error: outcome.error } satisfies RunEvent);
    else this.emit('run', { type, run, durationMs } satisfies RunEvent);
  }

  #observeRunTime(ms: number): void {
    this.#runMs = this.#runMs === Number.POSITIVE_INFINITY ? ms : this.#runMs * 0.9 + ms * 0.1;
  }

  readonly #sendProgress = (entry: ActiveRun, text: string): void => {
    this.#broker!.progress(this.id, { id: entry.run.id, attempt: entry.run.attempt }, text).catch((err) =>
      this.#logBrokerError(err, 'progress update failed'),
    );
  };

  async #heartbeat(): Promise<void> {
    const broker = this.#broker as unknown as BrokerInspector;
    const [host, pid] = [hostname(), process.pid];
    try {
      await broker.heartbeat(
        {
          id: this.id,
          host,
          pid,
          queues: this.queues,
          concurrency: this.concurrency,
          active: this.#book.active.size,
          startedAt: this.#startedAt,
        },
        HEARTBEAT_EVERY_MS * 3,
        Date.now(),
      );
    } catch (err) {
      this.#logBrokerError(err, 'heartbeat failed');
    }
  }

  async #prune(): Promise<void> {
    try {
      const removed = await this.#broker!.prune(Date.now());
      if (removed) this.logger.debug({ removed }, 'pruned finished runs past their retention');
    } catch (err) {
      this.#logBrokerError(err, 'pruning failed');
    }
  }

  async #shutdown(graceMs: number): Promise<void> {
    if (this.#state === 'new') {
      this.#state = 'stopped';
      return;
    }
    this.#state = 'stopping';
    this.#stop.abort();
    const firer = this.#firer?.stop();
    this.#slotWaiter?.();
    // Reservations in flight come back (their runs are handed back), the wait for work ends.
    while (this.#calls.size) await Promise.allSettled(this.#calls);
    await firer;
    const deadline = Date.now() + graceMs;
    while (this.#book.active.size > 0 && Date.now() < deadline && !this.#now) {
      await new Promise<void>((resolve) => {
        this.#slotWaiter = resolve;
        setTimeout(resolve, Math.min(250, Math.max(1, deadline - Date.now())));
      });
    }
    await this.#shutdownNow();
  }

  #now = false;
  #nowPromise: Promise<void> | undefined;
  /** Hands back what is left, once: a second signal and the end of the grace period share one hand-back (and one "worker stopped"). */
  #shutdownNow(): Promise<void> {
    this.#now = true;
    this.#nowPromise ??= this.#handBack();
    return this.#nowPromise;
  }

  async #handBack(): Promise<void> {
    const book = this.#book;
    const leases = book.detachAll();
    // Every outcome stored (or given up on) before the leases still held are handed back.
    for (;;) {
      if (this.#calls.size) await Promise.allSettled(this.#calls);
      else if (book.pending.length && !book.flushing) void book.flush();
      else if (book.flushing) await book.flushing;
      else break;
    }
    if (leases.length) await book.release(leases);
    // Isolated handlers still running (their runs are handed back) are stopped for real.
    await this.#executor.close?.();
    if (this.#state === 'stopped') return;
    clearInterval(this.#renewTimer);
    clearInterval(this.#pruneTimer);
    clearInterval(this.#heartbeatTimer);
    if (this.#heartbeatTimer) await (this.#broker as unknown as BrokerInspector).removeWorker(this.id).catch(() => {});
    this.#unsubscribeCancel?.();
    this.#state = 'stopped';
    this.logger.info({ handedBack: leases.length }, 'worker stopped');
  }

  #logBrokerError(err: unknown, message: string): void {
    const now = Date.now();
    if (now - this.#lastErrorLog < 1000) return;
    this.#lastErrorLog = now;
    this.logger.error({ err }, message);
  }
}

const HEARTBEAT_EVERY_MS = 5000;

const ISOLATE_START =
  'A worker cannot start inside an isolate: the module an isolated task names (its `module` option) is imported by every isolate, ' +
  'and it starts a worker when imported. Start the worker from another file, or only when the file is run directly';

/** Runs shorter than this on average (ms) let the worker prefetch one run (see Worker#prefetchOk). */
const PREFETCH_RUN_MS = 10;

function isInspector(b: unknown): b is BrokerInspector {
  return typeof (b as BrokerInspector)?.heartbeat === 'function';
}
