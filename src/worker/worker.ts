// The worker: its life cycle (start, stop, signals), the slots its runs execute in, and the
// shutdown. The reservation loop (reserve-loop.ts) fills the slots; runs are executed by the executor
// (executor.ts), their leases kept by the lease book (leases.ts), the timers of renewal, pruning and
// the heartbeat run by the upkeep (upkeep.ts), and what a handler sees as `ctx` is in run-context.ts.
// The worker takes a WorkerHost (host.ts), not the app.
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { Broker, Reservation } from '../broker/types.ts';
import { BrokerConfigError, ConfigError } from '../core/errors.ts';
import { checkTimerMs } from '../core/fields.ts';
import { inIsolate } from '../task/isolation.ts';
import { type Executor, InlineExecutor, type Outcome } from './executor.ts';
import type { WorkerHost } from './host.ts';
import { LeaseBook, LeaseLostError } from './leases.ts';
import { type RunEvent, type WorkerOptions, workerSettings } from './options.ts';
import { ReserveLoop } from './reserve-loop.ts';
import { type ActiveRun, flushProgress, reportProgress } from './run-context.ts';
import { type FireEvent, ScheduleFirer } from './schedules.ts';
import { Upkeep } from './upkeep.ts';

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
  readonly #loop: ReserveLoop;
  readonly #upkeep: Upkeep;
  #state: 'new' | 'running' | 'stopping' | 'stopped' = 'new';
  readonly #stop = new AbortController();
  #slotWaiter: (() => void) | undefined;
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
    const brokerError = (err: unknown, message: string) => this.#logBrokerError(err, message);
    const book = new LeaseBook({
      id: this.id,
      leaseMs: this.leaseMs,
      logger: this.logger,
      brokerError,
      report: (event) => this.emit('run', event),
    });
    this.#book = book;
    this.#executor = new InlineExecutor({
      tasks: host.tasks,
      redactPaths: (task) => host.redactPaths(task),
      logger: this.logger,
      progress: (entry, value) => reportProgress(entry, value, this.#sendProgress),
      concurrency: this.concurrency,
      maxInputBytes: host.maxInputBytes,
      unknownTaskWaitMs: settings.unknownTaskWaitMs,
    });
    const { id, queues, concurrency, leaseMs, renewEvery, pruneEvery, logger } = this;
    this.#loop = new ReserveLoop({
      id,
      queues,
      concurrency,
      leaseMs,
      book,
      signal: this.#stop.signal,
      running: () => this.#state === 'running',
      execute: (run) => this.#execute(run),
      brokerError,
      unexpected: (err) => this.logger.error({ err }, 'worker: unexpected error'),
    });
    this.#upkeep = new Upkeep({ id, queues, concurrency, renewEvery, pruneEvery, logger, book, brokerError });
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
    this.#loop.broker = this.#broker;
    this.#unsubscribeCancel = this.#broker.onCancel((ids) => {
      for (const id of ids) this.#book.detach(id, 'lost', new LeaseLostError(`Run ${id} was cancelled`));
    });
    this.#upkeep.start(this.#broker);
    if (this.firesSchedules) {
      // Declares the app's schedules of its queues, then fires them in the background (schedules.ts).
      this.#firer = new ScheduleFirer({
        broker: this.#broker,
        queues: this.queues,
        logger: this.logger,
        declared: this.#host.scheduleDefinitions?.(Date.now()),
        onFire: (e: FireEvent) => this.emit('schedule', e),
        flowOf: (task, input) => {
          const t = this.#host.tasks.get(task);
          return t ? t.flowOfStored(input) : null; // null: not defined here
        },
      });
      await this.#firer.start();
    }
    this.logger.info({ queues: this.queues, concurrency: this.concurrency }, 'worker started');
    this.#loop.pump();
    return this;
  }

  /**
   * Stops gracefully: no new reservations; active runs get `graceMs` to finish; the rest see their
   * signal abort and are handed back to the queue. Resolves when everything is settled or released.
   */
  stop(options: { graceMs?: number } = {}): Promise<void> {
    let graceMs = this.shutdownGraceMs;
    try {
      if (options?.graceMs !== undefined) graceMs = checkTimerMs(options.graceMs, 'stop(): graceMs');
    } catch (err) {
      return Promise.reject(err);
    }
    this.#stopPromise ??= this.#shutdown(graceMs);
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
        this.#loop.observeRunTime(outcome.durationMs);
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
      this.#loop.schedule();
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

  readonly #sendProgress = (entry: ActiveRun, text: string): void => {
    this.#broker!.progress(this.id, { id: entry.run.id, attempt: entry.run.attempt }, text).catch((err) =>
      this.#logBrokerError(err, 'progress update failed'),
    );
  };

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
    const calls = this.#loop.calls;
    while (calls.size) await Promise.allSettled(calls);
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
    const calls = this.#loop.calls;
    const leases = book.detachAll();
    // Every outcome stored (or given up on) before the leases still held are handed back.
    for (;;) {
      if (calls.size) await Promise.allSettled(calls);
      else if (book.pending.length && !book.flushing) void book.flush();
      else if (book.flushing) await book.flushing;
      else break;
    }
    if (leases.length) await book.release(leases);
    // Isolated handlers still running (their runs are handed back) are stopped for real.
    await this.#executor.close?.();
    if (this.#state === 'stopped') return;
    await this.#upkeep.stop();
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

const ISOLATE_START =
  'A worker cannot start inside an isolate: the module an isolated task names (its `module` option) is imported by every isolate, ' +
  'and it starts a worker when imported. Start the worker from another file, or only when the file is run directly';
