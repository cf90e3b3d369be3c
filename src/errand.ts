import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { connectBroker, defaultBrokerUrl } from './broker/connect.ts';
import { guardBroker } from './broker/shared/guard.ts';
import { checkPrefix, DEFAULTS, nonNegativeMs, positiveInt } from './broker/shared/options.ts';
import type { Broker, BrokerOptions, EnqueueResult, NewRun, ScheduleDefinition } from './broker/types.ts';
import { ConfigError, RunNotFoundError, ScheduleNotFoundError } from './core/errors.ts';
import { checkFields } from './core/fields.ts';
import { createLogger } from './core/logger.ts';
import { show } from './core/show.ts';
import { checkRedactPaths, mergeRedactPaths, redactPathsFromEnv } from './core/redact.ts';
import { decodeRun, type RunInfo } from './core/run-info.ts';
import {
  type BackfillResult,
  backfillSchedule,
  checkNewScheduleId,
  findSchedule,
  putSchedule,
  type ScheduleOptions,
  type ScheduleView,
  type SplitOptions,
  splitScheduleOptions,
  triggerSchedule,
  viewOf,
} from './schedule/manage.ts';
import { scheduleDefinition } from './schedule/plan.ts';
import { SCHEDULE_ID } from './broker/shared/schedules.ts';
import { RunHandle } from './task/handle.ts';
import { type AnyFlow, compileWorkflow, isOwnTask, type ResultOf } from './task/workflow.ts';
import { WorkflowHandle } from './task/workflow-handle.ts';
import { enqueueSpan } from './telemetry/tracing.ts';
import { type EnqueueOptions, type Handler, TaskDefinition, type TaskOptions } from './task/task.ts';
import { Worker, type WorkerHost, type WorkerOptions } from './worker/worker.ts';

export interface ErrandOptions extends BrokerOptions {
  /**
   * A broker URL (`redis://...`, `rediss://...`, `sqlite:path.db`) or a Broker instance. Default:
   * `ERRAND_BROKER_URL`, else `REDIS_URL`, else the embedded file `sqlite:./data/errand.db`.
   * Connected on first use.
   */
  broker?: string | Broker;
  /**
   * Default: pino at `LOG_LEVEL` (`info`), as readable coloured lines on a terminal and JSON lines
   * otherwise; `LOG_FORMAT=json` or `pretty` forces one (pretty needs pino-pretty: see `createLogger`).
   */
  logger?: Logger;
  /** Largest task input accepted at enqueue, in bytes of JSON. Default 1048576 (1 MiB). */
  maxInputBytes?: number;
  /** Key prefix in Redis. Default: `ERRAND_PREFIX`, else `errand`. Not with a Broker instance (give it to the broker). */
  prefix?: string;
  /**
   * Paths into task inputs whose values are secrets (`password`, `card.number`, `*.token`,
   * `**.apiKey`): storage keeps them (the handler needs them), but the HTTP run JSON, the dashboard,
   * `errand inspect` and the worker's error logs show `"[redacted]"` instead (see `src/core/redact.ts`).
   * Added to the paths in `ERRAND_REDACT` (comma-separated) and to each task's own `redact`.
   */
  redact?: string[];
}

/** A task bound to an Errand app: what `errand.task(...)` returns. */
export class Task<S extends z.ZodType = z.ZodType, R = unknown> extends TaskDefinition<S, R> {
  readonly #app: Errand;
  constructor(app: Errand, name: string, options: TaskOptions<S>, handler: Handler<S, R>) {
    super(name, options, handler);
    this.#app = app;
  }

  /** Validates `input` (types at compile time, the schema at run time) and enqueues one run. */
  async enqueue(input: z.input<S>, options?: EnqueueOptions): Promise<RunHandle<R>> {
    const now = Date.now();
    const run = this.prepare(input, options, now, this.#app.maxInputBytes);
    return enqueueSpan(
      this.name,
      () => ({ 'errand.task': this.name, 'errand.queue': run.queue, 'errand.run_id': run.id }),
      run.traceparent,
      async (tp) => {
        if (tp) run.traceparent = tp;
        const [handle] = await this.#app.enqueueRuns([run], now);
        return handle as RunHandle<R>;
      },
    );
  }

  /** Enqueues many runs in one broker call. Every input is validated first: one bad input refuses the whole batch. */
  async enqueueMany(items: readonly { input: z.input<S>; options?: EnqueueOptions }[]): Promise<RunHandle<R>[]> {
    if (!Array.isArray(items)) {
      throw new ConfigError(`Task "${this.name}": enqueueMany() takes an array of { input, options? }, got ${show(items)}`);
    }
    const now = Date.now();
    const runs = items.map((item, i) => {
      checkFields(item, ['input', 'options'], `Task "${this.name}": enqueueMany() item ${i}`, 'a batch item field');
      try {
        return this.prepare(item.input, item.options, now, this.#app.maxInputBytes);
      } catch (err) {
        if (err instanceof Error) err.message = `Batch item ${i}: ${err.message}`;
        throw err;
      }
    });
    return enqueueSpan(
      this.name,
      () => ({ 'errand.task': this.name, 'errand.batch_size': runs.length }),
      undefined,
      async (tp) => {
        if (tp) for (const run of runs) run.traceparent ??= tp;
        return (await this.#app.enqueueRuns(runs, now)) as RunHandle<R>[];
      },
    );
  }
}

/** Every field of `ErrandOptions` (its `BrokerOptions` included): another is refused by name. */
const ERRAND_OPTION_KEYS = ['broker', 'logger', 'maxInputBytes', 'prefix', 'redact', 'maxLeaseLosses', 'failedRetentionMs'];

/** The options of the broker the app connects from a URL: a Broker instance was made with its own. */
const BROKER_OPTION_KEYS = ['prefix', 'maxLeaseLosses', 'failedRetentionMs'] as const;

/** Most runs merged into one broker call by concurrent enqueues. */
const MERGE_LIMIT = 1000;

/** A schedule declared in code (`errand.schedule`). */
export interface DeclaredSchedule extends SplitOptions {
  id: string;
  task: Task;
  /** JSON text of the input, checked against the task's schema. */
  inputJson: string;
}

/**
 * The Errand app: its tasks, its broker, its workers. Emits `enqueued` (runs, results) after each
 * successful enqueue call and `worker` (worker) when a worker is made, for metrics.
 */
export class Errand extends EventEmitter {
  readonly tasks = new Map<string, Task>();
  /** Schedules declared in code, by id: upserted by each worker that serves their queue, when it starts. */
  readonly schedules = new Map<string, DeclaredSchedule>();
  /** Workers made by this app in this process. */
  readonly workers = new Set<Worker>();
  readonly logger: Logger;
  readonly maxInputBytes: number;
  /** The app's redaction paths: the `redact` option and `ERRAND_REDACT` together (each task may add its own). */
  readonly redact: readonly string[];
  #brokerSpec: string | Broker;
  #broker: Promise<Broker> | undefined;
  readonly #options: ErrandOptions;

  constructor(options: ErrandOptions = {}) {
    super();
    checkFields(options, ERRAND_OPTION_KEYS, 'Errand options', 'an Errand option');
    this.#options = options;
    if (options.broker !== undefined && typeof options.broker !== 'string') {
      // They would be dropped without a word: the broker fails runs after its own maxLeaseLosses.
      const given = BROKER_OPTION_KEYS.filter((k) => options[k] !== undefined);
      if (given.length) {
        const names = given.join(' and ');
        throw new ConfigError(
          `Errand options: ${names} cannot apply to a broker instance (the broker option), which was made with its own options: ` +
            `give ${given.length > 1 ? 'them' : 'it'} to the broker when you make it (e.g. new RedisBroker({ url, ${given[0]} })), or give a broker URL`,
        );
      }
    }
    this.#brokerSpec = options.broker ?? defaultBrokerUrl();
    this.logger = options.logger ?? createLogger();
    this.maxInputBytes = options.maxInputBytes ?? 1024 * 1024;
    if (!Number.isInteger(this.maxInputBytes) || this.maxInputBytes < 1) {
      throw new ConfigError(`maxInputBytes must be a positive integer, got ${show(options.maxInputBytes)}`);
    }
    this.redact = mergeRedactPaths(checkRedactPaths(options.redact, 'Errand options'), redactPathsFromEnv());
    // The broker's options, checked now rather than at the first broker call.
    if (options.prefix !== undefined) checkPrefix('Errand options', options.prefix);
    positiveInt('Errand options', 'maxLeaseLosses', options.maxLeaseLosses, DEFAULTS.maxLeaseLosses);
    nonNegativeMs('Errand options', 'failedRetentionMs', options.failedRetentionMs, DEFAULTS.failedRetentionMs);
  }

  /**
   * The broker options the app was given (`maxLeaseLosses`, `failedRetentionMs`), for the broker it
   * connects from a URL: `createTesting(errand)` makes its in-memory broker with them. What a
   * connected broker does is its own: `(await errand.broker()).maxLeaseLosses`.
   */
  get brokerOptions(): BrokerOptions {
    const { maxLeaseLosses, failedRetentionMs } = this.#options;
    return {
      ...(maxLeaseLosses !== undefined && { maxLeaseLosses }),
      ...(failedRetentionMs !== undefined && { failedRetentionMs }),
    };
  }

  /** The redaction paths for runs of a task: the app's and the task's own (the app's alone for a task this app does not define). */
  redactPaths(task?: string): readonly string[] {
    const own = task === undefined ? undefined : this.tasks.get(task)?.redact;
    return own?.length ? mergeRedactPaths(this.redact, own) : this.redact;
  }

  /**
   * Defines a task: a name, options (an input schema at least) and a handler. With an `output`
   * schema, the handler returns its input type and the task's result is its output type.
   */
  task<S extends z.ZodType, O extends z.ZodType>(
    name: string,
    options: TaskOptions<S> & { output: O },
    handler: Handler<S, z.input<O>>,
  ): Task<S, z.output<O>>;
  task<S extends z.ZodType, R>(name: string, options: TaskOptions<S> & { output?: undefined }, handler: Handler<S, R>): Task<S, R>;
  task<S extends z.ZodType, R>(name: string, options: TaskOptions<S>, handler: Handler<S, R>): Task<S, R> {
    if (this.tasks.has(name)) throw new ConfigError(`Task "${name}" is defined twice`);
    const task = new Task<S, R>(this, name, options, handler);
    this.tasks.set(name, task as unknown as Task);
    return task;
  }

  /**
   * Declares a schedule beside its task: runs of `task` at each fire time of `options` (a cron or an
   * interval, a zone, start and end), with `options.input`, under the missed-fire and overlap
   * policies. Workers serving the task's queue store it when they start and fire it: each nominal
   * time once, whatever the number of workers. See docs/schedules.md.
   */
  schedule<S extends z.ZodType>(id: string, task: Task<S>, options: ScheduleOptions<z.input<S>>): DeclaredSchedule {
    const where = `Schedule "${id}"`;
    if (typeof id !== 'string' || !SCHEDULE_ID.test(id))
      throw new ConfigError(`${where}: the id must be 1 to 128 characters without spaces`);
    if (this.schedules.has(id)) throw new ConfigError(`${where} is declared twice`);
    if (!isOwnTask(this.tasks, task)) {
      throw new ConfigError(`${where}: the task must be one defined on this app with errand.task()`);
    }
    const split = splitScheduleOptions(options as ScheduleOptions, where);
    // The input as a run would carry it: checked against the task's schema now, not at the first fire.
    const inputJson = task.prepare(split.input, {}, Date.now(), this.maxInputBytes).input;
    const declared: DeclaredSchedule = { ...split, id, task: task as unknown as Task, inputJson };
    this.schedules.set(id, declared);
    return declared;
  }

  /** The declared schedules as definitions to store, their first fire time from `now`. */
  scheduleDefinitions(now = Date.now()): ScheduleDefinition[] {
    return [...this.schedules.values()].map((d) =>
      scheduleDefinition(
        {
          id: d.id,
          queue: d.task.queue,
          task: d.task.name,
          schedule: d.schedule,
          input: d.inputJson,
          policies: d.policies,
          version: d.version,
          limits: d.task.limits !== undefined,
        },
        now,
      ),
    );
  }

  /**
   * Creates or updates a schedule at run time (the HTTP layer and the dashboard use this). Its
   * version is the time of the call unless given, so a later update wins over an earlier one and
   * over a code declaration of a smaller version.
   */
  async upsertSchedule<S extends z.ZodType>(id: string, task: Task<S>, options: ScheduleOptions<z.input<S>>): Promise<ScheduleView> {
    const now = Date.now();
    const where = `Schedule "${id}"`;
    checkNewScheduleId(id, where);
    const split = splitScheduleOptions({ version: now, ...options } as ScheduleOptions, where);
    const input = task.prepare(split.input, {}, now, this.maxInputBytes).input;
    const target = { id, queue: task.queue, task: task.name, input, limits: task.limits !== undefined };
    return putSchedule(await this.broker(), target, split, now, where);
  }

  /** Every stored schedule (of these queues), with its next five fire times and state. */
  async listSchedules(queues?: readonly string[]): Promise<ScheduleView[]> {
    return (await (await this.broker()).listSchedules(queues)).map(viewOf);
  }

  /** A stored schedule by id (name its queue when ids repeat across queues), or null. */
  async getSchedule(id: string, queue?: string): Promise<ScheduleView | null> {
    const rec = await findSchedule(await this.broker(), id, queue);
    return rec ? viewOf(rec) : null;
  }

  async #existing(id: string, queue?: string) {
    const broker = await this.broker();
    const rec = await findSchedule(broker, id, queue);
    if (!rec) throw new ScheduleNotFoundError(id);
    return { broker, rec };
  }

  /** Pauses (or resumes) a schedule: no fires while paused; the times it passes are handled by its missed-fire policy on resume. */
  async pauseSchedule(id: string, paused = true, queue?: string): Promise<void> {
    const { broker, rec } = await this.#existing(id, queue);
    // Found, then deleted by someone else before the change: not found either.
    if (!(await broker.pauseSchedule(rec.queue, rec.id, paused, Date.now()))) throw new ScheduleNotFoundError(rec.id);
  }

  async resumeSchedule(id: string, queue?: string): Promise<void> {
    await this.pauseSchedule(id, false, queue);
  }

  /** Deletes a stored schedule (its runs stay). A declared one is stored again by the next worker that starts. */
  async deleteSchedule(id: string, queue?: string): Promise<void> {
    const { broker, rec } = await this.#existing(id, queue);
    if (!(await broker.deleteSchedule(rec.queue, rec.id))) throw new ScheduleNotFoundError(rec.id);
  }

  /** The flow spec of a schedule's run (its task's limits), as enqueue computes it; null: a task this app does not define. */
  readonly #flowOf = (task: string, input: string) => {
    const t = this.tasks.get(task);
    return t ? t.flowOfStored(input) : null;
  };

  /** One run of the schedule now, outside its fire times. */
  async triggerSchedule(id: string, queue?: string): Promise<RunHandle> {
    const { broker, rec } = await this.#existing(id, queue);
    const r = await triggerSchedule(broker, rec, Date.now(), this.#flowOf);
    return new RunHandle(r.id, this.#getBroker, r.created, r.state);
  }

  /** A run, marked backfilled, for each fire time in [from, to) that has none yet. Safe to repeat. */
  async backfillSchedule(id: string, from: Date | number, to: Date | number, queue?: string): Promise<BackfillResult> {
    const { broker, rec } = await this.#existing(id, queue);
    return backfillSchedule(broker, rec, Number(from), Number(to), Date.now(), undefined, this.#flowOf);
  }

  /**
   * Replaces the broker before first use (the CLI's `--broker` flag, `createTesting`). An instance
   * keeps its own options; one that fails runs after another number of lost leases than the app's
   * `maxLeaseLosses` is refused.
   */
  setBroker(broker: string | Broker): void {
    if (this.#broker) throw new ConfigError('The broker is already connected; set it before the first enqueue or worker');
    const own = this.#options.maxLeaseLosses;
    if (typeof broker !== 'string' && own !== undefined && broker.maxLeaseLosses !== own) {
      throw new ConfigError(
        `setBroker(): the app was made with maxLeaseLosses ${show(own)} but the broker instance fails runs after ${show(broker.maxLeaseLosses)} lost leases: make the broker with maxLeaseLosses ${show(own)}`,
      );
    }
    this.#brokerSpec = broker;
  }

  /** The broker, connected on first call, behind the guard (`src/broker/shared/guard.ts`): every failure out of it is an Errand error. */
  broker(): Promise<Broker> {
    if (!this.#broker) {
      const spec = this.#brokerSpec;
      const { maxLeaseLosses, failedRetentionMs } = this.#options;
      const prefix = this.#options.prefix ?? (process.env.ERRAND_PREFIX || undefined);
      // Every caller gets the broker behind the guard (shared/guard.ts): checked arguments, Errand errors, spans.
      this.#broker = (
        typeof spec === 'string'
          ? connectBroker(spec, { logger: this.logger, maxLeaseLosses, failedRetentionMs, prefix })
          : Promise.resolve(spec)
      ).then(guardBroker);
      this.#broker.catch(() => {
        this.#broker = undefined;
      });
    }
    return this.#broker;
  }

  get brokerUrl(): string | undefined {
    return typeof this.#brokerSpec === 'string' ? this.#brokerSpec : undefined;
  }

  /**
   * Enqueues prepared runs (of any tasks). Calls made while earlier ones are on their way to the
   * broker are merged into the next broker call, so that many concurrent enqueues (an API under
   * load) cost a few round trips, not one each; a lone enqueue goes out at once. With a remote
   * broker two merged calls may be in flight, so that the next one is built while Redis runs the
   * last (10,000 concurrent enqueues: about 95,000 -> 120,000 per second). They go out in order on
   * one connection and Redis runs them in that order; so does a retry after NOSCRIPT (ioredis
   * resends every failed call in order), unless another client reloads the script between the two
   * calls' runs, when the later runs could be queued ahead of the earlier ones (none is lost).
   */
  async enqueueRuns(runs: NewRun[], now = Date.now()): Promise<RunHandle[]> {
    if (runs.length === 0) return [];
    const broker = await this.broker();
    const results = await new Promise<EnqueueResult[]>((resolve, reject) => {
      this.#outbox.push({ runs, now, resolve, reject });
      if (this.#senders < (broker.remote ? 2 : 1)) void this.#send(broker);
    });
    if (this.listenerCount('enqueued')) this.emit('enqueued', runs, results);
    const get = this.#getBroker;
    return results.map((r) => new RunHandle(r.id, get, r.created, r.state));
  }

  readonly #getBroker = (): Promise<Broker> => this.broker();

  readonly #outbox: { runs: NewRun[]; now: number; resolve: (r: EnqueueResult[]) => void; reject: (e: unknown) => void }[] = [];
  /** Broker calls of merged enqueues in flight (see enqueueRuns). */
  #senders = 0;

  async #send(broker: Broker): Promise<void> {
    this.#senders++;
    while (this.#outbox.length) {
      // Whole calls, up to about MERGE_LIMIT runs per broker call.
      let count = 0;
      let take = 0;
      while (take < this.#outbox.length && (take === 0 || count + this.#outbox[take]!.runs.length <= MERGE_LIMIT)) {
        count += this.#outbox[take]!.runs.length;
        take++;
      }
      const batch = this.#outbox.splice(0, take);
      const runs = batch.length === 1 ? batch[0]!.runs : batch.flatMap((b) => b.runs);
      // The latest call's time: a run that was due when its own call was made is due now too
      // (queued, not scheduled); its enqueuedAt is at most this wait later than its call.
      let now = batch[0]!.now;
      for (const b of batch) if (b.now > now) now = b.now;
      try {
        const results = await broker.enqueue(runs, now);
        if (batch.length === 1) batch[0]!.resolve(results);
        else {
          let offset = 0;
          for (const b of batch) {
            b.resolve(results.slice(offset, offset + b.runs.length));
            offset += b.runs.length;
          }
        }
      } catch (err) {
        for (const b of batch) b.reject(err);
      }
    }
    this.#senders--;
  }

  /**
   * Creates a workflow (docs/workflows.md): a `chain`, `group`, `chord` or `dag` of steps, all its
   * runs and their dependencies in one atomic step. Steps with their own input are validated first
   * (`InputError`, nothing stored); the others take their input from the steps they wait for. Every
   * step must be of a task of this app (`ConfigError` otherwise).
   */
  async workflow<F extends AnyFlow>(flow: F): Promise<WorkflowHandle<ResultOf<F>>> {
    const now = Date.now();
    const compiled = compileWorkflow(flow, now, this.maxInputBytes, this.tasks);
    const broker = await this.broker();
    const { created, held } = await broker.createWorkflow({ id: compiled.id, runs: compiled.runs }, now);
    return new WorkflowHandle<ResultOf<F>>(compiled, this.#getBroker, created, held);
  }

  /** A handle to an existing run, by id. */
  run<R = unknown>(id: string): RunHandle<R> {
    return new RunHandle<R>(id, () => this.broker());
  }

  /** The run with this id, decoded; throws `RunNotFoundError`. */
  async getRun(id: string): Promise<RunInfo> {
    const rec = await (await this.broker()).getRun(id);
    if (!rec) throw new RunNotFoundError(id);
    return decodeRun(rec);
  }

  /** A worker for this app's tasks. Call `start()` on it. */
  worker(options: WorkerOptions = {}): Worker {
    const worker = new Worker(this.#workerHost(), options);
    this.workers.add(worker);
    this.emit('worker', worker);
    return worker;
  }

  /** What a worker needs from this app, and nothing more (see src/worker/host.ts). */
  #workerHost(): WorkerHost {
    return {
      broker: this.#getBroker,
      tasks: this.tasks,
      logger: this.logger,
      redactPaths: (task) => this.redactPaths(task),
      maxInputBytes: this.maxInputBytes,
      scheduleDefinitions: (now) => this.scheduleDefinitions(now),
    };
  }

  async close(): Promise<void> {
    const b = this.#broker;
    this.#broker = undefined;
    if (b) await (await b).close();
  }
}

export function createErrand(options?: ErrandOptions): Errand {
  return new Errand(options);
}
