// The run context: one attempt's state while the worker holds it (ActiveRun), what its handler sees
// as `ctx` (RunContext), and the worker's per-run log lines (RunLog). Shared by the executor, which
// runs the handler, and the lease book, which stops it when the lease is lost or handed back.
import type { Logger } from 'pino';
import type { Reservation } from '../broker/types.ts';
import { BackOff, type BackOffScope, formatPath } from '../core/errors.ts';
import { jsonIssues } from '../core/json.ts';
import { checkSpawn } from '../broker/shared/workflow.ts';
import type { TaskContext } from '../task/task.ts';
import { type AnyFlow, compileSpawn, type ResultOf, type Spawn } from '../task/workflow.ts';

/** One attempt the worker holds: reserved, started, not yet settled. */
export interface ActiveRun {
  run: Reservation;
  /** Why the attempt was stopped (timeout, cancel, shutdown): set once, by `abort`. */
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

/** Stops an attempt (once): its handler's signal aborts and the worker stops waiting for it. */
export function abort(entry: ActiveRun, reason: unknown): void {
  if (entry.aborted) return;
  entry.aborted = { reason };
  entry.controller?.abort(reason);
  entry.reject?.(reason);
}

/** Sends a run's latest progress (JSON text) to the broker. */
export type ProgressSender = (entry: ActiveRun, text: string) => void;

/** How often at most a run's progress is sent to the broker, in ms (the latest value wins). */
const PROGRESS_EVERY_MS = 200;

/** `ctx.progress(value)`: checks the value at once, sends the latest one at most every PROGRESS_EVERY_MS. */
export function reportProgress(entry: ActiveRun, value: unknown, send: ProgressSender): void {
  const issues = jsonIssues(value);
  if (issues.length) throw new TypeError(`progress(): ${issues[0]!.message} at ${formatPath(issues[0]!.path, 'value')}`);
  entry.progress = JSON.stringify(value ?? null);
  if (entry.progressTimer) return;
  entry.progressTimer = setTimeout(() => {
    entry.progressTimer = undefined;
    const text = entry.progress;
    if (text === undefined || entry.detached) return;
    entry.progress = undefined;
    send(entry, text);
  }, PROGRESS_EVERY_MS);
}

/**
 * Sends a run's progress still waiting for its PROGRESS_EVERY_MS turn, now: called when the attempt
 * ended, before its outcome is queued, so that the value reported last (by an in-thread handler, or
 * by an isolate just before its outcome) is stored rather than dropped with the timer. The call
 * starts before the outcome's settle, on the same connection, so it lands while the run is active.
 */
export function flushProgress(entry: ActiveRun, send: ProgressSender): void {
  if (entry.progressTimer) clearTimeout(entry.progressTimer);
  entry.progressTimer = undefined;
  const text = entry.progress;
  entry.progress = undefined;
  if (text !== undefined && !entry.detached) send(entry, text);
}

export const runBindings = (run: Reservation) => ({ runId: run.id, task: run.task, queue: run.queue, attempt: run.attempt });

/**
 * A handler's context. The AbortSignal and the logger are made when the handler first reads them:
 * most handlers use neither, and both cost a few objects per run.
 */
export class RunContext implements TaskContext {
  readonly runId: string;
  readonly task: string;
  readonly queue: string;
  readonly attempt: number;
  readonly traceparent?: string;
  readonly schedule?: { id: string; at: Date; backfilled: boolean };
  readonly #entry: ActiveRun;
  readonly #workerLogger: Logger;
  readonly #progress: (entry: ActiveRun, value: unknown) => void;
  readonly #maxInputBytes: number;
  readonly #tasks: ReadonlyMap<string, unknown> | undefined;
  #logger: Logger | undefined;
  /** `tasks`: the worker's, by name; `ctx.spawn` refuses a step of any other task. */
  constructor(
    entry: ActiveRun,
    workerLogger: Logger,
    progress: (entry: ActiveRun, value: unknown) => void,
    maxInputBytes = 1024 * 1024,
    tasks?: ReadonlyMap<string, unknown>,
  ) {
    const { run } = entry;
    this.runId = run.id;
    this.task = run.task;
    this.queue = run.queue;
    this.attempt = run.attempt;
    if (run.traceparent) this.traceparent = run.traceparent;
    if (run.schedule) this.schedule = { id: run.schedule.id, at: new Date(run.schedule.at), backfilled: run.schedule.backfilled };
    this.#entry = entry;
    this.#workerLogger = workerLogger;
    this.#progress = progress;
    this.#maxInputBytes = maxInputBytes;
    this.#tasks = tasks;
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
  spawn<F extends AnyFlow>(shape: F): Spawn<ResultOf<F>> {
    const run = this.#entry.run;
    const spawn = compileSpawn(shape, Date.now(), this.#maxInputBytes, this.#tasks);
    // The broker checks it again; checked here, the handler gets the error (and may catch it).
    checkSpawn({ id: run.id, attempt: run.attempt, outcome: 'spawned', ...spawn, retentionMs: 0 });
    return spawn;
  }

  backOff(ms: number, options?: { scope?: BackOffScope; reason?: string }): BackOff {
    return new BackOff(ms, options);
  }
}

/** The worker's own per-run log lines: the run's fields added to each line, without a child logger per run. */
export class RunLog {
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

/** A duration in ms, to two decimals (for log lines). */
export const round = (ms: number) => Math.round(ms * 100) / 100;
