/**
 * One Celery message through a TypeScript handler: validation, the run, the outcome; then `settle`,
 * which writes the outcome to the result backend, sends what follows (callbacks, errbacks, the rest
 * of a chain, the retry) and acknowledges the delivery, all in one MULTI.
 */
import { randomUUID } from 'node:crypto';
import { formatPath } from '../core/errors.ts';
import { type CheckableSchema, checkSchema } from '../core/schema-issues.ts';
import { MAX_TIMER_MS } from '../core/show.ts';
import { type CeleryExceptionInfo, exceptionInfo, type ResultBackend } from './backend.ts';
import {
  buildMessage,
  CeleryMessageError,
  type CelerySignature,
  type CeleryTaskMessage,
  isoUtc,
  KOMBU_SEP,
  queueListFor,
  bindingOf,
} from './protocol.ts';
import { addChordPart, type ChordSender } from './chord.ts';
import type { Claimed, Transport } from './transport.ts';
import type { CeleryTaskContext, RegisteredTask } from './task.ts';

/** Thrown by `ctx.retry()`: ends the attempt and sends the task again. */
export class CeleryRetry extends Error {
  override name = 'Retry';
  readonly eta: Date | undefined;
  readonly cause_: unknown;
  constructor(eta: Date | undefined, cause: unknown) {
    super('Retry in the future');
    this.eta = eta;
    this.cause_ = cause;
  }
}

export type Outcome =
  | { kind: 'success'; value: unknown }
  | { kind: 'failure'; error: unknown }
  | { kind: 'invalid'; error: unknown }
  | { kind: 'retry'; error: unknown; eta: Date }
  /** Not run (`expired`, `revoked` by id) or stopped (`terminated`): stored as REVOKED with the reason. */
  | { kind: 'revoked'; reason: 'expired' | 'revoked' | 'terminated' };

function validate(schema: CheckableSchema | undefined, value: unknown, root: string) {
  if (!schema) return value;
  const r = checkSchema(schema, value);
  if (r.ok) return r.value;
  const issues = r.issues.map((i) => `${formatPath(i.path, root)}: ${i.message}`);
  throw Object.assign(new Error(`invalid ${root}: ${issues.join('; ') || 'refused by the schema'}`), { name: 'ValueError' });
}

/** The message's `[hard, soft]` time limits in ms (Celery's `timelimit` header), each undefined if none. */
function timeLimits(msg: CeleryTaskMessage): { hard: number | undefined; soft: number | undefined } {
  const tl = (msg.envelope.headers as { timelimit?: unknown }).timelimit;
  // Past Node's longest timer (about 24.8 days) a timer fires at once: such a limit is no limit.
  const ms = (v: unknown) => (typeof v === 'number' && v > 0 && v * 1000 <= MAX_TIMER_MS ? v * 1000 : undefined);
  return Array.isArray(tl) ? { hard: ms(tl[0]), soft: ms(tl[1]) } : { hard: undefined, soft: undefined };
}

const limitError = (name: 'TimeLimitExceeded' | 'SoftTimeLimitExceeded', ms: number) =>
  Object.assign(new Error(`${name}(${ms / 1000})`), { name });

export async function runMessage(task: RegisteredTask, msg: CeleryTaskMessage, outer: AbortSignal): Promise<Outcome> {
  let args: unknown;
  let kwargs: unknown;
  try {
    args = validate(task.options.args as never, msg.args, 'args');
    kwargs = validate(task.options.kwargs as never, msg.kwargs, 'kwargs');
  } catch (error) {
    return { kind: 'invalid', error };
  }
  // The time limits abort ctx.signal: the soft one with SoftTimeLimitExceeded (Celery raises it in the
  // task; a handler that lets it through fails with it), the hard one with TimeLimitExceeded.
  const limits = timeLimits(msg);
  const limited = new AbortController();
  const signal = limits.hard || limits.soft ? AbortSignal.any([outer, limited.signal]) : outer;
  const ctx: CeleryTaskContext = {
    id: msg.id,
    name: msg.task,
    retries: msg.retries,
    rootId: msg.rootId,
    parentId: msg.parentId,
    signal,
    retry(o = {}) {
      const eta = o.eta ?? (o.countdown !== undefined ? new Date(Date.now() + o.countdown * 1000) : undefined);
      throw new CeleryRetry(eta, o.error);
    },
  };
  let timer: NodeJS.Timeout | undefined;
  let softTimer: NodeJS.Timeout | undefined;
  if (limits.soft && !(limits.hard && limits.hard <= limits.soft)) {
    const soft = limits.soft;
    softTimer = setTimeout(() => limited.abort(limitError('SoftTimeLimitExceeded', soft)), soft);
  }
  try {
    const run = Promise.resolve().then(() => task.handler(args as unknown[], kwargs as Record<string, unknown>, ctx));
    const hard = limits.hard;
    const value = hard
      ? await Promise.race([
          run,
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => {
              const error = limitError('TimeLimitExceeded', hard);
              limited.abort(error);
              reject(error);
            }, hard);
          }),
        ])
      : await run;
    return { kind: 'success', value: value === undefined ? null : value };
  } catch (err) {
    const retryAsked = err instanceof CeleryRetry;
    if (!retryAsked && !task.options.autoretry?.(err)) return { kind: 'failure', error: err };
    const cause = retryAsked ? (err.cause_ ?? err) : err;
    if (msg.retries >= (task.options.maxRetries ?? 3)) {
      const error =
        retryAsked && err.cause_ === undefined
          ? Object.assign(
              new Error(`Can't retry ${msg.task}[${msg.id}] args:${JSON.stringify(msg.args)} kwargs:${JSON.stringify(msg.kwargs)}`),
              {
                name: 'MaxRetriesExceededError',
              },
            )
          : cause;
      return { kind: 'failure', error };
    }
    const eta = (retryAsked ? err.eta : undefined) ?? new Date(Date.now() + (task.options.retryDelay ?? 180) * 1000);
    return { kind: 'retry', error: cause, eta };
  } finally {
    if (timer) clearTimeout(timer);
    if (softTimer) clearTimeout(softTimer);
  }
}

const CELERY_EXCEPTIONS = new Set([
  'MaxRetriesExceededError',
  'TimeLimitExceeded',
  'SoftTimeLimitExceeded',
  'NotRegistered',
  'Retry',
  'TaskRevokedError',
]);

/** The exception a failure is stored as in the result backend (and recorded in Errand's broker). */
export function celeryExceptionInfo(err: unknown): CeleryExceptionInfo {
  if (err instanceof CeleryMessageError) {
    const refused = /content type .* is refused/.test(err.message);
    return refused
      ? { exc_type: 'ContentDisallowed', exc_message: [err.message], exc_module: 'kombu.exceptions' }
      : { exc_type: 'ValueError', exc_message: [`not a valid Celery task message: ${err.message}`], exc_module: 'builtins' };
  }
  const i = exceptionInfo(err);
  return CELERY_EXCEPTIONS.has(i.exc_type) ? { ...i, exc_module: 'celery.exceptions' } : i;
}

export interface SettleContext {
  transport: Transport;
  backend: ResultBackend;
  hostname: string;
  /** Where a task this worker sends goes when its signature names no queue. */
  queueFor(task: string): string;
}

/** Where `sendSignature` sends: the worker's default queue, and the backend for what it cannot send. */
interface SendContext {
  /** The queue for a signature that names none (Celery's `task_routes`, else `task_default_queue`). */
  queueFor(task: string): string;
  backend: ResultBackend;
}

const sigList = (v: unknown): CelerySignature[] =>
  Array.isArray(v) ? (v as CelerySignature[]) : v && typeof v === 'object' ? [v as CelerySignature] : [];

/**
 * Sends `sig` with `prepend` before its own args (unless immutable), in `pipe`, as Celery's
 * `signature.apply_async` would: a plain task as one message; a chain (`celery.chain`) as its first
 * task with the rest to follow; a group (`celery.group`) as its tasks with the group id in their
 * `group` header; a chord (`celery.chord`) as its header tasks, the chord's size set for Celery's
 * Redis backend (see chord.ts) and the body in their embed. What it cannot send (a group or chord
 * followed by more of a chain, another canvas type) is stored FAILURE under the signature's id with
 * the reason, never dropped without a word.
 */
function sendSignature(
  pipe: ReturnType<Transport['ack']>,
  sig: CelerySignature,
  prepend: unknown[],
  parent: { id: string; rootId: string },
  to: SendContext,
  chain: CelerySignature[] | null = null,
  group?: { id: string; index: number },
): void {
  const o = sig.options ?? {};
  const kw = (sig.kwargs ?? {}) as Record<string, unknown>;
  const args = sig.immutable ? [] : prepend;
  const kind = sig.subtask_type ?? null;
  if (kind === 'chain' && Array.isArray(kw.tasks) && kw.tasks.length) {
    const [first, ...rest] = kw.tasks as CelerySignature[];
    sendSignature(pipe, first as CelerySignature, args, parent, to, [...(chain ?? []), ...rest.reverse()]);
    return;
  }
  if (kind === 'group' && Array.isArray(kw.tasks) && !chain?.length) {
    const gid = typeof o.task_id === 'string' ? o.task_id : randomUUID();
    (kw.tasks as CelerySignature[]).forEach((t, i) => {
      sendSignature(pipe, t, args, parent, to, null, { id: gid, index: i });
    });
    return;
  }
  if (kind === 'chord' && !chain?.length) {
    const header = kw.header as CelerySignature | CelerySignature[] | undefined;
    const headerSig = Array.isArray(header) ? undefined : header;
    const tasks = Array.isArray(header) ? header : (headerSig?.kwargs as { tasks?: unknown } | undefined)?.tasks;
    const body = kw.body as CelerySignature | undefined;
    if (Array.isArray(tasks) && tasks.length && body && typeof body === 'object') {
      const hid = headerSig?.options?.task_id;
      const gid = typeof hid === 'string' ? hid : typeof o.task_id === 'string' ? o.task_id : randomUUID();
      const size = `celery-taskset-meta-${gid}.s`;
      if (to.backend.expiresSeconds > 0) pipe.set(size, tasks.length, 'EX', to.backend.expiresSeconds);
      else pipe.set(size, tasks.length);
      (tasks as CelerySignature[]).forEach((t, i) => {
        const withBody = { ...t, options: { ...(t.options ?? {}), chord: t.options?.chord ?? body } };
        sendSignature(pipe, withBody, args, parent, to, null, { id: gid, index: i });
      });
      return;
    }
  }
  if (kind !== null && kind !== 'chain') {
    const id = typeof o.task_id === 'string' ? o.task_id : undefined;
    const what = chain?.length ? `a ${kind} followed by more of a chain` : `a ${kind} signature of this shape`;
    if (id)
      to.backend.storeIn(pipe, id, 'FAILURE', {
        exc_type: 'NotImplementedError',
        exc_module: 'builtins',
        exc_message: [`an Errand worker cannot send ${what} (${sig.task}); send it from Python, or as separate tasks`],
      });
    return;
  }
  const queue = typeof o.queue === 'string' ? o.queue : typeof o.routing_key === 'string' ? o.routing_key : to.queueFor(sig.task);
  const priority = typeof o.priority === 'number' ? o.priority : 0;
  const countdown = typeof o.countdown === 'number' ? o.countdown : undefined;
  const groupId = group?.id ?? (typeof o.group_id === 'string' ? o.group_id : null);
  const groupIndex = group?.index ?? (typeof o.group_index === 'number' ? o.group_index : null);
  const chord = o.chord && typeof o.chord === 'object' && !Array.isArray(o.chord) ? (o.chord as CelerySignature) : null;
  const env = buildMessage(sig.task, {
    id: typeof o.task_id === 'string' ? o.task_id : randomUUID(),
    args: sig.immutable ? (sig.args ?? []) : [...prepend, ...(sig.args ?? [])],
    kwargs: sig.kwargs ?? {},
    queue,
    priority,
    rootId: parent.rootId,
    parentId: parent.id,
    callbacks: sigList(o.link),
    errbacks: sigList(o.link_error),
    chain,
    group: groupId,
    groupIndex,
    chord,
    ...(countdown !== undefined ? { eta: new Date(Date.now() + countdown * 1000) } : {}),
  });
  const b = bindingOf(queue);
  pipe.sadd(b.key, b.member).lpush(queueListFor(queue, priority), JSON.stringify(env));
}

/** Sends `sig` after a chord's header (see chord.ts), from the chord's last part. */
export function chordSender(s: SettleContext): ChordSender {
  const to = { queueFor: s.queueFor, backend: s.backend };
  return {
    redis: s.transport.redis,
    backend: s.backend,
    send: (pipe, sig, prepend, parent) => sendSignature(pipe, sig, prepend, parent, to),
  };
}

/**
 * Stores the outcome, sends what follows and acknowledges, in one MULTI. Resolves with the group id
 * of a chord this task completed (its body is then to be sent with `fireChord`), else undefined.
 */
export async function settle(
  s: SettleContext,
  c: Claimed,
  msg: CeleryTaskMessage | undefined,
  outcome: Outcome,
): Promise<string | undefined> {
  const pipe = s.transport.ack(c.tag);
  let part: { state: 'SUCCESS' | 'FAILURE' | 'REVOKED'; result: unknown } | undefined;
  const to = { queueFor: s.queueFor, backend: s.backend };
  // A retry goes back where the message came from (its routing key, else the list it was taken from).
  const sameQueue = msg?.routingKey || (c.list.split(KOMBU_SEP)[0] as string);
  const extra = msg?.parentId ? { parent_id: msg.parentId } : {};
  switch (outcome.kind) {
    case 'success': {
      if (!msg) break;
      if (!msg.ignoreResult) s.backend.storeIn(pipe, msg.id, 'SUCCESS', outcome.value, extra);
      part = { state: 'SUCCESS', result: outcome.value };
      for (const cb of msg.embed.callbacks ?? []) sendSignature(pipe, cb, [outcome.value], msg, to);
      const chain = msg.embed.chain;
      if (chain?.length) sendSignature(pipe, chain[chain.length - 1] as CelerySignature, [outcome.value], msg, to, chain.slice(0, -1));
      break;
    }
    case 'failure':
    case 'invalid': {
      const id = msg?.id ?? (outcome.error instanceof CeleryMessageError ? outcome.error.taskId : undefined);
      if (!id) {
        pipe.lpush('_errand.celery.rejected', c.raw);
        break;
      }
      const e = outcome.error;
      part = { state: 'FAILURE', result: celeryExceptionInfo(e) };
      s.backend.storeIn(pipe, id, 'FAILURE', part.result, {
        ...extra,
        traceback: e instanceof Error && e.stack ? e.stack : null,
      });
      if (msg) for (const eb of msg.embed.errbacks ?? []) sendSignature(pipe, eb, [msg.id], msg, to);
      break;
    }
    case 'retry': {
      if (!msg) break;
      // Celery's retry sends the request again as it came (signature_from_request): time limits, group,
      // chord, shadow and custom headers stay; only the ETA, the retry count and the delivery change.
      const env = structuredClone(msg.envelope);
      env.headers.eta = isoUtc(outcome.eta);
      env.headers.retries = msg.retries + 1;
      delete env.headers.redelivered;
      env.properties.delivery_tag = randomUUID();
      env.properties.delivery_info = { exchange: msg.exchange, routing_key: sameQueue };
      pipe.lpush(queueListFor(sameQueue, msg.priority), JSON.stringify(env));
      s.backend.storeIn(pipe, msg.id, 'RETRY', celeryExceptionInfo(outcome.error), extra);
      break;
    }
    case 'revoked': {
      if (!msg) break;
      part = { state: 'REVOKED', result: { exc_type: 'TaskRevokedError', exc_message: [outcome.reason], exc_module: 'celery.exceptions' } };
      s.backend.storeIn(pipe, msg.id, 'REVOKED', part.result, extra);
      break;
    }
  }
  // Last in the MULTI, so that its reply is the last one.
  const gid = msg && part ? addChordPart(pipe, msg, part.state, part.result, s.backend.expiresSeconds) : undefined;
  const results = await pipe.exec();
  const failed = results?.find(([err]) => err);
  if (!results || failed) throw failed?.[0] ?? new Error('the settling transaction was aborted');
  return gid !== undefined && results.at(-1)?.[1] === 1 ? gid : undefined;
}
