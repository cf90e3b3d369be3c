import type { Logger } from 'pino';
import type { z } from 'zod';
import type { FlowSpec, NewRun } from '../broker/types.ts';
import { type BackOff, type BackOffScope, ConfigError, InputError, type InputIssue } from '../core/errors.ts';
import { checkQueueName, newRunId } from '../core/ids.ts';
import { type AnyFlow, type Join, joinOf, nextOf, type Pending, type ResultOf, type Spawn, type StepOptions, stepOf } from './workflow.ts';
import { jsonIssues } from '../core/json.ts';
import { checkSchema } from '../core/schema-issues.ts';
import { checkRedactPaths } from '../core/redact.ts';
import { checkIsolation, type Isolation, recordTask } from './isolation.ts';
import { checkLimits, flowRate, type KeyLimits, type TaskLimits } from './limits.ts';
import { applyRunTiming, checkRunTiming, type RunTiming, type RunTimingOptions } from './run-timing.ts';
import { checkDuration, checkFields } from '../core/fields.ts';
import { closestName, MAX_TIMER_MS, show } from '../core/show.ts';
import { checkPriority, DEFAULTS, type Retention, type RetryPolicy, resolveRetention, resolveRetries } from './options.ts';

/** What a handler gets besides its input. */
export interface TaskContext {
  runId: string;
  task: string;
  queue: string;
  /** 1 on the first start, 2 on the first retry or redelivery, and so on. */
  attempt: number;
  /** Aborts on the attempt's timeout, on cancel of the run, and when the worker shuts down past its grace period. */
  signal: AbortSignal;
  /** A logger bound to this run (run id, task, attempt). */
  logger: Logger;
  /** Records progress (any JSON value, e.g. a percentage) on the run; sent to the broker at most a few times a second. */
  progress(value: unknown): void;
  /** W3C trace context of the request that enqueued the run, if any. */
  traceparent?: string;
  /** Where the handler runs (see `TaskOptions.isolation`); `pid` is the isolate's process id (the worker's own for `thread` and `none`). */
  isolate?: { kind: Isolation; pid: number; threadId: number };
  /** Set when a schedule created the run: its id, the nominal fire time, and whether the run was created late (missed-fire policy, backfill). */
  schedule?: { id: string; at: Date; backfilled: boolean };
  /**
   * Dynamic fan-out (docs/workflows.md): `return ctx.spawn(shape)` ends this attempt by creating the
   * shape's runs (a chain, group, chord or dag, as `errand.workflow` takes) in this run's queue and
   * workflow; the run then waits for them, holding no worker slot, and its result is the shape's
   * value. Checks the shape now (`InputError`, `ConfigError`: a step in another queue, a task with
   * limits). Not available in isolated handlers (`ConfigError`).
   */
  spawn<F extends AnyFlow>(shape: F): Spawn<ResultOf<F>>;
  /**
   * `throw ctx.backOff(30_000)`: puts the run back for 30 s without using an attempt (a 429 with
   * Retry-After). Under `limits`, its key (or, with `{ scope: 'task' }`, the whole task; a run
   * without a key: the task) starts nothing until then; a task without limits waits alone.
   * Returns the `BackOff` to throw; a bad `ms` (not in (0, 30 days]) or scope is a TypeError.
   */
  backOff(ms: number, options?: { scope?: BackOffScope; reason?: string }): BackOff;
}

/** A handler returns its result, or `ctx.spawn(shape)` whose value becomes its result. */
export type Handler<S extends z.ZodType, R> = (input: z.output<S>, ctx: TaskContext) => Promise<R | Spawn<R>> | R | Spawn<R>;

export interface TaskOptions<S extends z.ZodType> extends RunTimingOptions<z.output<S>> {
  /** The input schema (zod). `enqueue` is typed by it and validates against it; the worker validates again before running. */
  input: S;
  /** Default `default`. */
  queue?: string;
  /** Higher runs first; integer in [-1000, 1000]. Default 0. */
  priority?: number;
  /** Retry policy, or a number of retries (`2` = 3 attempts). Default: 3 attempts, exponential backoff from 1 s, capped at 5 min, jitter 0.2. */
  retries?: RetryPolicy | number;
  /** Longest an attempt may run, in ms. Default 300000 (5 minutes). */
  timeout?: number;
  /** How long finished runs are kept, in ms (one number for all, or per state). Defaults: succeeded 1 day, failed 7 days, cancelled 1 day. */
  retention?: Retention | number;
  /** Derives an idempotency key from the input: a second enqueue with the same key (within `idempotencyTtl`) returns the first run. */
  idempotencyKey?: (input: z.output<S>) => string | undefined;
  /** How long an idempotency key holds, in ms. Default 86400000 (1 day). */
  idempotencyTtl?: number;
  /**
   * The result schema (zod): the worker validates what the handler returns against it before the
   * result is stored (a mismatch fails the run for good, reason `invalid_result`), and stores what
   * it parses to. The result type (of `result()`, and of the steps of a workflow that take it) is
   * its output type.
   */
  output?: z.ZodType;
  /** A line for the OpenAPI document and the dashboard. */
  description?: string;
  /** Paths into this task's input whose values are secrets, added to the app's `redact` (see `ErrandOptions.redact`). */
  redact?: string[];
  /**
   * Where the handler runs. `none` (default): in the worker's thread. `thread`: in a pool of worker
   * threads; `process`: in a pool of child processes. An isolated handler cannot stall the worker
   * (leases are renewed, other runs go on), and past its `timeout` it is stopped for real (the thread
   * terminated, the process killed). Needs `module`. See docs/isolation.md.
   */
  isolation?: Isolation;
  /**
   * With `isolation`: the module that defines this task, `import.meta.url` (or `__filename`). Each
   * isolate imports it once and finds the handler: the task defined under this name during the
   * import, else an export that is a function named as the handler. The module must not start a
   * worker or a server when imported.
   */
  module?: string | URL;
  /** With `isolation`: the heap limit of each isolate in MB; a run past it fails (and is retried) with reason `memory`. Default: Node's. */
  memoryLimitMb?: number;
  /**
   * Concurrency and rate limits, enforced by the broker for every worker (docs/flow-control.md):
   * at most `concurrency` active runs and `rate` starts per period per key (a key from the input,
   * e.g. the tenant), at most `global` active runs and `globalRate` starts of the task in its
   * queue. Keys are served round robin.
   */
  limits?: TaskLimits<z.output<S>>;
}

/** The longest `delay` accepted: 100 years, in ms (a longer one would leave the range of a Date). */
export const MAX_DELAY_MS = 100 * 365 * 24 * 3600 * 1000;

export interface EnqueueOptions {
  /** Start no sooner than this many ms from now (at most `MAX_DELAY_MS`, 100 years). */
  delay?: number;
  /** Start no sooner than this time (a Date or epoch ms). Not together with `delay`. */
  runAt?: Date | number;
  /** Overrides the task's priority. */
  priority?: number;
  /**
   * Same key (for this task and queue) within the task's idempotency window returns the same run,
   * never a second one. 1 to 512 characters of well-formed Unicode.
   */
  idempotencyKey?: string;
  /** Overrides the task's queue. */
  queue?: string;
  /** W3C trace context to carry to the worker (set by the HTTP layer from the request). */
  traceparent?: string;
  /** Drop the run (failed, reason `expired`) if it has not started this many ms after it is due. Overrides the task's `expiresIn`. */
  expiresIn?: number;
  /** Drop the run if it has not started by this time (a Date or epoch ms; not before it is due). Not together with `expiresIn`. */
  expiresAt?: Date | number;
}

/** Every field of `TaskOptions`: another is refused by name (a typo TypeScript would catch, in plain JS). */
const TASK_OPTION_KEYS = [
  'input',
  'queue',
  'priority',
  'retries',
  'timeout',
  'retention',
  'idempotencyKey',
  'idempotencyTtl',
  'output',
  'description',
  'redact',
  'isolation',
  'module',
  'memoryLimitMb',
  'limits',
  'expiresIn',
  'throttle',
  'debounce',
];
const ENQUEUE_OPTION_KEYS = new Set(['delay', 'runAt', 'priority', 'idempotencyKey', 'queue', 'traceparent', 'expiresIn', 'expiresAt']);
const TASK_NAME = /^[A-Za-z0-9_.:-]{1,128}$/;
const TRACEPARENT = /^[\da-f]{2}-[\da-f]{32}-[\da-f]{16}-[\da-f]{2}$/;

/** Everything about a task except how to reach a broker (that is the Errand app's). */
export class TaskDefinition<S extends z.ZodType = z.ZodType, R = unknown> {
  readonly name: string;
  readonly schema: S;
  readonly handler: Handler<S, R>;
  readonly queue: string;
  readonly priority: number;
  readonly retries: Required<RetryPolicy>;
  readonly timeout: number;
  readonly retention: Required<Retention>;
  readonly idempotencyTtl: number;
  readonly description: string | undefined;
  /** The result schema, when the task declares one. */
  readonly output: z.ZodType | undefined;
  /** This task's own redaction paths (the app adds its own: `errand.redactPaths(name)`). */
  readonly redact: readonly string[];
  /** Where the handler runs (`TaskOptions.isolation`). */
  readonly isolation: Isolation;
  /** The file URL an isolate imports to find the handler (with `isolation`). */
  readonly module: string | undefined;
  readonly memoryLimitMb: number | undefined;
  readonly #idempotencyKey: ((input: z.output<S>) => string | undefined) | undefined;
  /** The task's concurrency limits, checked (undefined: none). */
  readonly limits: Readonly<TaskLimits<z.output<S>>> | undefined;
  /** `expiresIn`, `throttle`, `debounce`, checked (see run-timing.ts). */
  readonly timing: RunTiming<z.output<S>>;
  /** `TaskOptions.expiresIn` (undefined: runs do not expire). */
  readonly expiresIn: number | undefined;

  constructor(name: string, options: TaskOptions<S>, handler: Handler<S, R>) {
    if (typeof name !== 'string' || !TASK_NAME.test(name)) {
      throw new ConfigError(`Task name ${show(name)} is invalid: use 1 to 128 letters, digits, "_", ".", ":" or "-"`);
    }
    const where = `Task "${name}"`;
    if (!options || typeof options !== 'object') throw new ConfigError(`${where}: options are required (at least { input: zodSchema })`);
    checkFields(options, TASK_OPTION_KEYS, `${where}: options`, 'a task option');
    if (!options.input || typeof (options.input as { safeParse?: unknown }).safeParse !== 'function') {
      throw new ConfigError(`${where}: options.input must be a zod schema`);
    }
    if (typeof handler !== 'function') throw new ConfigError(`${where}: the handler must be a function`);
    this.name = name;
    this.schema = options.input;
    this.handler = handler;
    this.queue = checkQueueName(options.queue ?? DEFAULTS.queue, where);
    this.priority = checkPriority(options.priority ?? DEFAULTS.priority, where);
    this.retries = resolveRetries(options.retries, where);
    // The attempt's timer: Node fires a longer one after 1 ms.
    this.timeout = checkDuration(options.timeout ?? DEFAULTS.timeout, `${where}: timeout`, { allowZero: false, max: MAX_TIMER_MS });
    this.retention = resolveRetention(options.retention, where);
    this.idempotencyTtl = checkDuration(options.idempotencyTtl ?? DEFAULTS.idempotencyTtl, `${where}: idempotencyTtl`, {
      allowZero: false,
    });
    this.description = options.description;
    if (options.output !== undefined && typeof (options.output as { safeParse?: unknown }).safeParse !== 'function') {
      throw new ConfigError(`${where}: options.output must be a zod schema`);
    }
    this.output = options.output;
    this.redact = checkRedactPaths(options.redact, where);
    const isolation = checkIsolation(options, where);
    this.isolation = isolation.isolation;
    this.module = isolation.module;
    this.memoryLimitMb = isolation.memoryLimitMb;
    if (options.idempotencyKey !== undefined && typeof options.idempotencyKey !== 'function') {
      throw new ConfigError(
        `${where}: idempotencyKey must be a function of the input returning the key (a fixed key goes in enqueue's options), got ${show(options.idempotencyKey)}`,
      );
    }
    this.#idempotencyKey = options.idempotencyKey;
    recordTask(this as unknown as { name: string; handler: (...args: never[]) => unknown });
    this.limits = checkLimits(options.limits, where);
    this.timing = checkRunTiming(options, where);
    this.expiresIn = this.timing.expiresIn;
  }

  /**
   * Validates an input and options and builds the run to store. Throws `InputError` listing every
   * problem (schema, JSON, size, options) with its path; nothing is stored then.
   */
  prepare(input: unknown, options: EnqueueOptions = {}, now = Date.now(), maxInputBytes = 1024 * 1024): NewRun {
    const optionIssues = checkEnqueueOptions(options);
    if (optionIssues.length) throw new InputError(optionIssues, this.name, 'options');
    // null passes the check as "no options" (as undefined does).
    options ??= {};
    // Refuse pathological nesting before anything recurses over it (zod, JSON.stringify).
    const notJson = jsonIssues(input);
    if (notJson.length) {
      const tooDeep = notJson.filter((i) => i.code === 'too_deep');
      if (tooDeep.length) throw new InputError(tooDeep, this.name);
    }
    const parsed = checkSchema(this.schema, input);
    if (!parsed.ok) throw new InputError(parsed.issues, this.name);
    if (notJson.length) throw new InputError(notJson, this.name);
    const json = JSON.stringify(input === undefined ? null : input);
    const bytes = Buffer.byteLength(json);
    if (bytes > maxInputBytes) {
      throw new InputError(
        [{ path: [], message: `is ${bytes} bytes of JSON, over the limit of ${maxInputBytes} bytes`, code: 'too_large' }],
        this.name,
      );
    }
    const queue = options.queue ?? this.queue;
    let runAt = now;
    if (options.delay !== undefined) runAt = now + Math.floor(options.delay);
    if (options.runAt !== undefined) runAt = options.runAt instanceof Date ? options.runAt.getTime() : Math.floor(options.runAt);
    const run: NewRun = {
      id: newRunId(queue, now),
      task: this.name,
      queue,
      input: json,
      priority: options.priority ?? this.priority,
      runAt,
      cancelledRetentionMs: this.retention.cancelled,
    };
    let key = options.idempotencyKey;
    if (key === undefined && this.#idempotencyKey) {
      key = this.#idempotencyKey(parsed.value);
      if (key !== undefined && (typeof key !== 'string' || key.length === 0 || key.length > 512)) {
        throw new ConfigError(
          `Task "${this.name}": idempotencyKey() must return a string of 1 to 512 characters or undefined, got ${show(key)}`,
        );
      }
    }
    if (key !== undefined) {
      run.idempotencyKey = key;
      run.idempotencyTtl = this.idempotencyTtl;
    }
    if (options.traceparent) run.traceparent = options.traceparent;
    if (this.limits) run.flow = this.#flow(parsed.value);
    applyRunTiming(run, this.timing, parsed.value, options, now);
    return run;
  }

  /**
   * A step of a workflow with its own input (validated now, as `enqueue` does). Placed after other
   * steps (in a chain), it waits for them but does not take their values.
   */
  step(input: z.input<S>, options?: EnqueueOptions): Pending<unknown, R> {
    return stepOf<R>(this, input, options);
  }

  /** A step of a chain or chord whose input is the value before it (a group's: the list of its values). */
  next(options?: StepOptions): Pending<z.input<S>, R> {
    return nextOf<z.input<S>, R>(this, options);
  }

  /** A node of a dag whose input is `{ key: value of node }` for each `key: 'node'` of `deps`. */
  join<const M extends Record<string, string>>(deps: M, options?: StepOptions): Join<M, z.input<S>, R> {
    return joinOf<M, z.input<S>, R>(this, deps, options);
  }
  /**
   * The flow spec of a run of this task whose input is stored as JSON text (a schedule's fire), as
   * `enqueue` computes it; undefined for a task without limits. Input that no longer parses or
   * validates (stored before the schema changed), or whose `limits.key()` throws, gives the task's
   * group limits without a key: the run is still under `global`/`globalRate`, and fails its
   * validation when it starts.
   */
  flowOfStored(input: string): FlowSpec | undefined {
    if (!this.limits) return undefined;
    try {
      const parsed = this.schema.safeParse(JSON.parse(input));
      if (parsed.success) return this.#flow(parsed.data);
    } catch {
      // As unreadable input: below.
    }
    return this.flowWithoutInput();
  }

  /**
   * The flow spec of a run of this task without a key (its input unknown or unreadable): the task's
   * group limits only (`global`, `globalRate`); undefined for a task without limits. A workflow step
   * whose input comes from the steps before it (`next()`, `join()`) of a task limited in total only
   * gets this (docs/flow-control.md).
   */
  flowWithoutInput(): FlowSpec | undefined {
    const l = this.limits;
    if (!l) return undefined;
    const flow: FlowSpec = { group: this.name, key: '' };
    if (l.global !== undefined) flow.groupConcurrency = l.global;
    if (l.globalRate) flow.groupRate = flowRate(l.globalRate);
    return flow;
  }

  /** The flow spec of a run (see `FlowSpec`): this task's group, the run's key and their limits. */
  #flow(input: z.output<S>): FlowSpec {
    const l = this.limits as TaskLimits<z.output<S>>;
    let key = '';
    if (l.key) {
      const k = l.key(input);
      if (k !== undefined && (typeof k !== 'string' || k.length === 0 || k.length > 256 || !k.isWellFormed())) {
        throw new ConfigError(
          `Task "${this.name}": limits.key() must return a string of 1 to 256 characters of well-formed Unicode or undefined, got ${show(k)}`,
        );
      }
      if (k !== undefined) key = k;
    }
    const flow: FlowSpec = { group: this.name, key };
    if (key !== '') {
      const o = l.overrides && Object.hasOwn(l.overrides, key) ? l.overrides[key] : undefined;
      const own: KeyLimits = typeof o === 'number' ? { concurrency: o } : (o ?? {});
      const c = own.concurrency ?? l.concurrency;
      if (c !== undefined) flow.concurrency = c;
      const rate = own.rate ?? l.rate;
      if (rate) flow.rate = flowRate(rate);
      if (own.weight !== undefined && own.weight !== 1) flow.weight = own.weight;
    }
    if (l.global !== undefined) flow.groupConcurrency = l.global;
    if (l.globalRate) flow.groupRate = flowRate(l.globalRate);
    return flow;
  }
}

function checkEnqueueOptions(options: unknown): InputIssue[] {
  if (options === undefined || options === null) return [];
  if (typeof options !== 'object' || Array.isArray(options)) return [{ path: [], message: 'must be an object', code: 'invalid_type' }];
  const o = options as Record<string, unknown>;
  const issues: InputIssue[] = [];
  const bad = (key: string, message: string) => issues.push({ path: [key], message, code: 'invalid_option' });
  for (const key of Object.keys(o)) {
    if (!ENQUEUE_OPTION_KEYS.has(key)) {
      const guess = closestName(key, ENQUEUE_OPTION_KEYS);
      bad(
        key,
        `is not an enqueue option (${guess ? `did you mean ${JSON.stringify(guess)}? ` : ''}known: ${[...ENQUEUE_OPTION_KEYS].join(', ')})`,
      );
    }
  }
  if (o.delay !== undefined && (typeof o.delay !== 'number' || !Number.isFinite(o.delay) || o.delay < 0 || o.delay > MAX_DELAY_MS)) {
    bad('delay', `must be a non-negative number of milliseconds, at most ${MAX_DELAY_MS} (100 years), got ${show(o.delay)}`);
  }
  if (o.runAt !== undefined) {
    const t = o.runAt instanceof Date ? o.runAt.getTime() : o.runAt;
    if (typeof t !== 'number' || !Number.isFinite(t) || t < 0 || t > 8.64e15)
      bad('runAt', `must be a valid Date or epoch milliseconds, got ${show(o.runAt)}`);
    if (o.delay !== undefined) bad('runAt', 'give either delay or runAt, not both');
  }
  if (
    o.priority !== undefined &&
    (typeof o.priority !== 'number' || !Number.isInteger(o.priority) || o.priority < -1000 || o.priority > 1000)
  ) {
    bad('priority', `must be an integer from -1000 to 1000, got ${show(o.priority)}`);
  }
  if (
    o.idempotencyKey !== undefined &&
    (typeof o.idempotencyKey !== 'string' || o.idempotencyKey.length === 0 || o.idempotencyKey.length > 512)
  ) {
    bad('idempotencyKey', `must be a string of 1 to 512 characters, got ${show(o.idempotencyKey)}`);
  } else if (typeof o.idempotencyKey === 'string' && !o.idempotencyKey.isWellFormed()) {
    // Stored as UTF-8, a lone surrogate becomes U+FFFD: two different keys would share one run.
    bad('idempotencyKey', 'must be well-formed Unicode (it has a lone surrogate)');
  }
  if (o.queue !== undefined && (typeof o.queue !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(o.queue))) {
    bad('queue', `must be 1 to 64 letters, digits, "_" or "-", got ${show(o.queue)}`);
  }
  if (o.expiresIn !== undefined && (typeof o.expiresIn !== 'number' || !(o.expiresIn > 0) || o.expiresIn > MAX_DELAY_MS)) {
    bad('expiresIn', `must be a positive number of milliseconds, at most ${MAX_DELAY_MS} (100 years), got ${show(o.expiresIn)}`);
  }
  if (o.expiresAt !== undefined) {
    const t = o.expiresAt instanceof Date ? o.expiresAt.getTime() : o.expiresAt;
    if (typeof t !== 'number' || !Number.isFinite(t) || t < 0 || t > 8.64e15)
      bad('expiresAt', `must be a valid Date or epoch milliseconds, got ${show(o.expiresAt)}`);
    if (o.expiresIn !== undefined) bad('expiresAt', 'give either expiresIn or expiresAt, not both');
  }
  if (o.traceparent !== undefined && (typeof o.traceparent !== 'string' || !TRACEPARENT.test(o.traceparent))) {
    bad('traceparent', `must be a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>), got ${show(o.traceparent)}`);
  }
  return issues;
}
