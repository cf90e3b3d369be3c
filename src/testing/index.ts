/**
 * Errand's testing helpers (`import { createTesting, runTask } from 'errand/testing'`), in the spirit of
 * Oban.Testing, Sidekiq::Testing and Celery's eager mode, but running your handlers through the same
 * code as production:
 *
 * - `createTesting(errand)` gives the app a throwaway in-memory broker (SQLite `:memory:`, the
 *   embedded broker itself, so every state transition is the real one), and returns helpers to
 *   look at what was enqueued (`enqueued`, `assertEnqueued`, `refuteEnqueued`), to run the queued
 *   runs inline with a real worker (`drain`), to move the clock (`advance`), and to start over
 *   between tests (`reset`).
 * - `runTask(task, input, { attempt })` runs one handler directly with a test context: no broker.
 *
 * See the README's "Testing your tasks".
 */
import { AssertionError } from 'node:assert';
import pino, { type Logger } from 'pino';
import type { z } from 'zod';
import type { RunState } from '../broker/types.ts';
import { ConfigError, formatPath, PermanentError, TaskTimeoutError } from '../core/errors.ts';
import { coalesced } from '../core/coalesce.ts';
import { newRunId, timeOfRunId } from '../core/ids.ts';
import { jsonIssues } from '../core/json.ts';
import { decodeRun, type RunInfo } from '../core/run-info.ts';
import { createErrand, type Errand, type ErrandOptions } from '../errand.ts';
import type { TaskContext, TaskDefinition } from '../task/task.ts';
import { type RunEvent, Worker } from '../worker/worker.ts';
import { type JournalEntry, TestBroker } from './test-broker.ts';

export { type MemoryBrokerOptions, memoryBroker, TestBroker } from './test-broker.ts';

// ---- what was enqueued --------------------------------------------------------------------------

/** One enqueue of one run, as the code under test asked for it. */
export interface EnqueuedRun<I = unknown> {
  id: string;
  task: string;
  queue: string;
  /** The input as given to `enqueue` (as stored: JSON). */
  input: I;
  priority: number;
  /** When the run may start. */
  runAt: Date;
  /** `runAt` minus the time of the enqueue, in ms: 0 unless `delay` or a future `runAt` was given. */
  delay: number;
  idempotencyKey?: string;
  traceparent?: string;
  /** False when an idempotency key matched an earlier run: no new run was made (`id` is the earlier run's). */
  created: boolean;
}

/** Every field optional: an object in `input` matches when each of its keys matches (recursively); arrays and values must be equal. */
export type DeepPartial<T> = T extends readonly unknown[] ? T : T extends object ? { [K in keyof T]?: DeepPartial<T[K]> } : T;

/** What `enqueued`, `assertEnqueued` and `refuteEnqueued` look for; every field is optional. */
export interface EnqueuedMatch<I = unknown> {
  /** A subset of the input (objects match by their keys, recursively), or a predicate. */
  input?: DeepPartial<I> | ((input: I) => boolean);
  queue?: string;
  priority?: number;
  /** Exact delay in ms (`enqueue(input, { delay })`); 0 matches runs due at once. */
  delay?: number;
  /** Exact start time (`enqueue(input, { runAt })`). */
  runAt?: Date | number;
  idempotencyKey?: string;
  /** For `assertEnqueued`: exactly this many matching enqueues (default: at least one). */
  count?: number;
}

/** A task (what `errand.task()` returns), for the helpers that only need its name and schema. */
type AnyTask = { readonly name: string; readonly schema: z.ZodType };
type InputOf<T> = T extends { readonly schema: infer S extends z.ZodType } ? z.input<S> : unknown;

// ---- drain --------------------------------------------------------------------------------------

export interface DrainOptions {
  /** Queues to run (default: every queue of the app's tasks and every queue that holds runs). */
  queues?: string[];
  /** Runs executed at once (default 1: runs start one after the other, in the order a worker takes them). */
  concurrency?: number;
  /**
   * A failed attempt that will be retried is retried within this drain at once, its backoff skipped
   * (default true): the drain ends with each run succeeded or failed. With false the run stays
   * `scheduled` for its retry (run it later with `advance` and another drain).
   */
  retries?: boolean;
  /** Also run runs scheduled for later (`delay`, `runAt`), moving the test clock to each one's time. Default false. */
  scheduled?: boolean;
  /** Most attempts in one drain (runs that enqueue runs without end): past it, the drain stops and throws. Default 1000. */
  limit?: number;
}

/** One attempt the drain ran. */
export interface DrainAttempt {
  runId: string;
  task: string;
  queue: string;
  attempt: number;
  /** `succeeded`; `retry` (failed, another attempt follows); `failed` (the run failed); `lost` (cancelled while running). */
  outcome: 'succeeded' | 'retry' | 'failed' | 'lost' | 'released';
  /** What the handler threw (`retry`, `failed`). */
  error?: unknown;
}

export interface DrainResult {
  /** Every run started by the drain, in the order of its first start, as stored at the end (a run deleted at once by `retention: 0` is missing). */
  runs: RunInfo[];
  /** Every attempt, in the order they ended. */
  attempts: DrainAttempt[];
  /** Runs that ended succeeded. */
  succeeded: number;
  /** Runs that ended failed (retries exhausted, or `PermanentError`). */
  failed: number;
  /** Attempts that failed and were retried. */
  retried: number;
}

// ---- createTesting ------------------------------------------------------------------------------

export interface TestingOptions {
  /** Logger of the drain's worker and of `runTask` contexts. Default: silent. */
  logger?: Logger;
  /** For `createTesting()` without an app: options of the app it makes (its broker is the test broker). */
  errand?: Omit<ErrandOptions, 'broker'>;
}

const silent = (): Logger => pino({ level: 'silent' });

/**
 * Gives `errand` (or, without one, a new app) a throwaway in-memory broker, and returns the helpers
 * that look into it. Call it before the app's first enqueue (at the top of a test file): the broker
 * of an app cannot change once connected.
 */
export function createTesting(errand?: Errand, options: TestingOptions = {}): ErrandTesting {
  return new ErrandTesting(errand, options);
}

export class ErrandTesting {
  readonly errand: Errand;
  readonly broker: TestBroker;
  readonly #logger: Logger;
  #drains = 0;

  constructor(errand: Errand | undefined, options: TestingOptions = {}) {
    this.#logger = options.logger ?? silent();
    this.broker = new TestBroker({ logger: this.#logger });
    if (errand) {
      try {
        errand.setBroker(this.broker);
      } catch (err) {
        throw new ConfigError(
          `createTesting: ${(err as Error).message} (call createTesting(errand) before the app's first enqueue, e.g. at the top of the test file)`,
        );
      }
      this.errand = errand;
    } else {
      this.errand = createErrand({ logger: this.#logger, ...options.errand, broker: this.broker });
    }
  }

  // ---- time ---------------------------------------------------------------------------------------

  /** The test clock (epoch ms): real time plus every `advance` and every jump of `drain({ scheduled: true })`. */
  now(): number {
    return this.broker.now();
  }

  /** Moves the test clock forward: runs scheduled within `ms` become due (run them with `drain()`). */
  advance(ms: number): void {
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0)
      throw new TypeError(`advance(ms): ms must be a non-negative number, got ${ms}`);
    this.broker.offset += ms;
    this.broker.poke();
  }

  // ---- what was enqueued --------------------------------------------------------------------------

  /** Every enqueue since the start (or the last `reset` / `clearEnqueued`), oldest first; of one task and matching `match` when given. */
  enqueued<T extends AnyTask | string>(task?: T, match: EnqueuedMatch<InputOf<T>> = {}): EnqueuedRun<InputOf<T>>[] {
    const name = task === undefined ? undefined : typeof task === 'string' ? task : task.name;
    return this.broker.journal
      .filter((e) => name === undefined || e.run.task === name)
      .map(toEnqueued)
      .filter((e) => matches(e, match as EnqueuedMatch)) as EnqueuedRun<InputOf<T>>[];
  }

  /**
   * Throws an `AssertionError` unless `task` was enqueued with what `match` says (at least once, or
   * exactly `match.count` times), naming what was enqueued instead. Returns the matching enqueues.
   */
  assertEnqueued<T extends AnyTask | string>(task: T, match: EnqueuedMatch<InputOf<T>> = {}): EnqueuedRun<InputOf<T>>[] {
    const found = this.enqueued(task, match);
    const { count } = match;
    if (count === undefined ? found.length > 0 : found.length === count) return found;
    const name = typeof task === 'string' ? task : task.name;
    const want = count === undefined ? 'at least one enqueue' : `${count} enqueue${count === 1 ? '' : 's'}`;
    throw new AssertionError({
      message: `Expected ${want} of "${name}"${describeMatch(match as EnqueuedMatch)}, found ${found.length}.\n${this.#describeJournal(name)}`,
      actual: found.length,
      expected: count ?? '>= 1',
      operator: 'assertEnqueued',
      stackStartFn: this.assertEnqueued,
    });
  }

  /** Throws an `AssertionError` if `task` (any task when omitted) was enqueued matching `match`. */
  refuteEnqueued<T extends AnyTask | string>(task?: T, match: EnqueuedMatch<InputOf<T>> = {}): void {
    const found = this.enqueued(task, match);
    if (found.length === 0) return;
    const name = task === undefined ? undefined : typeof task === 'string' ? task : task.name;
    throw new AssertionError({
      message: `Expected no enqueue of ${name === undefined ? 'any task' : `"${name}"`}${describeMatch(match as EnqueuedMatch)}, found ${found.length}.\n${this.#describeJournal(name)}`,
      actual: found.length,
      expected: 0,
      operator: 'refuteEnqueued',
      stackStartFn: this.refuteEnqueued,
    });
  }

  /** Forgets what was enqueued so far (the runs stay in the broker). */
  clearEnqueued(): void {
    this.broker.journal = [];
  }

  #describeJournal(task: string | undefined): string {
    const all = this.enqueued(task);
    if (all.length === 0) return task === undefined ? 'Nothing was enqueued.' : `No run of "${task}" was enqueued.`;
    const lines = all.slice(0, 20).map((e) => `  - ${describeEnqueued(e)}`);
    if (all.length > 20) lines.push(`  ... and ${all.length - 20} more`);
    return `Enqueued${task === undefined ? '' : ` runs of "${task}"`}:\n${lines.join('\n')}`;
  }

  // ---- the runs in the broker ---------------------------------------------------------------------

  /** The runs the broker holds now, newest first (decoded: input, result and error as values). */
  async runs(filter: { task?: string | AnyTask; queue?: string; state?: RunState } = {}): Promise<RunInfo[]> {
    const task = typeof filter.task === 'string' ? filter.task : filter.task?.name;
    const out: RunInfo[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.broker.listRuns({
        limit: 500,
        ...(task !== undefined && { task }),
        ...(filter.queue !== undefined && { queue: filter.queue }),
        ...(filter.state !== undefined && { state: filter.state }),
        ...(cursor !== undefined && { cursor }),
      });
      for (const r of page.runs) out.push(decodeRun(r));
      cursor = page.next ?? undefined;
    } while (cursor);
    return out;
  }

  // ---- drain --------------------------------------------------------------------------------------

  /**
   * Runs the queued runs inline, with a real worker of this app (the same validation, timeouts,
   * retries and outcomes as in production), until none is left to run: runs enqueued by the
   * handlers meanwhile are run too, retries at once (see `DrainOptions`). Paused queues are left
   * alone. Returns what ran and how it ended.
   */
  async drain(options: DrainOptions = {}): Promise<DrainResult> {
    const broker = this.broker;
    const limit = options.limit ?? 1000;
    if (!Number.isInteger(limit) || limit < 1) throw new TypeError(`drain(): limit must be a positive integer, got ${limit}`);
    const taskQueues = [...this.errand.tasks.values()].map((t) => t.queue);
    const queues = [...new Set(options.queues ?? [...taskQueues, ...(await broker.listQueues())])];
    const empty: DrainResult = { runs: [], attempts: [], succeeded: 0, failed: 0, retried: 0 };
    if (queues.length === 0) return empty;

    const worker = new Worker(this.errand, {
      queues,
      concurrency: options.concurrency ?? 1,
      logger: this.#logger,
      id: `errand-testing:${++this.#drains}`,
      shutdownGraceMs: 0,
    });
    const started: string[] = [];
    const seen = new Set<string>();
    const attempts: DrainAttempt[] = [];
    let starts = 0;
    let finished = false;
    let overLimit = false;
    let resolveDone!: () => void;
    let rejectDone!: (err: unknown) => void;
    const done = new Promise<void>((resolve, reject) => {
      resolveDone = resolve;
      rejectDone = reject;
    });
    const finish = (err?: unknown) => {
      if (finished) return;
      finished = true;
      if (err === undefined) resolveDone();
      else rejectDone(err);
    };

    worker.on('run', (ev: RunEvent) => {
      const { run } = ev;
      if (ev.type === 'start') {
        starts++;
        if (!seen.has(run.id)) {
          seen.add(run.id);
          started.push(run.id);
        }
        if (starts > limit) {
          overLimit = true;
          finish();
        }
        return;
      }
      const outcome = ev.type === 'success' ? 'succeeded' : ev.type === 'failure' ? 'failed' : ev.type;
      attempts.push({
        runId: run.id,
        task: run.task,
        queue: run.queue,
        attempt: run.attempt,
        outcome,
        ...(ev.error !== undefined && { error: ev.error }),
      });
      void check();
    });

    // Is anything left to run? Asked after every broker call that may have changed that, and after
    // every attempt. "Nothing" is read from the broker (no queued or active run, no scheduled run
    // due, in the drained queues that are not paused) while the worker runs no handler: a handler
    // running, or an outcome not yet stored, shows as an active run.
    const check = coalesced(
      async () => {
        if (worker.activeCount > 0) return;
        const left = await this.#left(queues);
        if (left.now) {
          broker.poke(); // e.g. a retry made due while the worker slept: wake it to take it
          return;
        }
        if (options.scheduled && left.next !== null) {
          broker.offset += Math.max(0, left.next - broker.now());
          broker.poke();
          return;
        }
        finish();
      },
      { stopped: () => finished, onError: (err) => finish(err) },
    );

    broker.retryNow = options.retries ?? true;
    broker.onActivity = () => void check();
    try {
      await worker.start();
      void check();
      await done;
    } finally {
      broker.onActivity = undefined;
      await worker.stop({ graceMs: 0 });
      broker.retryNow = false;
    }
    if (overLimit)
      throw new Error(
        `drain() stopped after ${limit} attempts: runs keep being enqueued or retried (a task that enqueues itself?). Pass { limit } to allow more.`,
      );

    const runs: RunInfo[] = [];
    for (const id of started) {
      const rec = await broker.getRun(id);
      if (rec) runs.push(decodeRun(rec));
    }
    return {
      runs,
      attempts,
      succeeded: runs.filter((r) => r.state === 'succeeded').length,
      failed: runs.filter((r) => r.state === 'failed').length,
      retried: attempts.filter((a) => a.outcome === 'retry').length,
    };
  }

  /** Whether runs of `queues` (not paused) are runnable now, and the earliest time a scheduled one becomes due. */
  async #left(queues: readonly string[]): Promise<{ now: boolean; next: number | null }> {
    const b = this.broker;
    const paused = new Set(await b.pausedQueues());
    const live = queues.filter((q) => !paused.has(q));
    if (live.length === 0) return { now: false, next: null };
    const counts = await b.counts(live);
    let scheduled = 0;
    for (const c of Object.values(counts)) {
      if (c.queued > 0 || c.active > 0) return { now: true, next: null };
      scheduled += c.scheduled;
    }
    if (scheduled === 0) return { now: false, next: null };
    const clock = b.now();
    let next: number | null = null;
    for (const queue of live) {
      let cursor: string | undefined;
      do {
        const page = await b.listRuns({ queue, state: 'scheduled', limit: 500, ...(cursor !== undefined && { cursor }) });
        for (const r of page.runs) {
          const at = r.runAt ?? 0;
          if (at <= clock) return { now: true, next: null };
          if (next === null || at < next) next = at;
        }
        cursor = page.next ?? undefined;
      } while (cursor);
    }
    return { now: false, next };
  }

  // ---- lifecycle ----------------------------------------------------------------------------------

  /** Empties the broker (runs, pauses, workers, stats), forgets what was enqueued, and sets the clock back to real time. */
  async reset(): Promise<void> {
    await this.broker.reset();
  }

  /** Closes the app (and with it the test broker). */
  async close(): Promise<void> {
    await this.errand.close();
  }
}

// ---- runTask ------------------------------------------------------------------------------------

export interface RunTaskOptions {
  /** `ctx.attempt`. Default 1. */
  attempt?: number;
  /** `ctx.runId`. Default: a new run id of the task's queue. */
  runId?: string;
  /** `ctx.queue`. Default: the task's queue. */
  queue?: string;
  /** Aborts `ctx.signal` (as a cancel or a worker shutdown would). The task's `timeout` aborts it too. */
  signal?: AbortSignal;
  /** `ctx.logger`. Default: silent. */
  logger?: Logger;
  traceparent?: string;
  /** Called with each value the handler gives `ctx.progress`. */
  onProgress?: (value: unknown) => void;
}

/**
 * Runs one task's handler directly, as a worker would run one attempt, with a test context: the
 * input is validated as `enqueue` validates it (throws `InputError`) and passed through JSON and the
 * schema as the worker does; `ctx.signal` aborts on the task's timeout (the call then throws
 * `TaskTimeoutError`) or on `options.signal`; a result that cannot be stored as JSON throws
 * `PermanentError`. Returns the handler's result, or throws what it throws. No broker is involved.
 */
export async function runTask<S extends z.ZodType, R>(
  task: TaskDefinition<S, R>,
  input: z.input<S>,
  options: RunTaskOptions = {},
): Promise<Awaited<R>> {
  const attempt = options.attempt ?? 1;
  if (!Number.isInteger(attempt) || attempt < 1) throw new TypeError(`runTask(): attempt must be a positive integer, got ${attempt}`);
  const queue = options.queue ?? task.queue;
  const run = task.prepare(input, { queue });
  const parsed = task.schema.parse(JSON.parse(run.input)) as z.output<S>;
  const controller = new AbortController();
  const abort = (reason: unknown) => {
    if (!controller.signal.aborted) controller.abort(reason);
  };
  const outer = options.signal;
  const onOuter = () => abort(outer?.reason);
  if (outer?.aborted) onOuter();
  else outer?.addEventListener('abort', onOuter, { once: true });
  const runId = options.runId ?? newRunId(queue);
  const logger = (options.logger ?? silent()).child({ runId, task: task.name, queue, attempt });
  const ctx: TaskContext = {
    runId,
    task: task.name,
    queue,
    attempt,
    signal: controller.signal,
    logger,
    progress(value: unknown) {
      const issues = jsonIssues(value);
      if (issues.length) throw new TypeError(`progress(): ${issues[0]!.message} at ${formatPath(issues[0]!.path, 'value')}`);
      options.onProgress?.(value);
    },
    ...(options.traceparent !== undefined && { traceparent: options.traceparent }),
  };
  const timer = setTimeout(
    () => abort(new TaskTimeoutError(`Attempt ${attempt} of run ${runId} timed out after ${task.timeout} ms`)),
    task.timeout,
  );
  try {
    const value = await new Promise<Awaited<R>>((resolve, reject) => {
      if (controller.signal.aborted) return reject(controller.signal.reason);
      controller.signal.addEventListener('abort', () => reject(controller.signal.reason), { once: true });
      Promise.resolve()
        .then(() => task.handler(parsed, ctx))
        .then(resolve as (v: unknown) => void, reject);
    });
    const issues = jsonIssues(value);
    if (issues.length) {
      const where = issues.map((i) => `${formatPath(i.path, 'result')}: ${i.message}`).join('; ');
      throw new PermanentError(`The handler's result cannot be stored as JSON: ${where}`);
    }
    return value;
  } finally {
    clearTimeout(timer);
    outer?.removeEventListener('abort', onOuter);
  }
}

// ---- matching -----------------------------------------------------------------------------------

function toEnqueued({ run, result }: JournalEntry): EnqueuedRun {
  const at = timeOfRunId(run.id);
  const e: EnqueuedRun = {
    id: result.id,
    task: run.task,
    queue: run.queue,
    input: JSON.parse(run.input) as unknown,
    priority: run.priority,
    runAt: new Date(run.runAt),
    delay: Math.max(0, run.runAt - at),
    created: result.created,
  };
  if (run.idempotencyKey !== undefined) e.idempotencyKey = run.idempotencyKey;
  if (run.traceparent !== undefined) e.traceparent = run.traceparent;
  return e;
}

function matches(e: EnqueuedRun, m: EnqueuedMatch): boolean {
  if (m.queue !== undefined && e.queue !== m.queue) return false;
  if (m.priority !== undefined && e.priority !== m.priority) return false;
  if (m.delay !== undefined && e.delay !== m.delay) return false;
  if (m.runAt !== undefined && e.runAt.getTime() !== (m.runAt instanceof Date ? m.runAt.getTime() : m.runAt)) return false;
  if (m.idempotencyKey !== undefined && e.idempotencyKey !== m.idempotencyKey) return false;
  if (m.input !== undefined) {
    if (typeof m.input === 'function') return Boolean((m.input as (i: unknown) => boolean)(e.input));
    return subset(e.input, m.input);
  }
  return true;
}

/** `expected` within `actual`: objects by their keys (recursively), arrays element by element, values equal. */
function subset(actual: unknown, expected: unknown): boolean {
  if (Array.isArray(expected)) {
    return Array.isArray(actual) && actual.length === expected.length && expected.every((x, i) => subset(actual[i], x));
  }
  if (expected !== null && typeof expected === 'object') {
    if (actual === null || typeof actual !== 'object' || Array.isArray(actual)) return false;
    const a = actual as Record<string, unknown>;
    return Object.entries(expected).every(([k, v]) => (v === undefined ? !(k in a) || a[k] === undefined : k in a && subset(a[k], v)));
  }
  return Object.is(actual, expected);
}

function describeMatch(m: EnqueuedMatch): string {
  const parts: string[] = [];
  if (m.input !== undefined) parts.push(typeof m.input === 'function' ? 'input matching the predicate' : `input ${show(m.input)}`);
  for (const key of ['queue', 'priority', 'delay', 'idempotencyKey'] as const)
    if (m[key] !== undefined) parts.push(`${key} ${show(m[key])}`);
  if (m.runAt !== undefined) parts.push(`runAt ${new Date(m.runAt).toISOString()}`);
  return parts.length ? ` with ${parts.join(', ')}` : '';
}

function describeEnqueued(e: EnqueuedRun): string {
  const extra = [
    `queue ${show(e.queue)}`,
    e.priority !== 0 ? `priority ${e.priority}` : '',
    e.delay ? `delay ${e.delay}` : '',
    e.idempotencyKey !== undefined ? `idempotencyKey ${show(e.idempotencyKey)}` : '',
    e.created ? '' : 'not created (idempotency key matched)',
  ].filter(Boolean);
  return `${e.task} ${show(e.input)} (${extra.join(', ')})`;
}

function show(v: unknown): string {
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 200 ? `${text.slice(0, 200)}...` : text;
}
