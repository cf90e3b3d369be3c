// The executor: runs one attempt's handler and says how it ended. It checks the run (a registered
// task, JSON input that matches the schema), runs the handler under the task's timeout and the
// attempt's abort (cancel, lost lease, shutdown), checks that the result can be stored as JSON, and
// turns all of it into an outcome: what to store (a settlement: succeeded, retry or failed, errors
// scrubbed of secret input values) and what to report (a RunEvent's type and fields).
//
// `Executor` is the seam where a handler runs: the worker only hands it an attempt and awaits an
// outcome. `InlineExecutor` runs the handler in this thread, or, for a task with `isolation`, in an
// isolate (a worker thread or a child process, see isolates.ts) that is stopped for real past the
// task's timeout.
import type { Logger } from 'pino';
import type { Settlement } from '../broker/types.ts';
import { BackOff, formatPath, IsolateCrashedError, IsolateMemoryError, PermanentError, TaskTimeoutError } from '../core/errors.ts';
import { jsonIssues, safeParse } from '../core/json.ts';
import { checkSchema } from '../core/schema-issues.ts';
import { scrubThrown, secretsAt } from '../core/redact.ts';
import { encodeError } from '../core/run-info.ts';
import { intervalText } from '../schedule/spec.ts';
import { backoffDelay } from '../task/options.ts';
import type { TaskDefinition } from '../task/task.ts';
import { Spawn } from '../task/workflow.ts';
import { context, endRunSpan, startRunSpan } from '../telemetry/tracing.ts';
import { IsolatePool } from './isolates.ts';
import { type ActiveRun, abort, RunContext, RunLog, round, runBindings } from './run-context.ts';

/** How an attempt ended. */
export type Outcome =
  | {
      type: 'success' | 'retry' | 'failure' | 'backoff';
      /** What the worker stores (with its next reservation, or on its own). */
      settlement: Settlement;
      /** Handler time in ms (validation included). */
      durationMs: number;
      /** What the handler threw, as thrown (not scrubbed): for `retry` and `failure`. */
      error?: unknown;
      /** For `retry`: when the next attempt is due; for `backoff`: until when the run (its key, its task) waits. */
      retryAt?: number;
    }
  | {
      /** The attempt was detached (see ActiveRun.detached): nothing is stored. */
      type: 'lost' | 'released';
      settlement?: undefined;
      durationMs: number;
      error?: undefined;
      retryAt?: undefined;
    };

/**
 * Runs attempts. `execute` runs the attempt held in `entry` (its reservation: task, input, attempt,
 * traceparent) to its end and resolves with its outcome; it never rejects. While it runs, the worker
 * may stop it with `abort(entry, reason)` (after setting `entry.detached` when the lease is lost or
 * handed back): the executor must then end the attempt promptly, with a `lost` or `released`
 * outcome when detached.
 */
export interface Executor {
  execute(entry: ActiveRun): Promise<Outcome>;
  /** Releases what the executor holds (its isolates): called once the worker has stopped. */
  close?(): Promise<void>;
}

/** What an executor needs from the worker. */
export interface ExecutorHost {
  /** Registered tasks, by name. */
  readonly tasks: ReadonlyMap<string, TaskDefinition>;
  /** Redaction paths for a task's input. */
  redactPaths(task: string): readonly string[];
  /** The worker's logger (the handler's `ctx.logger` is its child). */
  readonly logger: Logger;
  /** `ctx.progress(value)` of the attempt in `entry`. */
  readonly progress: (entry: ActiveRun, value: unknown) => void;
  /** Runs at once: the most isolates of a kind kept idle. Default 1. */
  readonly concurrency?: number;
  /** The largest input of a run a handler spawns (`ctx.spawn`), in bytes of JSON. Default 1 MiB. */
  readonly maxInputBytes?: number | undefined;
  /** How long a run of a task not in `tasks` is handed back before it fails (`unknownTaskWaitMs`). Default 0: fails at once. */
  readonly unknownTaskWaitMs?: number | undefined;
}

/** How long a failure is kept when the run's task is unknown to this worker (no task retention to go by). */
const UNKNOWN_TASK_RETENTION_MS = 7 * 86_400_000;

/** A run of an unknown task is handed back for 1 s at first, then for as long as it has waited, at most 30 s. */
const UNKNOWN_TASK_STEP_MS = { min: 1000, max: 30_000 };

/**
 * When this worker first met each run of a task it does not define (by run id), so that it hands
 * such a run back until `unknownTaskWaitMs` has passed, then fails it. Forgotten when it fails, or
 * once long past (the run was taken by a worker that defines its task).
 */
class UnknownRuns {
  readonly #met = new Map<string, number>();
  #sweptAt = 0;

  /** When the run was first met (now, if this is the first time). */
  met(id: string, now: number, waitMs: number): { at: number; first: boolean } {
    const at = this.#met.get(id);
    if (at !== undefined) return { at, first: false };
    // Past 10,000 entries, those long past are dropped: once a minute at most, not at every run met
    // (with that many met within the window, a sweep per run would scan them all each time).
    if (this.#met.size >= 10_000 && now - this.#sweptAt >= 60_000) {
      this.#sweptAt = now;
      for (const [k, t] of this.#met) if (t < now - waitMs - 600_000) this.#met.delete(k);
    }
    this.#met.set(id, now);
    return { at: now, first: true };
  }

  forget(id: string): void {
    this.#met.delete(id);
  }
}

/**
 * Runs handlers in this thread, as promises: a timeout aborts the handler's signal and stops waiting
 * for it. The handlers of isolated tasks run in isolates, which a timeout stops for real.
 */
export class InlineExecutor implements Executor {
  readonly #host: ExecutorHost;
  #pool: IsolatePool | undefined;
  readonly #unknown = new UnknownRuns();

  constructor(host: ExecutorHost) {
    this.#host = host;
  }

  /** The isolates started so far (busy or idle). */
  get isolates(): number {
    return this.#pool?.size ?? 0;
  }

  async close(): Promise<void> {
    await this.#pool?.close();
    this.#pool = undefined;
  }

  /**
   * A run of a task this worker does not define: handed back (a `backoff` of its own, no attempt
   * used) until the worker has met it for `unknownTaskWaitMs`, so that a worker that defines the
   * task takes it (a rolling deploy); then failed with reason `unknown_task`.
   */
  #unknownTask(entry: ActiveRun, log: RunLog, started: number): Outcome {
    const { run } = entry;
    const host = this.#host;
    const waitMs = host.unknownTaskWaitMs ?? 0;
    const known = [...host.tasks.keys()].join(', ') || 'none';
    const missing = `No task named "${run.task}" is registered in this worker (registered: ${known})`;
    const now = Date.now();
    const met = waitMs > 0 ? this.#unknown.met(run.id, now, waitMs) : { at: now, first: true };
    const left = met.at + waitMs - now;
    if (left > 0) {
      const waited = now - met.at;
      const until = now + Math.min(left, Math.max(UNKNOWN_TASK_STEP_MS.min, Math.min(UNKNOWN_TASK_STEP_MS.max, waited)));
      const error = new Error(`${missing}: handed back for a worker that defines it`);
      const settlement: Settlement = { id: run.id, attempt: run.attempt, outcome: 'backoff', until, scope: 'key' };
      if (met.first) {
        log.warn(
          { task: run.task, registered: known, failsAt: new Date(met.at + waitMs).toISOString() },
          'run of a task this worker does not define: handed back for a worker that defines it (it fails with reason unknown_task if none takes it by failsAt)',
        );
      }
      return { type: 'backoff', settlement, durationMs: performance.now() - started, error, retryAt: until };
    }
    this.#unknown.forget(run.id);
    const waited = waitMs > 0 ? `; no worker that defines it took the run within ${intervalText(waitMs)} (unknownTaskWaitMs)` : '';
    return fail(entry, log, started, new PermanentError(`${missing}${waited}`), 'unknown_task', UNKNOWN_TASK_RETENTION_MS);
  }

  async execute(entry: ActiveRun): Promise<Outcome> {
    const { run } = entry;
    const host = this.#host;
    const task = host.tasks.get(run.task);
    const log = new RunLog(host.logger, run);
    const started = performance.now();
    log.info('run started');

    if (!task) return this.#unknownTask(entry, log, started);
    // A schedule's expiry policy: a run that could not start in time is dropped, with the reason.
    const expiresAt = run.schedule?.expiresAt;
    if (expiresAt !== undefined && run.startedAt > expiresAt) {
      return fail(
        entry,
        log,
        started,
        new PermanentError(
          `Not run: it could not start by ${new Date(expiresAt).toISOString()} (schedule ${run.schedule?.id}, fire time ${new Date(run.schedule?.at ?? 0).toISOString()})`,
        ),
        'expired',
        task.retention.failed,
      );
    }
    const parsedJson = safeParse(run.input);
    if (!parsedJson.ok) {
      return fail(
        entry,
        log,
        started,
        new PermanentError(`The stored input is not valid JSON: ${parsedJson.error}`),
        'corrupt',
        task.retention.failed,
      );
    }
    const redact = host.redactPaths(run.task);
    if (redact.length) entry.secrets = secretsAt(parsedJson.value, redact);
    const parsed = checkSchema(task.schema, parsedJson.value);
    if (!parsed.ok) {
      const lines = parsed.issues.map((i) => `${formatPath(i.path)}: ${i.message}`);
      return fail(
        entry,
        log,
        started,
        new PermanentError(`The stored input does not match the task's schema: ${lines.join('; ')}`),
        'invalid_input',
        task.retention.failed,
      );
    }

    const ctx = new RunContext(entry, host.logger, host.progress, host.maxInputBytes, host.tasks);
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
        const call =
          task.isolation === 'none'
            ? () => Promise.resolve().then(() => task.handler(parsed.value, ctx))
            : () => this.#isolated(entry, task, ctx);
        (traced ? context.with(traced.ctx, call) : call()).then(resolve, reject);
      });
    } catch (err) {
      clearTimeout(timer);
      endRunSpan(span, err);
      return handlerFailed(entry, task, log, started, err);
    }
    clearTimeout(timer);
    endRunSpan(span);
    if (entry.detached) return detachedOutcome(entry, log, started);
    return succeeded(entry, task, log, started, value);
  }

  /** Runs the attempt in an isolate: its progress and log lines come back here, the attempt's abort goes there. */
  #isolated(entry: ActiveRun, task: TaskDefinition, ctx: RunContext): Promise<unknown> {
    const { run } = entry;
    const host = this.#host;
    this.#pool ??= new IsolatePool(host.concurrency ?? 1);
    let logger: Logger | undefined;
    return this.#pool.run(task, {
      message: {
        t: 'run',
        module: task.module!,
        task: task.name,
        handlerName: task.handler.name,
        input: run.input,
        runId: run.id,
        queue: run.queue,
        attempt: run.attempt,
        ...(run.traceparent ? { traceparent: run.traceparent } : {}),
        ...(run.schedule ? { schedule: { id: run.schedule.id, at: run.schedule.at, backfilled: run.schedule.backfilled } } : {}),
        logLevel: host.logger.level,
      },
      signal: ctx.signal,
      progress: (value) => host.progress(entry, value),
      log: (line) => {
        logger ??= host.logger.child(runBindings(run));
        relayLogLine(logger, line);
      },
    });
  }
}

/** Logs a line of an isolated handler's `ctx.logger` (pino's JSON) on the worker's logger, at its level. */
function relayLogLine(logger: Logger, line: string): void {
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(line) as Record<string, unknown>;
  } catch {
    logger.info(line.trimEnd());
    return;
  }
  const { level, msg, ...rest } = parsed;
  const label = (typeof level === 'number' && logger.levels.labels[level]) || 'info';
  const log = (logger as unknown as Record<string, (o: object, m?: string) => void>)[label];
  if (typeof log === 'function') log.call(logger, rest, typeof msg === 'string' ? msg : undefined);
}

/** The `reason` stored with a failed attempt's error, for the errors that have one. */
function reasonOf(err: unknown): string | undefined {
  if (err instanceof TaskTimeoutError) return 'timeout';
  if (err instanceof IsolateMemoryError) return 'memory';
  if (err instanceof IsolateCrashedError) return 'crashed';
  return undefined;
}

/** The handler returned `value`: stored as JSON, or the attempt fails (for good) when it cannot be. */
function succeeded(entry: ActiveRun, task: TaskDefinition, log: RunLog, started: number, value: unknown): Outcome {
  const { run } = entry;
  if (value instanceof Spawn) {
    // Dynamic fan-out: the attempt ends by creating the runs; the run waits for them (no slot held).
    const durationMs = performance.now() - started;
    log.info({ durationMs: round(durationMs), spawned: value.runs.length }, 'run spawned runs and waits for them');
    return {
      type: 'success',
      durationMs,
      settlement: {
        id: run.id,
        attempt: run.attempt,
        outcome: 'spawned',
        runs: value.runs,
        awaits: value.awaits,
        resultFrom: value.resultFrom,
        retentionMs: task.retention.succeeded,
      },
    };
  }
  if (task.output) {
    // The declared result schema: what is stored is what it parses to.
    const parsed = checkSchema(task.output, value);
    if (!parsed.ok) {
      const lines = parsed.issues.map((i) => `${formatPath(i.path, 'result')}: ${i.message}`);
      return fail(
        entry,
        log,
        started,
        new PermanentError(`The handler's result does not match the task's output schema: ${lines.join('; ')}`),
        'invalid_result',
        task.retention.failed,
      );
    }
    value = parsed.value;
  }
  const resultIssues = jsonIssues(value);
  if (resultIssues.length) {
    const where = resultIssues.map((i) => `${formatPath(i.path, 'result')}: ${i.message}`).join('; ');
    return fail(
      entry,
      log,
      started,
      new PermanentError(`The handler's result cannot be stored as JSON: ${where}`),
      'invalid_result',
      task.retention.failed,
    );
  }
  const durationMs = performance.now() - started;
  log.info({ durationMs: round(durationMs) }, 'run succeeded');
  return {
    type: 'success',
    durationMs,
    settlement: {
      id: run.id,
      attempt: run.attempt,
      outcome: 'succeeded',
      result: value === undefined ? null : JSON.stringify(value),
      retentionMs: task.retention.succeeded,
    },
  };
}

/** The handler threw (or timed out): a retry while attempts are left and the error is not permanent, else a failure. */
function handlerFailed(entry: ActiveRun, task: TaskDefinition, log: RunLog, started: number, err: unknown): Outcome {
  if (entry.detached) return detachedOutcome(entry, log, started);
  const { run } = entry;
  if (err instanceof BackOff) return backedOff(entry, log, started, err);
  const permanent = err instanceof PermanentError;
  const reason = reasonOf(err);
  if (permanent || run.attempt >= task.retries.maxAttempts) return fail(entry, log, started, err, reason, task.retention.failed);
  const retryAt = Date.now() + backoffDelay(task.retries, run.attempt);
  const shown = entry.secrets?.length ? scrubThrown(err, entry.secrets) : err;
  const settlement: Settlement = { id: run.id, attempt: run.attempt, outcome: 'retry', error: encodeError(shown, reason), runAt: retryAt };
  const durationMs = performance.now() - started;
  log.warn(
    { durationMs: round(durationMs), err: shown, retryAt: new Date(retryAt).toISOString(), maxAttempts: task.retries.maxAttempts },
    'run failed; retry scheduled',
  );
  return { type: 'retry', settlement, durationMs, error: err, retryAt };
}

/** The handler threw `ctx.backOff(ms)`: the run goes back without using an attempt (docs/flow-control.md). */
function backedOff(entry: ActiveRun, log: RunLog, started: number, err: BackOff): Outcome {
  const { run } = entry;
  const until = Date.now() + err.ms;
  const scope = err.scope === 'task' ? 'group' : 'key';
  const settlement: Settlement = { id: run.id, attempt: run.attempt, outcome: 'backoff', until, scope };
  const durationMs = performance.now() - started;
  log.info({ durationMs: round(durationMs), backOffMs: err.ms, scope: err.scope, until: new Date(until).toISOString() }, 'run backed off');
  return { type: 'backoff', settlement, durationMs, error: err, retryAt: until };
}

function fail(entry: ActiveRun, log: RunLog, started: number, err: unknown, reason: string | undefined, retentionMs: number): Outcome {
  const { run } = entry;
  // Secret input values repeated verbatim in the error are neither stored nor logged (see src/core/redact.ts).
  const shown = entry.secrets?.length ? scrubThrown(err, entry.secrets) : err;
  const settlement: Settlement = { id: run.id, attempt: run.attempt, outcome: 'failed', error: encodeError(shown, reason), retentionMs };
  const durationMs = performance.now() - started;
  log.error({ durationMs: round(durationMs), err: shown, reason }, 'run failed');
  return { type: 'failure', settlement, durationMs, error: err };
}

function detachedOutcome(entry: ActiveRun, log: RunLog, started: number): Outcome {
  const durationMs = performance.now() - started;
  if (entry.detached === 'released') {
    log.info({ durationMs: round(durationMs) }, 'run handed back (worker stopping)');
    return { type: 'released', durationMs };
  }
  log.warn({ durationMs: round(durationMs) }, 'run ended after its lease was lost (cancelled or recovered); outcome discarded');
  return { type: 'lost', durationMs };
}
