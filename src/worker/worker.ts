import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { Broker, BrokerInspector, Lease, Reservation, Settlement, SettleStatus } from '../broker/types.ts';
import { BrokerConfigError, ConfigError, ErrandError, formatPath, PermanentError, TaskTimeoutError } from '../core/errors.ts';
import { jsonIssues, safeParse } from '../core/json.ts';
import { scrubThrown, secretsAt } from '../core/redact.ts';
import { encodeError } from '../core/run-info.ts';
import type { Errand, Task } from '../errand.ts';
import { backoffDelay, checkQueueName } from '../task/options.ts';
import type { TaskContext } from '../task/task.ts';
import { context, endRunSpan, startRunSpan } from '../telemetry/tracing.ts';

export interface WorkerOptions {
  /** Queues to take runs from, in order of preference. Default: every queue of the app's tasks. */
  queues?: string[];
  /** Runs executed at once. Default 10. */
  concurrency?: number;
  /** Lease length in ms: a run whose worker stops renewing returns to the queue after this long. Default 30000. */
  leaseMs?: number;
  /** How often leases are renewed, in ms. Default leaseMs / 3. */
  renewEvery?: number;
  /** On stop, how long active runs may finish before they are aborted and handed back, in ms. Default 10000. */
  shutdownGraceMs?: number;
  /** How often finished runs past their retention are deleted, in ms. Default 60000. */
  pruneEvery?: number;
  /** Default `<host>:<pid>:<random>`. */
  id?: string;
  logger?: Logger;
}

/** What a worker reports about each run (for metrics and tests). */
export interface RunEvent {
  type: 'start' | 'success' | 'retry' | 'failure' | 'lost' | 'released';
  run: Reservation;
  /** Handler time in ms (not for `start`). */
  durationMs?: number;
  error?: unknown;
  /** For `retry`: when the next attempt is due. */
  retryAt?: number;
}

interface ActiveRun {
  run: Reservation;
  /** Why the attempt was stopped (timeout, cancel, shutdown): set once, by #abort. */
  aborted?: { reason: unknown };
  /** The handler's AbortSignal, made when the handler first reads `ctx.signal`. */
  controller?: AbortController;
  /** Ends the wait for the handler (with the abort reason). */
  reject?: (reason: unknown) => void;
  /** Set when the outcome must not be settled: the lease is gone (cancel, recovery) or the run was handed back. */
  detached?: 'lost' | 'released';
  progress?: string;
  progressTimer?: NodeJS.Timeout;
  /** Values at the task's redaction paths in this input: scrubbed from the errors this worker logs and stores. */
  secrets?: string[];
}

class WorkerStoppedError extends ErrandError {
  override name = 'WorkerStoppedError';
}

class LeaseLostError extends ErrandError {
  override name = 'LeaseLostError';
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

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
  readonly #app: Errand;
  #broker: Broker | undefined;
  readonly #active = new Map<string, ActiveRun>();
  /** Finished runs whose outcome is not yet stored: their leases are still renewed. */
  readonly #settling = new Map<string, Settlement>();
  #pending: Settlement[] = [];
  #flushing: Promise<void> | undefined;
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
  #waiting = false;
  #backingOff = false;
  #failures = 0;
  /** Prefetched runs, not started yet (see #prefetchOk). */
  #buffer: Reservation[] = [];
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

  constructor(app: Errand, options: WorkerOptions = {}) {
    super();
    this.#app = app;
    const queues = options.queues ?? [...new Set([...app.tasks.values()].map((t) => t.queue))];
    if (queues.length === 0) throw new ConfigError('The worker has no queue: define tasks first or pass queues');
    this.queues = [...new Set(queues.map((q) => checkQueueName(q, 'Worker')))];
    this.concurrency = positiveInt(options.concurrency ?? 10, 'concurrency');
    // Timers longer than Node's longest (2^31-1 ms) fire after 1 ms: renewals and prunes would spin.
    this.leaseMs = positiveInt(options.leaseMs ?? 30_000, 'leaseMs', MAX_TIMER_MS);
    this.renewEvery = positiveInt(options.renewEvery ?? Math.max(1, Math.floor(this.leaseMs / 3)), 'renewEvery', MAX_TIMER_MS);
    if (this.renewEvery >= this.leaseMs)
      throw new ConfigError(`renewEvery (${this.renewEvery}) must be shorter than leaseMs (${this.leaseMs})`);
    this.shutdownGraceMs = nonNegative(options.shutdownGraceMs ?? 10_000, 'shutdownGraceMs');
    this.pruneEvery = positiveInt(options.pruneEvery ?? 60_000, 'pruneEvery', MAX_TIMER_MS);
    this.id = options.id ?? `${hostname()}:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
    this.logger = (options.logger ?? app.logger).child({ worker: this.id });
  }

  /** Runs currently executing. */
  get activeCount(): number {
    return this.#active.size;
  }

  get state(): 'new' | 'running' | 'stopping' | 'stopped' {
    return this.#state;
  }

  /**
   * Connects to the broker and starts taking runs. Resolves once connected. Rejects when the broker
   * cannot be used as configured (a bad URL; `BrokerConfigError`: Redis refused the credentials or
   * the TLS set-up); a broker that is merely unreachable is waited for (logged, then retried).
   */
  async start(): Promise<this> {
    if (this.#state !== 'new') throw new ConfigError(`Worker ${this.id} was already started`);
    this.#state = 'running';
    try {
      this.#broker = await this.#app.broker();
      await this.#broker.ping();
    } catch (err) {
      if (err instanceof ConfigError || err instanceof BrokerConfigError) {
        this.#state = 'new';
        throw err;
      }
      this.logger.warn({ err }, 'broker unreachable at start; the worker waits for it');
      this.#broker ??= await this.#app.broker();
    }
    this.#unsubscribeCancel = this.#broker.onCancel((ids) => {
      for (const id of ids) this.#detach(id, 'lost', new LeaseLostError(`Run ${id} was cancelled`));
    });
    this.#renewTimer = setInterval(() => void this.#renew(), this.renewEvery);
    this.#pruneTimer = setInterval(() => void this.#prune(), this.pruneEvery);
    this.#renewTimer.unref();
    this.#pruneTimer.unref();
    if (isInspector(this.#broker)) {
      void this.#heartbeat();
      this.#heartbeatTimer = setInterval(() => void this.#heartbeat(), HEARTBEAT_EVERY_MS);
      this.#heartbeatTimer.unref();
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
        this.logger.info({ signal, active: this.#active.size, graceMs: this.shutdownGraceMs }, 'stopping: finishing active runs');
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
   * when no reservation goes out, they are sent on their own (#flush). When a reply brings no run,
   * the worker waits for the broker's wake-up signal (or the next due time) once its other call is
   * back.
   */
  #pump(): void {
    this.#pumpScheduled = false;
    if (this.#state === 'running' && !this.#waiting && !this.#backingOff) {
      const calls = this.#broker!.remote && this.#lastFull ? 2 : 1;
      const chunk = Math.ceil(this.concurrency / calls);
      const capacity = this.concurrency + (this.#prefetchOk() ? 1 : 0);
      const free = capacity - this.#active.size - this.#buffer.length - this.#reserving;
      if (!this.#drained && free > 0 && this.#inflight < calls && (this.#inflight === 0 || free >= chunk)) {
        this.#reserve(Math.min(free, chunk));
        // The second call goes out a turn later, so that the broker's replies come apart.
        if (free > chunk) this.#schedule();
      }
      if (this.#drained && this.#inflight === 0) this.#wait();
    }
    if (this.#pending.length && !this.#flushing) this.#flushing = this.#flush();
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
    const settle = this.#pending;
    this.#pending = [];
    this.#inflight++;
    this.#reserving += max;
    this.#track(
      broker
        .reserve({
          workerId: this.id,
          queues: this.queues,
          max,
          leaseMs: this.leaseMs,
          now: Date.now(),
          ...(settle.length ? { settle } : {}),
        })
        .then(
          async (result) => {
            this.#inflight--;
            this.#reserving -= max;
            this.#failures = 0;
            if (settle.length) this.#settled(settle, result.settled);
            if (this.#state !== 'running') {
              // Stopped while reserving: hand these back at once.
              if (result.runs.length) await this.#releaseLeases(result.runs.map((r) => ({ id: r.id, attempt: r.attempt })));
              return;
            }
            for (const run of result.runs) {
              if (this.#active.size < this.concurrency) this.#execute(run);
              else this.#buffer.push(run);
            }
            this.#drained = result.runs.length === 0;
            this.#lastFull = result.runs.length === max;
            this.#nextAt = result.nextAt;
            this.#schedule();
          },
          (err: unknown) => {
            this.#inflight--;
            this.#reserving -= max;
            this.#pending = settle.concat(this.#pending);
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

  /** Nothing to reserve: sleeps until the broker signals work, the next due time, or stop. */
  #wait(): void {
    this.#waiting = true;
    this.#track(
      this.#broker!.waitForWork(this.queues, this.#nextAt, this.#stop.signal).then(
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
      sleep(Math.min(5000, 100 * 2 ** Math.min(this.#failures, 6)), this.#stop.signal).then(() => {
        this.#backingOff = false;
        this.#schedule();
      }),
    );
  }

  #execute(run: Reservation): void {
    const entry: ActiveRun = { run };
    this.#active.set(run.id, entry);
    void this.#run(entry).finally(() => {
      if (entry.progressTimer) clearTimeout(entry.progressTimer);
      this.#active.delete(run.id);
      const next = this.#state === 'running' ? this.#buffer.shift() : undefined;
      if (next) this.#execute(next);
      const waiter = this.#slotWaiter;
      this.#slotWaiter = undefined;
      waiter?.();
      this.#schedule();
    });
  }

  async #run(entry: ActiveRun): Promise<void> {
    const { run } = entry;
    const task = this.#app.tasks.get(run.task);
    const log = new RunLog(this.logger, run);
    const started = performance.now();
    if (this.listenerCount('run')) this.emit('run', { type: 'start', run } satisfies RunEvent);
    log.info('run started');

    if (!task) {
      const known = [...this.#app.tasks.keys()].join(', ') || 'none';
      return this.#fail(
        entry,
        log,
        started,
        new PermanentError(`No task named "${run.task}" is registered in this worker (registered: ${known})`),
        'unknown_task',
        7 * 86_400_000,
      );
    }
    const parsedJson = safeParse(run.input);
    if (!parsedJson.ok) {
      return this.#fail(
        entry,
        log,
        started,
        new PermanentError(`The stored input is not valid JSON: ${parsedJson.error}`),
        'corrupt',
        task.retention.failed,
      );
    }
    const redact = this.#app.redactPaths(run.task);
    if (redact.length) entry.secrets = secretsAt(parsedJson.value, redact);
    const parsed = task.schema.safeParse(parsedJson.value);
    if (!parsed.success) {
      const lines = parsed.error.issues.map(
        (i) => `${formatPath(i.path.map((p) => (typeof p === 'symbol' ? String(p) : p)))}: ${i.message}`,
      );
      return this.#fail(
        entry,
        log,
        started,
        new PermanentError(`The stored input does not match the task's schema: ${lines.join('; ')}`),
        'invalid_input',
        task.retention.failed,
      );
    }

    const ctx = new RunContext(entry, this.logger, this.#progressOf);
    const timer = setTimeout(() => {
      abort(entry, new TaskTimeoutError(`Attempt ${run.attempt} of run ${run.id} timed out after ${task.timeout} ms`));
    }, task.timeout);
    const traced = startRunSpan(
      run.task,
      () => ({ 'errand.run_id': run.id, 'errand.queue': run.queue, 'errand.attempt': run.attempt }),
      run.traceparent,
    );
    const span = traced?.span;
    let value: unknown;
    try {
      value = await new Promise((resolve, reject) => {
        if (entry.aborted) return reject(entry.aborted.reason);
        entry.reject = reject;
        const call = () => Promise.resolve().then(() => task.handler(parsed.data, ctx));
        (traced ? context.with(traced.ctx, call) : call()).then(resolve, reject);
      });
    } catch (err) {
      clearTimeout(timer);
      endRunSpan(span, err);
      return this.#handlerFailed(entry, task, log, started, err);
    }
    clearTimeout(timer);
    endRunSpan(span);
    if (entry.detached) return this.#detachedOutcome(entry, log, started);

    const resultIssues = jsonIssues(value);
    if (resultIssues.length) {
      const where = resultIssues.map((i) => `${formatPath(i.path, 'result')}: ${i.message}`).join('; ');
      return this.#fail(
        entry,
        log,
        started,
        new PermanentError(`The handler's result cannot be stored as JSON: ${where}`),
        'invalid_result',
        task.retention.failed,
      );
    }
    const durationMs = performance.now() - started;
    this.#observeRunTime(durationMs);
    this.#settle({
      id: run.id,
      attempt: run.attempt,
      outcome: 'succeeded',
      result: value === undefined ? null : JSON.stringify(value),
      retentionMs: task.retention.succeeded,
    });
    log.info({ durationMs: round(durationMs) }, 'run succeeded');
    if (this.listenerCount('run')) this.emit('run', { type: 'success', run, durationMs } satisfies RunEvent);
  }

  #handlerFailed(entry: ActiveRun, task: Task, log: RunLog, started: number, err: unknown): void {
    if (entry.detached) {
      this.#detachedOutcome(entry, log, started);
      return;
    }
    const { run } = entry;
    const permanent = err instanceof PermanentError;
    if (!permanent && run.attempt < task.retries.maxAttempts) {
      const retryAt = Date.now() + backoffDelay(task.retries, run.attempt);
      const reason = err instanceof TaskTimeoutError ? 'timeout' : undefined;
      const shown = entry.secrets?.length ? scrubThrown(err, entry.secrets) : err;
      this.#settle({ id: run.id, attempt: run.attempt, outcome: 'retry', error: encodeError(shown, reason), runAt: retryAt });
      const durationMs = performance.now() - started;
      this.#observeRunTime(durationMs);
      log.warn(
        { durationMs: round(durationMs), err: shown, retryAt: new Date(retryAt).toISOString(), maxAttempts: task.retries.maxAttempts },
        'run failed; retry scheduled',
      );
      this.emit('run', { type: 'retry', run, durationMs, error: err, retryAt } satisfies RunEvent);
      return;
    }
    this.#fail(entry, log, started, err, err instanceof TaskTimeoutError ? 'timeout' : undefined, task.retention.failed);
  }

  #fail(entry: ActiveRun, log: RunLog, started: number, err: unknown, reason: string | undefined, retentionMs: number): void {
    const { run } = entry;
    // Secret input values repeated verbatim in the error are neither stored nor logged (see src/core/redact.ts).
    const shown = entry.secrets?.length ? scrubThrown(err, entry.secrets) : err;
    this.#settle({ id: run.id, attempt: run.attempt, outcome: 'failed', error: encodeError(shown, reason), retentionMs });
    const durationMs = performance.now() - started;
    this.#observeRunTime(durationMs);
    log.error({ durationMs: round(durationMs), err: shown, reason }, 'run failed');
    this.emit('run', { type: 'failure', run, durationMs, error: err } satisfies RunEvent);
  }

  #detachedOutcome(entry: ActiveRun, log: RunLog, started: number): void {
    const durationMs = performance.now() - started;
    if (entry.detached === 'released') {
      log.info({ durationMs: round(durationMs) }, 'run handed back (worker stopping)');
      this.emit('run', { type: 'released', run: entry.run, durationMs } satisfies RunEvent);
    } else {
      log.warn({ durationMs: round(durationMs) }, 'run ended after its lease was lost (cancelled or recovered); outcome discarded');
      this.emit('run', { type: 'lost', run: entry.run, durationMs } satisfies RunEvent);
    }
  }

  /** Stops a run's handler without settling it: its lease is gone, or it is being handed back. */
  #detach(id: string, why: 'lost' | 'released', reason: Error): void {
    // A prefetched run not started yet: dropped (its lease is gone, or it is being handed back).
    const held = this.#buffer.findIndex((r) => r.id === id);
    if (held >= 0) {
      const [run] = this.#buffer.splice(held, 1);
      this.emit('run', { type: why, run: run!, durationMs: 0 } satisfies RunEvent);
    }
    const entry = this.#active.get(id);
    if (!entry || entry.detached) return;
    entry.detached = why;
    abort(entry, reason);
  }

  #observeRunTime(ms: number): void {
    this.#runMs = this.#runMs === Number.POSITIVE_INFINITY ? ms : this.#runMs * 0.9 + ms * 0.1;
  }

  readonly #progressOf = (entry: ActiveRun, value: unknown): void => this.#progress(entry, value);

  #progress(entry: ActiveRun, value: unknown): void {
    const issues = jsonIssues(value);
    if (issues.length) throw new TypeError(`progress(): ${issues[0]!.message} at ${formatPath(issues[0]!.path, 'value')}`);
    entry.progress = JSON.stringify(value ?? null);
    if (entry.progressTimer) return;
    entry.progressTimer = setTimeout(() => {
      entry.progressTimer = undefined;
      const text = entry.progress;
      if (text === undefined || entry.detached) return;
      entry.progress = undefined;
      this.#broker!.progress(this.id, { id: entry.run.id, attempt: entry.run.attempt }, text).catch((err) =>
        this.#logBrokerError(err, 'progress update failed'),
      );
    }, 200);
  }

  /** Queues an outcome: it goes with the next reservation, or on its own (see #pump). */
  #settle(s: Settlement): void {
    this.#settling.set(s.id, s);
    this.#pending.push(s);
    this.#schedule();
  }

  /** Outcomes the broker has stored (or found lost): their leases need no more renewing. */
  #settled(batch: readonly Settlement[], statuses: readonly SettleStatus[] | undefined): void {
    batch.forEach((s, i) => {
      this.#settling.delete(s.id);
      if (statuses?.[i] === 'lost')
        this.logger.warn({ runId: s.id, outcome: s.outcome }, 'outcome not stored: the run was cancelled or its lease expired meanwhile');
    });
  }

  /** Stores pending outcomes in batches, one call at a time; on broker errors keeps them and tries again (their leases are still renewed). */
  async #flush(): Promise<void> {
    let failures = 0;
    while (this.#pending.length) {
      const batch = this.#pending;
      this.#pending = [];
      try {
        const statuses = await this.#broker!.settle(this.id, batch, Date.now());
        failures = 0;
        this.#settled(batch, statuses);
      } catch (err) {
        failures++;
        this.#pending = batch.concat(this.#pending);
        this.#logBrokerError(err, `storing ${batch.length} outcome(s) failed; retrying`);
        await sleep(Math.min(5000, 100 * 2 ** Math.min(failures, 6)));
      }
    }
    this.#flushing = undefined;
  }

  #leases(): Lease[] {
    const leases: Lease[] = [];
    for (const e of this.#active.values()) if (!e.detached) leases.push({ id: e.run.id, attempt: e.run.attempt });
    for (const s of this.#settling.values()) if (!this.#active.has(s.id)) leases.push({ id: s.id, attempt: s.attempt });
    for (const r of this.#buffer) leases.push({ id: r.id, attempt: r.attempt });
    return leases;
  }

  async #renew(): Promise<void> {
    const leases = this.#leases();
    if (leases.length === 0) return;
    try {
      const lost = await this.#broker!.renew(this.id, leases, this.leaseMs, Date.now());
      for (const id of lost) {
        this.#detach(id, 'lost', new LeaseLostError(`Run ${id} is no longer held by this worker (cancelled, or its lease expired)`));
        if (this.#settling.delete(id)) this.#pending = this.#pending.filter((s) => s.id !== id);
      }
    } catch (err) {
      this.#logBrokerError(err, 'lease renewal failed; retrying');
    }
  }

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
          active: this.#active.size,
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

  async #releaseLeases(leases: Lease[]): Promise<void> {
    for (let i = 0; ; i++) {
      try {
        await this.#broker!.release(this.id, leases, Date.now());
        return;
      } catch (err) {
        this.#logBrokerError(err, 'handing runs back failed');
        // Their leases will expire and the runs come back anyway; do not hold the shutdown forever.
        if (i >= 3) return;
        await sleep(200 * 2 ** i);
      }
    }
  }

  async #shutdown(graceMs: number): Promise<void> {
    if (this.#state === 'new') {
      this.#state = 'stopped';
      return;
    }
    this.#state = 'stopping';
    this.#stop.abort();
    this.#slotWaiter?.();
    // Reservations in flight come back (their runs are handed back), the wait for work ends.
    while (this.#calls.size) await Promise.allSettled(this.#calls);
    const deadline = Date.now() + graceMs;
    while (this.#active.size > 0 && Date.now() < deadline && !this.#now) {
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
    const leases: Lease[] = this.#buffer.map((r) => ({ id: r.id, attempt: r.attempt }));
    this.#buffer = [];
    for (const e of this.#active.values()) {
      if (e.detached) continue;
      leases.push({ id: e.run.id, attempt: e.run.attempt });
      this.#detach(e.run.id, 'released', new WorkerStoppedError(`Worker ${this.id} is stopping; the run is handed back to the queue`));
    }
    // Every outcome stored (or given up on) before the leases still held are handed back.
    for (;;) {
      if (this.#calls.size) await Promise.allSettled(this.#calls);
      else if (this.#pending.length && !this.#flushing) this.#flushing = this.#flush();
      else if (this.#flushing) await this.#flushing;
      else break;
    }
    if (leases.length) await this.#releaseLeases(leases);
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

/** Node's longest timer, in ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

function positiveInt(v: unknown, name: string, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max)
    throw new ConfigError(`Worker option ${name} must be a positive integer up to ${max}, got ${String(v)}`);
  return v;
}

function nonNegative(v: unknown, name: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0)
    throw new ConfigError(`Worker option ${name} must be a non-negative number, got ${String(v)}`);
  return v;
}

const HEARTBEAT_EVERY_MS = 5000;

/** Runs shorter than this on average (ms) let the worker prefetch one run (see Worker#prefetchOk). */
const PREFETCH_RUN_MS = 10;

function isInspector(b: unknown): b is BrokerInspector {
  return typeof (b as BrokerInspector)?.heartbeat === 'function';
}

/** The worker's own per-run log lines: the run's fields added to each line, without a child logger per run. */
class RunLog {
  readonly #logger: Logger;
  readonly #run: Reservation;
  constructor(logger: Logger, run: Reservation) {
    this.#logger = logger;
    this.#run = run;
  }
  info(objOrMsg: object | string, msg?: string): void {
    this.#at('info', objOrMsg, msg);
  }
  warn(objOrMsg: object | string, msg?: string): void {
    this.#at('warn', objOrMsg, msg);
  }
  error(objOrMsg: object | string, msg?: string): void {
    this.#at('error', objOrMsg, msg);
  }
  #at(level: 'info' | 'warn' | 'error', objOrMsg: object | string, msg?: string): void {
    if (!this.#logger.isLevelEnabled(level)) return;
    const bindings = runBindings(this.#run);
    if (typeof objOrMsg === 'string') this.#logger[level](bindings, objOrMsg);
    else this.#logger[level]({ ...bindings, ...objOrMsg }, msg);
  }
}

const runBindings = (run: Reservation) => ({ runId: run.id, task: run.task, queue: run.queue, attempt: run.attempt });

/** Stops an attempt (once): its handler's signal aborts and the worker stops waiting for it. */
function abort(entry: ActiveRun, reason: unknown): void {
  if (entry.aborted) return;
  entry.aborted = { reason };
  entry.controller?.abort(reason);
  entry.reject?.(reason);
}

/**
 * A handler's context. The AbortSignal and the logger are made when the handler first reads them:
 * most handlers use neither, and both cost a few objects per run.
 */
class RunContext implements TaskContext {
  readonly runId: string;
  readonly task: string;
  readonly queue: string;
  readonly attempt: number;
  readonly traceparent?: string;
  readonly #entry: ActiveRun;
  readonly #workerLogger: Logger;
  readonly #progress: (entry: ActiveRun, value: unknown) => void;
  #logger: Logger | undefined;
  constructor(entry: ActiveRun, workerLogger: Logger, progress: (entry: ActiveRun, value: unknown) => void) {
    const { run } = entry;
    this.runId = run.id;
    this.task = run.task;
    this.queue = run.queue;
    this.attempt = run.attempt;
    if (run.traceparent) this.traceparent = run.traceparent;
    this.#entry = entry;
    this.#workerLogger = workerLogger;
    this.#progress = progress;
  }
  get signal(): AbortSignal {
    const entry = this.#entry;
    if (!entry.controller) {
      entry.controller = new AbortController();
      if (entry.aborted) entry.controller.abort(entry.aborted.reason);
    }
    return entry.controller.signal;
  }
  get logger(): Logger {
    this.#logger ??= this.#workerLogger.child(runBindings(this.#entry.run));
    return this.#logger;
  }
  progress(value: unknown): void {
    this.#progress(this.#entry, value);
  }
}

const round = (ms: number) => Math.round(ms * 100) / 100;
