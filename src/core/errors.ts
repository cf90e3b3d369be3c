import { show } from './show.ts';

/** Base class of every error Errand throws on purpose. */
export class ErrandError extends Error {
  override name = 'ErrandError';
}

/** One problem in a value given to Errand: where (a path into the value) and what. */
export interface InputIssue {
  path: (string | number)[];
  message: string;
  /** A short machine-readable kind: zod's issue codes, or `not_serializable`, `too_large`. */
  code: string;
}

export function formatPath(path: readonly (string | number)[], root = 'input'): string {
  let out = root;
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : /^[A-Za-z_$][\w$]*$/.test(p) ? `.${p}` : `[${JSON.stringify(p)}]`;
  return out;
}

/** A task input (or option) that Errand refuses: each issue names its path. Nothing was enqueued. */
export class InputError extends ErrandError {
  override name = 'InputError';
  readonly issues: InputIssue[];
  readonly task: string | undefined;
  /** What was refused: the task `input`, or the enqueue `options`. */
  readonly root: string;
  constructor(issues: InputIssue[], task?: string, root: 'input' | 'options' = 'input') {
    const lines = issues.map((i) => `  - ${formatPath(i.path, root)}: ${i.message}`);
    super(
      `${task ? `Task "${task}": ` : ''}${root} refused (${issues.length} problem${issues.length === 1 ? '' : 's'}):\n${lines.join('\n')}`,
    );
    this.issues = issues;
    this.task = task;
    this.root = root;
  }
}

/** Invalid options or configuration given to an Errand API (not the task input). */
export class ConfigError extends ErrandError {
  override name = 'ConfigError';
}

/** A workflow id that names no stored workflow. */
export class WorkflowNotFoundError extends ErrandError {
  override name = 'WorkflowNotFoundError';
  readonly workflowId: string;
  constructor(workflowId: string) {
    super(`Workflow "${workflowId}" not found (it never existed, or all its runs finished and were pruned)`);
    this.workflowId = workflowId;
  }
}

export class RunNotFoundError extends ErrandError {
  override name = 'RunNotFoundError';
  readonly runId: string;
  /** `hint`: a sentence added to the message (what the caller may have run into). */
  constructor(runId: string, hint?: string) {
    super(`Run "${runId}" not found (it never existed, or it finished and its retention passed)${hint ? `. ${hint}` : ''}`);
    this.runId = runId;
  }
}

/** An update of a schedule refused because the stored definition has a greater version (a newer deploy's). */
export class ScheduleVersionError extends ConfigError {
  override name = 'ScheduleVersionError';
}

/**
 * A schedule's runs asked of a process that cannot put them under their task's flow-control limits:
 * the task has limits (recorded with the schedule, or seen on its last run) and this process lacks
 * its definition (the CLI without `--app`, a dashboard or HTTP server of an app that does not define
 * the task), so it cannot compute a run's key. Nothing was created.
 */
export class ScheduleLimitsError extends ConfigError {
  override name = 'ScheduleLimitsError';
  readonly scheduleId: string;
  readonly task: string;
  constructor(scheduleId: string, queue: string, task: string, hint: string) {
    super(
      `Schedule "${scheduleId}" (queue "${queue}") runs task "${task}", which has flow-control limits, and this process does not define that task, so its runs could not be put under them: nothing was created. ${hint}`,
    );
    this.scheduleId = scheduleId;
    this.task = task;
  }
}

/** A schedule that is not stored (never created, or deleted). */
export class ScheduleNotFoundError extends ErrandError {
  override name = 'ScheduleNotFoundError';
  readonly scheduleId: string;
  constructor(scheduleId: string) {
    super(`Schedule "${scheduleId}" not found`);
    this.scheduleId = scheduleId;
  }
}

/** Thrown by `handle.result()` when the run failed: `runError` is the error kept on the run. */
export class RunFailedError extends ErrandError {
  override name = 'RunFailedError';
  readonly runId: string;
  readonly runError: { name: string; message: string; stack?: string; reason?: string };
  constructor(runId: string, runError: { name: string; message: string; stack?: string; reason?: string }) {
    super(`Run "${runId}" failed: ${runError.name}: ${runError.message}`);
    this.runId = runId;
    this.runError = runError;
  }
}

export class RunCancelledError extends ErrandError {
  override name = 'RunCancelledError';
  readonly runId: string;
  constructor(runId: string) {
    super(`Run "${runId}" was cancelled`);
    this.runId = runId;
  }
}

/** `handle.result({ timeout })` gave up waiting; the run goes on. */
export class ResultTimeoutError extends ErrandError {
  override name = 'ResultTimeoutError';
  readonly runId: string;
  constructor(runId: string, timeout: number) {
    super(`Run "${runId}" did not finish within ${timeout} ms (it is still running or waiting)`);
    this.runId = runId;
  }
}

/** The attempt ran past its task's timeout. */
export class TaskTimeoutError extends ErrandError {
  override name = 'TaskTimeoutError';
}

/** The thread or process running an isolated handler ended during the attempt (killed, crashed, exited). Retried per the task's policy. */
export class IsolateCrashedError extends ErrandError {
  override name = 'IsolateCrashedError';
}

/** The thread or process running an isolated handler went past its memory limit (`memoryLimitMb`). Retried per the task's policy. */
export class IsolateMemoryError extends ErrandError {
  override name = 'IsolateMemoryError';
}

/**
 * Throw this (or wrap an error with it) from a handler to fail the run at once, without retries:
 * for errors that another attempt cannot fix (a rejected address, a 5xx from an SMTP server).
 */
export class PermanentError extends ErrandError {
  override name = 'PermanentError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The longest back-off a handler may ask for (`ctx.backOff`): 30 days, in ms. */
export const MAX_BACKOFF_MS = 30 * 24 * 3600 * 1000;

/** What a back-off holds back: the run's key (its task's limit group for a run without a key), or the whole task. */
export type BackOffScope = 'key' | 'task';

/**
 * Thrown by a handler (made by `ctx.backOff(ms)`, or `new BackOff(ms)`) to put its run back for
 * `ms` without using an attempt: "429, retry after 30 s". For a run of a task with `limits`, its
 * key (`scope: 'key'`, the default; the task when the run has no key) or its whole task
 * (`scope: 'task'`) starts nothing in its queue until then, and the run waits at the head of its
 * key; a run of a task without limits waits alone, scheduled. See docs/flow-control.md.
 */
export class BackOff extends ErrandError {
  override name = 'BackOff';
  /** How long to hold back, in ms (from when the worker records the outcome). */
  readonly ms: number;
  readonly scope: BackOffScope;
  constructor(ms: number, options: { scope?: BackOffScope; reason?: string } = {}) {
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms <= 0 || ms > MAX_BACKOFF_MS) {
      throw new TypeError(`backOff(ms): ms must be a number of milliseconds in (0, ${MAX_BACKOFF_MS}] (30 days); got ${show(ms)}`);
    }
    const scope = options.scope ?? 'key';
    if (scope !== 'key' && scope !== 'task') {
      throw new TypeError(`backOff(ms, { scope }): scope must be 'key' or 'task'; got ${show(scope)}`);
    }
    super(options.reason ?? `Backed off for ${Math.ceil(ms)} ms (${scope})`);
    this.ms = Math.ceil(ms);
    this.scope = scope;
  }
}

/** The broker (Redis, the SQLite file) could not be reached or answered with an error; nothing was done. Safe to try again later. */
export class BrokerUnavailableError extends ErrandError {
  override name = 'BrokerUnavailableError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** What a full broker ran out of: Redis's memory (`maxmemory`), or the disk that holds the SQLite file. */
export type BrokerStorage = 'memory' | 'disk';

/**
 * The broker's storage is full: Redis at its `maxmemory` (with `maxmemory-policy noeviction` it
 * refuses every write that needs memory), or the disk that holds the SQLite file. Nothing was done.
 * Reads, cancels and the pruning of finished runs still work, and freeing memory or space is all
 * it takes (docs/reliability.md, "When storage is full"): try again then. A `BrokerUnavailableError`,
 * so that every caller that handles an outage (the worker keeping its outcomes, the HTTP 503)
 * handles it too.
 */
export class BrokerFullError extends BrokerUnavailableError {
  override name = 'BrokerFullError';
  readonly storage: BrokerStorage;
  constructor(storage: BrokerStorage, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.storage = storage;
  }
}

/**
 * A failed broker call (or a failure to open the broker) as every caller above the broker reports
 * it: the HTTP routes and the dashboard (503 with Retry-After), the CLI (`broker_unavailable`, or
 * `config` for a `BrokerConfigError`). A `BrokerUnavailableError` (and so a `BrokerConfigError`)
 * is returned as it is; anything else (a driver's error, a corrupt record, a bad broker URL) becomes
 * a `BrokerUnavailableError` whose message starts with `what` and whose `cause` is the original.
 * Correct whether a broker throws raw driver errors or only Errand errors.
 */
export function brokerFailure(err: unknown, what = 'Broker call failed'): BrokerUnavailableError {
  if (err instanceof BrokerUnavailableError) return err;
  return new BrokerUnavailableError(`${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}

/**
 * The broker refused the connection for its configuration: a wrong user name or password, a TLS
 * certificate that is not trusted, TLS spoken to a plain port. Trying again will not help until the
 * configuration changes: a worker's `start()` fails with it instead of retrying. (Still a
 * `BrokerUnavailableError` for everything else, e.g. a 503 from the HTTP layer.)
 */
export class BrokerConfigError extends BrokerUnavailableError {
  override name = 'BrokerConfigError';
}

/**
 * A Redis broker opened with `existingPrefix` found nothing of Errand's under its key prefix (no
 * layout record, no queues): a mistyped prefix, most likely. Nothing was written.
 */
export class EmptyPrefixError extends BrokerConfigError {
  override name = 'EmptyPrefixError';
}
