/**
 * Sending tasks to Celery from TypeScript, with `send_task`'s semantics, and reading their results.
 *
 *   const celery = createCeleryClient({ url: 'redis://127.0.0.1:6379/0' });
 *   const r = await celery.sendTask('tasks.add', { args: [2, 3] });
 *   await r.get({ timeoutMs: 10_000 }); // 5, or throws CeleryTaskError (exc type, module, message)
 *
 * A message goes where Celery 5's `send_task` puts it: LPUSH onto the queue's list (the priority's
 * list for priorities 3, 6, 9 on kombu's Redis transport), with the queue's binding declared.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { ConfigError, InputError, type InputIssue } from '../core/errors.ts';
import { checkTimerMs } from '../core/fields.ts';
import { jsonIssues } from '../core/json.ts';
import { show } from '../core/show.ts';
import { redactUrl, redisUrlProblem } from '../core/urls.ts';
import { type CeleryMeta, type CeleryState, READY_STATES, ResultBackend, resultOfMeta } from './backend.ts';
import { broadcastMessage, pidboxChannel } from './pidbox.ts';
import { bindingOf, buildMessage, type CelerySignature, queueListFor } from './protocol.ts';

export interface SendTaskOptions {
  /** Positional arguments (`args`), JSON values. */
  args?: unknown[];
  /** Keyword arguments (`kwargs`), JSON values. */
  kwargs?: Record<string, unknown>;
  /** Seconds from now before the task may run (`countdown`). Not with `eta`. */
  countdown?: number;
  /** The time before which the task must not run (`eta`). Not with `countdown`. */
  eta?: Date;
  /** Seconds from now, or a time, after which the task is not run but marked REVOKED (`expires`). */
  expires?: number | Date;
  /** 0..9; on kombu's Redis transport 0 is served first (the default), then 3, 6, 9. */
  priority?: number;
  /** The `retries` header: how many times this task was already retried. Default 0. */
  retries?: number;
  /** The task id (`task_id`). Default a new UUID. */
  taskId?: string;
  parentId?: string;
  /** Default the task's own id (a new workflow). */
  rootId?: string;
  /** The queue (Celery's `queue`, the routing key on the default exchange). Default the client's, `celery`. */
  queue?: string;
  /** Tasks to run with this one's result prepended to their args (`link`). */
  link?: CelerySignature | CelerySignature[];
  /** Tasks to run with this one's id if it fails (`link_error`). */
  linkError?: CelerySignature | CelerySignature[];
  /** `[hard, soft]` time limits in seconds (`time_limit`, `soft_time_limit`). */
  timeLimit?: [number | null, number | null];
  ignoreResult?: boolean;
  /** Internal: the remaining chain (reversed), as `chain()` sends it. */
  chain?: CelerySignature[];
}

/** A signature to link or chain: `signature('tasks.add', { args: [1] })`. */
export function signature(
  task: string,
  o: { args?: unknown[]; kwargs?: Record<string, unknown>; queue?: string; immutable?: boolean; options?: Record<string, unknown> } = {},
): CelerySignature {
  if (typeof task !== 'string' || task.length === 0) throw new ConfigError('signature: the task name must be a non-empty string');
  return {
    task,
    args: o.args ?? [],
    kwargs: o.kwargs ?? {},
    options: { ...(o.options ?? {}), ...(o.queue ? { queue: o.queue } : {}) },
    subtask_type: null,
    immutable: o.immutable ?? false,
    chord_size: null,
  };
}

/** Checks `sendTask`'s options; throws `InputError` naming each bad option. */
export function checkSendOptions(task: unknown, o: SendTaskOptions): void {
  const issues: InputIssue[] = [];
  const add = (path: (string | number)[], message: string) => issues.push({ path, message, code: 'invalid' });
  if (typeof task !== 'string' || task.length === 0) add(['task'], 'must be a non-empty string (the Celery task name)');
  if (o.args !== undefined && !Array.isArray(o.args)) add(['args'], 'must be an array (Celery: args must be a list or tuple)');
  if (o.kwargs !== undefined && (typeof o.kwargs !== 'object' || o.kwargs === null || Array.isArray(o.kwargs)))
    add(['kwargs'], 'must be a plain object (Celery: keyword arguments must be a mapping)');
  for (const [name, value] of [
    ['args', o.args],
    ['kwargs', o.kwargs],
  ] as const) {
    for (const i of jsonIssues(value)) issues.push({ ...i, path: [name, ...i.path] });
  }
  if (o.countdown !== undefined && !(typeof o.countdown === 'number' && Number.isFinite(o.countdown) && o.countdown >= 0))
    add(['countdown'], 'must be a finite number of seconds >= 0');
  if (o.countdown !== undefined && o.eta !== undefined) add(['eta'], 'give countdown or eta, not both');
  if (o.eta !== undefined && !(o.eta instanceof Date && !Number.isNaN(o.eta.getTime()))) add(['eta'], 'must be a valid Date');
  if (
    o.expires !== undefined &&
    !(o.expires instanceof Date ? !Number.isNaN(o.expires.getTime()) : typeof o.expires === 'number' && Number.isFinite(o.expires))
  )
    add(['expires'], 'must be a number of seconds or a valid Date');
  if (o.priority !== undefined && !(Number.isInteger(o.priority) && o.priority >= 0 && o.priority <= 9))
    add(['priority'], 'must be an integer from 0 to 9');
  if (o.retries !== undefined && !(Number.isInteger(o.retries) && o.retries >= 0)) add(['retries'], 'must be an integer >= 0');
  for (const k of ['taskId', 'parentId', 'rootId', 'queue'] as const) {
    const v = o[k];
    if (v !== undefined && !(typeof v === 'string' && v.length > 0 && v.length <= 255)) add([k], 'must be a non-empty string');
  }
  if (issues.length) throw new InputError(issues, typeof task === 'string' ? task : undefined, 'options');
}

const asList = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

/** A task sent to Celery: its id, and its state and result in the result backend. */
export class CeleryResult {
  readonly id: string;
  private readonly backend: ResultBackend;
  private readonly client: CeleryClient | undefined;
  constructor(id: string, backend: ResultBackend, client?: CeleryClient) {
    this.id = id;
    this.backend = backend;
    this.client = client;
  }
  /** Python's `AsyncResult.revoke()`: see `CeleryClient.revoke`. */
  revoke(o: RevokeOptions = {}): Promise<void> {
    if (!this.client) throw new ConfigError('revoke(): this result was not made by a CeleryClient');
    return this.client.revoke(this.id, o);
  }
  /** PENDING (unknown or not started), STARTED, RETRY, SUCCESS, FAILURE or REVOKED. */
  async state(): Promise<CeleryState> {
    return (await this.backend.meta(this.id)).status;
  }
  /** The stored meta, as Celery wrote it. */
  meta(): Promise<CeleryMeta> {
    return this.backend.meta(this.id);
  }
  async ready(): Promise<boolean> {
    return READY_STATES.has(await this.state());
  }
  /**
   * Waits (on the backend's pub/sub channel, no polling) for the task to finish: its result on
   * SUCCESS; on FAILURE or REVOKED throws `CeleryTaskError` with the exception's type and message.
   */
  async get(o: { timeoutMs?: number } = {}): Promise<unknown> {
    // A timer: Node fires a longer one after 1 ms. Omitted, the wait has no limit.
    const timeoutMs = o?.timeoutMs === undefined ? undefined : checkTimerMs(o.timeoutMs, 'get(): timeoutMs');
    return resultOfMeta(await this.backend.wait(this.id, timeoutMs));
  }
}

export interface RevokeOptions {
  /** Also stop the task where it runs (Celery's `terminate=True`; on an Errand worker, its `ctx.signal`). */
  terminate?: boolean;
  /** Only these workers (their Celery hostnames, e.g. `celery@host`); default every worker. */
  destination?: string[];
}

export interface CeleryClientOptions {
  /** `redis://[user:pass@]host:port/db`: Celery's broker and result backend. */
  url?: string;
  /** An ioredis client to use instead of `url` (not closed by `close()`). */
  redis?: Redis;
  /** The default queue. Default `celery` (Celery's `task_default_queue`). */
  queue?: string;
  /** Result expiry in seconds for results this process writes (Celery's `result_expires`). Default 86400. */
  resultExpires?: number;
}

/**
 * Checks a Redis URL given to the Celery client or worker with the project's one Redis URL check
 * (core/urls.ts), password hidden in the error; a cluster URL is refused (kombu's Redis transport
 * speaks to one server).
 */
export function checkCeleryRedisUrl(url: string, who: string): void {
  const problem = typeof url === 'string' ? redisUrlProblem(url) : 'must be a string';
  if (problem) throw new ConfigError(`${who}: url ${typeof url === 'string' ? `"${redactUrl(url)}"` : show(url)} ${problem}`);
  if (/^rediss?\+cluster:/.test(url))
    throw new ConfigError(
      `${who}: url "${redactUrl(url)}" is a Redis Cluster URL; Celery's Redis transport uses one server (redis:// or rediss://)`,
    );
}

export class CeleryClient {
  readonly redis: Redis;
  readonly backend: ResultBackend;
  readonly queue: string;
  private readonly owned: boolean;
  private readonly declared = new Set<string>();

  constructor(o: CeleryClientOptions = {}) {
    if (!o.redis && !o.url) throw new ConfigError('createCeleryClient: give url (redis://host:port/db) or redis (an ioredis client)');
    if (o.url !== undefined) checkCeleryRedisUrl(o.url, 'createCeleryClient');
    this.owned = !o.redis;
    this.redis = o.redis ?? new Redis(o.url as string, { maxRetriesPerRequest: 3, lazyConnect: false });
    if (this.owned) this.redis.on('error', () => {}); // commands reject with the error; reconnection is ioredis's
    this.queue = o.queue ?? 'celery';
    this.backend = new ResultBackend(this.redis, o.resultExpires ?? 86_400);
  }

  /** Sends task `name` as Celery 5's `app.send_task(name, ...)` would. */
  async sendTask(name: string, o: SendTaskOptions = {}): Promise<CeleryResult> {
    checkSendOptions(name, o);
    const queue = o.queue ?? this.queue;
    const id = o.taskId ?? randomUUID();
    const now = Date.now();
    const envelope = buildMessage(name, {
      id,
      args: o.args ?? [],
      kwargs: o.kwargs ?? {},
      queue,
      ...(o.countdown !== undefined ? { eta: new Date(now + o.countdown * 1000) } : o.eta ? { eta: o.eta } : {}),
      ...(o.expires !== undefined ? { expires: o.expires instanceof Date ? o.expires : new Date(now + o.expires * 1000) } : {}),
      priority: o.priority ?? 0,
      retries: o.retries ?? 0,
      rootId: o.rootId ?? id,
      parentId: o.parentId ?? null,
      callbacks: asList(o.link),
      errbacks: asList(o.linkError),
      chain: o.chain ?? null,
      ...(o.timeLimit ? { timeLimit: o.timeLimit } : {}),
      ignoreResult: o.ignoreResult ?? false,
    });
    await this.push(queue, envelope.properties.priority, JSON.stringify(envelope));
    return new CeleryResult(id, this.backend, this);
  }

  /**
   * Sends a chain: the first signature now, the rest in its embed (`chain`), each getting the
   * previous result prepended to its args. Returns the result of the last task.
   */
  async chain(...sigs: CelerySignature[]): Promise<CeleryResult> {
    if (sigs.length === 0) throw new ConfigError('chain: give at least one signature');
    const [first, ...rest] = sigs as [CelerySignature, ...CelerySignature[]];
    // Each link's id is fixed up front, so that the last one's result can be awaited.
    const withIds = rest.map((s) => ({ ...s, options: { ...(s.options ?? {}), task_id: (s.options?.task_id as string) ?? randomUUID() } }));
    const last = withIds.at(-1);
    const r = await this.sendTask(first.task, {
      args: first.args ?? [],
      kwargs: first.kwargs ?? {},
      ...(typeof first.options?.queue === 'string' ? { queue: first.options.queue } : {}),
      chain: withIds.reverse(),
    });
    return last ? new CeleryResult(last.options.task_id as string, this.backend, this) : r;
  }

  /** A handle on a task sent elsewhere (Python's `AsyncResult(id)`). */
  result(id: string): CeleryResult {
    return new CeleryResult(id, this.backend, this);
  }

  /**
   * Revokes tasks by id, as Python's `app.control.revoke(ids)`: broadcasts Celery's `revoke` command
   * to the workers (Python and Errand) that are running now; each keeps the ids and marks such a
   * task REVOKED instead of running it. No reply is awaited (Celery's default).
   */
  async revoke(taskId: string | string[], o: RevokeOptions = {}): Promise<void> {
    const ids = Array.isArray(taskId) ? taskId : [taskId];
    const issues: InputIssue[] = [];
    if (ids.length === 0) issues.push({ path: ['taskId'], message: 'give at least one task id', code: 'invalid' });
    ids.forEach((id, i) => {
      if (typeof id !== 'string' || id.length === 0)
        issues.push({
          path: Array.isArray(taskId) ? ['taskId', i] : ['taskId'],
          message: `must be a non-empty string, got ${show(id)}`,
          code: 'invalid',
        });
    });
    if (o.terminate !== undefined && typeof o.terminate !== 'boolean')
      issues.push({ path: ['terminate'], message: `must be a boolean, got ${show(o.terminate)}`, code: 'invalid' });
    if (o.destination !== undefined && !(Array.isArray(o.destination) && o.destination.every((d) => typeof d === 'string' && d.length > 0)))
      issues.push({ path: ['destination'], message: `must be an array of worker hostnames, got ${show(o.destination)}`, code: 'invalid' });
    if (issues.length) throw new InputError(issues, undefined, 'options');
    const args = { task_id: Array.isArray(taskId) ? ids : ids[0], terminate: o.terminate ?? false, signal: 'SIGTERM' };
    await this.redis.publish(pidboxChannel(this.redis), broadcastMessage('revoke', args, o.destination ?? null));
  }

  /** LPUSH as kombu's `_put`, declaring the queue's binding once per process (as Celery does on publish). */
  async push(queue: string, priority: number, raw: string): Promise<void> {
    const pipe = this.redis.multi();
    if (!this.declared.has(queue)) {
      const b = bindingOf(queue);
      pipe.sadd(b.key, b.member);
    }
    pipe.lpush(queueListFor(queue, priority), raw);
    await pipe.exec();
    this.declared.add(queue);
  }

  async close(): Promise<void> {
    await this.backend.close();
    if (this.owned) await this.redis.quit().catch(() => this.redis.disconnect());
  }
}

export function createCeleryClient(o: CeleryClientOptions): CeleryClient {
  return new CeleryClient(o);
}
