/** `createTesting(errand)` and `ErrandTesting`: an app on a throwaway in-memory broker, with the helpers to look at it and drain it. */
import { AssertionError } from 'node:assert';
import pino, { type Logger } from 'pino';
import { RUN_STATES, type RunState } from '../broker/types.ts';
import { ConfigError } from '../core/errors.ts';
import { coalesced } from '../core/coalesce.ts';
import { checkFields } from '../core/fields.ts';
import { decodeRun, type RunInfo } from '../core/run-info.ts';
import { show } from '../core/show.ts';
import { createErrand, type Errand, type ErrandOptions } from '../errand.ts';
import { type RunEvent, Worker } from '../worker/worker.ts';
import { TestBroker } from './test-broker.ts';
import {
  type AnyTask,
  checkKeys,
  checkMatch,
  describeEnqueued,
  describeMatch,
  type EnqueuedMatch,
  type EnqueuedRun,
  type InputOf,
  matches,
  taskNameOf,
  toEnqueued,
} from './enqueued.ts';

// ---- drain --------------------------------------------------------------------------------------

const DRAIN_OPTION_KEYS = ['queues', 'concurrency', 'retries', 'scheduled', 'limit'] as const;

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
  outcome: 'succeeded' | 'retry' | 'failed' | 'backoff' | 'lost' | 'released';
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
    // The app's maxLeaseLosses and failedRetentionMs are the in-memory broker's (a Redis prefix means nothing to it).
    const { maxLeaseLosses, failedRetentionMs, prefix: _prefix, ...appOptions } = options.errand ?? {};
    const brokerOptions = errand ? errand.brokerOptions : { maxLeaseLosses, failedRetentionMs };
    this.broker = new TestBroker({ logger: this.#logger, ...brokerOptions });
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
      this.errand = createErrand({ logger: this.#logger, ...appOptions, broker: this.broker });
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
      throw new TypeError(`advance(ms): ms must be a non-negative number, got ${show(ms)}`);
    this.broker.offset += ms;
    this.broker.poke();
  }

  // ---- what was enqueued --------------------------------------------------------------------------

  /**
   * Every enqueue since the start (or the last `reset` / `clearEnqueued`), oldest first; of one task
   * and matching `match` when given. Its arguments are checked as `assertEnqueued` checks them
   * (`count` aside); `undefined` for the task is any task only before a `match`.
   */
  enqueued<T extends AnyTask | string>(task?: T, match?: EnqueuedMatch<InputOf<T>>): EnqueuedRun<InputOf<T>>[] {
    const where = 't.enqueued()';
    // Any task when omitted, or undefined before a match; undefined alone is a missing import.
    // biome-ignore lint/complexity/noArguments: tells enqueued() from enqueued(undefined)
    const name = taskNameOf(task, where, this.errand.tasks, arguments.length === 0 || match !== undefined);
    return this.#find(name, checkMatch(match, where, false)) as EnqueuedRun<InputOf<T>>[];
  }

  /** The enqueues of task `name` (any task when undefined) matching `match` (checked). */
  #find(name: string | undefined, match: EnqueuedMatch): EnqueuedRun[] {
    return this.broker.journal
      .filter((e) => name === undefined || e.run.task === name)
      .map(toEnqueued)
      .filter((e) => matches(e, match));
  }

  /**
   * Throws an `AssertionError` unless `task` was enqueued with what `match` says (at least once, or
   * exactly `match.count` times), naming what was enqueued instead. Returns the matching enqueues.
   * A `task` that is not one of the app's (or its name), and a `match` with an unknown key or a value
   * of the wrong type, throw a `ConfigError`: the assertion would say nothing.
   */
  assertEnqueued<T extends AnyTask | string>(task: T, match?: EnqueuedMatch<InputOf<T>>): EnqueuedRun<InputOf<T>>[] {
    const where = 't.assertEnqueued()';
    const name = taskNameOf(task, where, this.errand.tasks, false) as string;
    const checked = checkMatch(match, where, true);
    const found = this.#find(name, checked) as EnqueuedRun<InputOf<T>>[];
    const { count } = checked;
    if (count === undefined ? found.length > 0 : found.length === count) return found;
    const want = count === undefined ? 'at least one enqueue' : `${count} enqueue${count === 1 ? '' : 's'}`;
    throw new AssertionError({
      message: `Expected ${want} of "${name}"${describeMatch(checked)}, found ${found.length}.\n${this.#describeJournal(name)}`,
      actual: found.length,
      expected: count ?? '>= 1',
      operator: 'assertEnqueued',
      stackStartFn: this.assertEnqueued,
    });
  }

  /**
   * Throws an `AssertionError` if `task` (any task when omitted, or undefined before a `match`) was
   * enqueued matching `match`. Its arguments are checked as `assertEnqueued` checks them
   * (`ConfigError`), `count` aside.
   */
  refuteEnqueued<T extends AnyTask | string>(task?: T, match?: EnqueuedMatch<InputOf<T>>): void {
    const where = 't.refuteEnqueued()';
    // biome-ignore lint/complexity/noArguments: as in enqueued(), undefined alone is a missing import
    const name = taskNameOf(task, where, this.errand.tasks, arguments.length === 0 || match !== undefined);
    const checked = checkMatch(match, where, false);
    const found = this.#find(name, checked);
    if (found.length === 0) return;
    throw new AssertionError({
      message: `Expected no enqueue of ${name === undefined ? 'any task' : `"${name}"`}${describeMatch(checked)}, found ${found.length}.\n${this.#describeJournal(name)}`,
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
    const all = this.#find(task, {});
    if (all.length === 0) return task === undefined ? 'Nothing was enqueued.' : `No run of "${task}" was enqueued.`;
    const lines = all.slice(0, 20).map((e) => `  - ${describeEnqueued(e)}`);
    if (all.length > 20) lines.push(`  ... and ${all.length - 20} more`);
    return `Enqueued${task === undefined ? '' : ` runs of "${task}"`}:\n${lines.join('\n')}`;
  }

  // ---- the runs in the broker ---------------------------------------------------------------------

  /** The runs the broker holds now, newest first (decoded: input, result and error as values). */
  async runs(filter: { task?: string | AnyTask; queue?: string; state?: RunState } = {}): Promise<RunInfo[]> {
    const where = 't.runs()';
    if (filter === null || typeof filter !== 'object')
      throw new ConfigError(`${where}: filter must be an object ({ task, queue, state }), got ${show(filter)}`);
    checkKeys(filter, ['task', 'queue', 'state'], where, 'filter');
    // Any task's name: the broker may hold runs of tasks of other apps.
    const task = filter.task === undefined ? undefined : typeof filter.task === 'string' ? filter.task : filter.task?.name;
    if (filter.task !== undefined && typeof task !== 'string')
      throw new ConfigError(`${where}: filter.task must be a task or its name, got ${show(filter.task)}`);
    if (filter.state !== undefined && !RUN_STATES.includes(filter.state))
      throw new ConfigError(`${where}: filter.state must be one of ${RUN_STATES.join(', ')}, got ${show(filter.state)}`);
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
    checkFields(options, DRAIN_OPTION_KEYS, 'drain()', 'a drain option');
    const broker = this.broker;
    const limit = options.limit ?? 1000;
    if (!Number.isInteger(limit) || limit < 1) throw new TypeError(`drain(): limit must be a positive integer, got ${show(limit)}`);
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
      // A drain runs what is due, deterministically: it neither stores nor fires the app's schedules
      // (create a scheduled run with errand.triggerSchedule or backfillSchedule, then drain).
      schedules: false,
      // A run of a task this app does not define fails at once (a worker would hand it back for a while).
      unknownTaskWaitMs: 0,
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
