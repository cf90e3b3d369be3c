/**
 * Celery's Redis result backend: one key `celery-task-meta-<id>` per task holding the JSON meta
 * (`status`, `result`, `traceback`, `children`, `date_done`, `task_id`), set with an expiry and
 * published on a channel of the same name, which is what a waiting `AsyncResult.get()` listens to.
 *
 * Reads: `state`/`meta` (no key is PENDING, as in Celery), `wait` (subscribes first, then reads the
 * key, so a result stored in between is not missed; no polling). Writes: `store`, in one Lua script
 * that never overwrites a SUCCESS (Celery's own rule against a lost worker's late duplicate).
 */
import type { ChainableCommander, Redis } from 'ioredis';

export const TASK_META_PREFIX = 'celery-task-meta-';
export const READY_STATES = new Set(['SUCCESS', 'FAILURE', 'REVOKED']);

export type CeleryState = 'PENDING' | 'RECEIVED' | 'STARTED' | 'RETRY' | 'SUCCESS' | 'FAILURE' | 'REVOKED' | (string & {});

/** A stored exception, as Celery's JSON backends write it (`prepare_exception`). */
export interface CeleryExceptionInfo {
  exc_type: string;
  exc_message: unknown;
  exc_module: string | null;
}

export interface CeleryMeta {
  status: CeleryState;
  result: unknown;
  traceback: string | null;
  children: unknown[];
  date_done: string | null;
  task_id: string;
  parent_id?: string;
  [extra: string]: unknown;
}

/** A task that ended in FAILURE (or was REVOKED), with the exception's Python type, module and message. */
export class CeleryTaskError extends Error {
  override name = 'CeleryTaskError';
  readonly taskId: string;
  readonly state: CeleryState;
  /** The exception's type name, as Python wrote it (`ValueError`, `SMTPRecipientsRefused`, ...). */
  readonly excType: string;
  readonly excModule: string | null;
  /** The exception's arguments (`exc.args`), as stored. */
  readonly excArgs: unknown[];
  readonly traceback: string | null;
  constructor(taskId: string, state: CeleryState, info: CeleryExceptionInfo | undefined, traceback: string | null) {
    const excType = info?.exc_type ?? (state === 'REVOKED' ? 'TaskRevokedError' : 'Exception');
    const args = Array.isArray(info?.exc_message)
      ? (info.exc_message as unknown[])
      : info?.exc_message === undefined
        ? []
        : [info.exc_message];
    const text = args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(', ');
    super(`Celery task ${taskId} ${state === 'REVOKED' ? 'was revoked' : 'failed'}: ${excType}${text ? `: ${text}` : ''}`);
    this.taskId = taskId;
    this.state = state;
    this.excType = excType;
    this.excModule = info?.exc_module ?? null;
    this.excArgs = args;
    this.traceback = traceback;
  }
  /** The exception's message as Python's `str(exc)` would show it for one argument. */
  get excMessage(): string {
    return this.excArgs.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(', ');
  }
}

/** Waiting for a result ran past its limit. */
export class CeleryTimeoutError extends Error {
  override name = 'CeleryTimeoutError';
}

// KEYS[1] the meta key; ARGV[1] the JSON meta, ARGV[2] expiry in seconds (0: none).
// Returns 1 when stored and published, 0 when a SUCCESS was already there (kept).
const STORE_LUA = `
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, m = pcall(cjson.decode, cur)
  if ok and type(m) == 'table' and m['status'] == 'SUCCESS' then return 0 end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
`;

/** Python's `datetime.utcnow().isoformat()` (naive UTC, microseconds), as Celery writes `date_done`. */
function pyUtcNow(): string {
  return `${new Date().toISOString().slice(0, -1)}000`;
}

export function parseMeta(id: string, raw: string | null): CeleryMeta {
  if (raw === null) return { status: 'PENDING', result: null, traceback: null, children: [], date_done: null, task_id: id };
  let meta: unknown;
  try {
    meta = JSON.parse(raw);
  } catch {
    throw new Error(`${TASK_META_PREFIX}${id} does not hold JSON (is the result backend's serializer pickle? only JSON is read)`);
  }
  if (typeof meta !== 'object' || meta === null || typeof (meta as CeleryMeta).status !== 'string') {
    throw new Error(`${TASK_META_PREFIX}${id} is not a Celery task meta (no "status")`);
  }
  return meta as CeleryMeta;
}

export class ResultBackend {
  private subscriber: Redis | undefined;
  private readonly waiters = new Map<string, Set<(meta: CeleryMeta) => void>>();

  private readonly redis: Redis;
  /** Expiry of stored results in seconds (Celery's `result_expires`, default one day); 0 keeps them. */
  readonly expiresSeconds: number;

  constructor(redis: Redis, expiresSeconds = 86_400) {
    this.redis = redis;
    this.expiresSeconds = expiresSeconds;
  }

  async meta(id: string): Promise<CeleryMeta> {
    return parseMeta(id, await this.redis.get(TASK_META_PREFIX + id));
  }

  async store(id: string, status: CeleryState, result: unknown, extra: Partial<CeleryMeta> = {}): Promise<boolean> {
    const r = await this.redis.eval(
      STORE_LUA,
      1,
      TASK_META_PREFIX + id,
      this.encode(id, status, result, extra),
      String(this.expiresSeconds),
    );
    return r === 1;
  }

  /** Adds the store of `store()` to a MULTI, so that it happens with the acknowledgement or not at all. */
  storeIn(pipe: ChainableCommander, id: string, status: CeleryState, result: unknown, extra: Partial<CeleryMeta> = {}): void {
    pipe.eval(STORE_LUA, 1, TASK_META_PREFIX + id, this.encode(id, status, result, extra), String(this.expiresSeconds));
  }

  private encode(id: string, status: CeleryState, result: unknown, extra: Partial<CeleryMeta>): string {
    const meta: CeleryMeta = {
      status,
      result,
      traceback: null,
      children: [],
      date_done: READY_STATES.has(status) ? pyUtcNow() : null,
      ...extra,
      task_id: id,
    };
    return JSON.stringify(meta);
  }

  /** Resolves with the meta once the task is in a ready state (SUCCESS, FAILURE, REVOKED). */
  async wait(id: string, timeoutMs?: number): Promise<CeleryMeta> {
    const channel = TASK_META_PREFIX + id;
    const sub = await this.subscriberConnection();
    let resolveFn!: (m: CeleryMeta) => void;
    const ready = new Promise<CeleryMeta>((resolve) => {
      resolveFn = resolve;
    });
    let set = this.waiters.get(channel);
    const first = !set;
    if (!set) {
      set = new Set();
      this.waiters.set(channel, set);
    }
    set.add(resolveFn);
    let timer: NodeJS.Timeout | undefined;
    try {
      if (first) await sub.subscribe(channel);
      const now = await this.meta(id);
      if (READY_STATES.has(now.status)) return now;
      if (timeoutMs === undefined) return await ready;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new CeleryTimeoutError(`no result for Celery task ${id} within ${timeoutMs} ms`)), timeoutMs);
      });
      return await Promise.race([ready, timeout]);
    } finally {
      if (timer) clearTimeout(timer);
      set.delete(resolveFn);
      if (set.size === 0 && this.waiters.get(channel) === set) {
        this.waiters.delete(channel);
        sub.unsubscribe(channel).catch(() => {});
      }
    }
  }

  private async subscriberConnection(): Promise<Redis> {
    if (this.subscriber) return this.subscriber;
    const sub = this.redis.duplicate();
    sub.on('error', () => {}); // reconnects on its own; waits carry their own timeouts
    sub.on('message', (channel: string, message: string) => {
      const set = this.waiters.get(channel);
      if (!set) return;
      let meta: CeleryMeta;
      try {
        meta = parseMeta(channel.slice(TASK_META_PREFIX.length), message);
      } catch {
        return;
      }
      if (!READY_STATES.has(meta.status)) return;
      for (const resolve of set) resolve(meta);
    });
    this.subscriber = sub;
    return sub;
  }

  async close(): Promise<void> {
    const sub = this.subscriber;
    this.subscriber = undefined;
    if (sub) await sub.quit().catch(() => sub.disconnect());
  }
}

/** The value of a ready meta: the result on SUCCESS, else throws `CeleryTaskError`. */
export function resultOfMeta(meta: CeleryMeta): unknown {
  if (meta.status === 'SUCCESS') return meta.result;
  throw new CeleryTaskError(meta.task_id, meta.status, meta.result as CeleryExceptionInfo | undefined, meta.traceback);
}

const PY_BUILTIN_ERRORS = new Set([
  'Exception',
  'ValueError',
  'TypeError',
  'KeyError',
  'IndexError',
  'RuntimeError',
  'LookupError',
  'AttributeError',
  'NotImplementedError',
  'TimeoutError',
  'ConnectionError',
  'PermissionError',
  'FileNotFoundError',
  'OSError',
  'ZeroDivisionError',
  'ArithmeticError',
  'AssertionError',
]);

/**
 * A JavaScript error as Celery's JSON backends store an exception: the error's name as `exc_type`
 * (in module `builtins` when Python has it, so Python raises that very class; otherwise no module,
 * and Python makes a class of that name), its message as the single argument. `Error` becomes
 * Python's `Exception`.
 */
export function exceptionInfo(err: unknown): CeleryExceptionInfo {
  const e = err instanceof Error ? err : new Error(String(err));
  const name = e.name === 'Error' ? 'Exception' : /^[A-Za-z_][A-Za-z0-9_]*$/.test(e.name) ? e.name : 'Exception';
  return { exc_type: name, exc_message: [e.message], exc_module: PY_BUILTIN_ERRORS.has(name) ? 'builtins' : null };
}
