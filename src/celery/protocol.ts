/**
 * Celery's task message, protocol version 2, as kombu's Redis transport stores it: one JSON envelope
 * per list element (`{body, content-encoding, content-type, headers, properties}`), the body being
 * base64 of the JSON `[args, kwargs, embed]`. JSON only: pickle, yaml and msgpack bodies are refused
 * (a pickle runs arbitrary code when loaded), with the reason in a `CeleryMessageError`.
 *
 * Reference: Celery's `celery/app/amqp.py` (`as_task_v2`), `docs/internals/protocol.rst`, and kombu's
 * `kombu/transport/redis.py` (queues, priorities, `unacked`).
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';

/** A task signature as Celery serialises it (`celery.canvas.Signature` as a dict). */
export interface CelerySignature {
  task: string;
  args?: unknown[];
  kwargs?: Record<string, unknown>;
  options?: Record<string, unknown>;
  subtask_type?: string | null;
  immutable?: boolean;
  chord_size?: number | null;
}

/** The third element of the body: what to run after the task. */
export interface CeleryEmbed {
  callbacks: CelerySignature[] | null;
  errbacks: CelerySignature[] | null;
  /** The rest of a chain, stored reversed: the last element runs next. */
  chain: CelerySignature[] | null;
  chord: CelerySignature | null;
}

export interface CeleryHeaders {
  lang: string;
  task: string;
  id: string;
  shadow: string | null;
  eta: string | null;
  expires: string | null;
  group: string | null;
  group_index: number | null;
  retries: number;
  timelimit: [number | null, number | null];
  root_id: string;
  parent_id: string | null;
  argsrepr: string;
  kwargsrepr: string;
  origin: string;
  ignore_result: boolean;
  redelivered?: boolean;
  [extra: string]: unknown;
}

export interface CeleryEnvelope {
  body: string;
  'content-encoding': string;
  'content-type': string;
  headers: CeleryHeaders;
  properties: {
    correlation_id: string;
    reply_to: string;
    delivery_mode: number;
    delivery_info: { exchange: string; routing_key: string; redelivered?: boolean };
    priority: number;
    body_encoding: string;
    delivery_tag: string;
    [extra: string]: unknown;
  };
}

/** A decoded task message. */
export interface CeleryTaskMessage {
  envelope: CeleryEnvelope;
  id: string;
  task: string;
  args: unknown[];
  kwargs: Record<string, unknown>;
  embed: CeleryEmbed;
  retries: number;
  /** Due time, or undefined to run now. */
  eta: Date | undefined;
  /** After this time the task is not run (it is marked REVOKED). */
  expires: Date | undefined;
  rootId: string;
  parentId: string | null;
  priority: number;
  deliveryTag: string;
  routingKey: string;
  exchange: string;
  ignoreResult: boolean;
}

/** A message that cannot be read as a Celery protocol 2 JSON task message; `reason` says why. */
export class CeleryMessageError extends Error {
  override name = 'CeleryMessageError';
  /** The task id, when the headers could be read (so the failure can be written to the backend). */
  readonly taskId: string | undefined;
  readonly task: string | undefined;
  constructor(message: string, ids: { taskId?: string | undefined; task?: string | undefined } = {}) {
    super(message);
    this.taskId = ids.taskId;
    this.task = ids.task;
  }
}

const PRIORITY_STEPS = [0, 3, 6, 9] as const;
/** kombu's separator between a queue's name and its priority step (`celery\x06\x163`). */
export const KOMBU_SEP = '\x06\x16';

/** The list that holds messages of `queue` at `priority` (0..9; 0 is served first on Redis). */
export function queueListFor(queue: string, priority: number): string {
  const p = Math.max(0, Math.min(9, Math.trunc(priority)));
  let step = 0;
  for (const s of PRIORITY_STEPS) if (s <= p) step = s;
  return step === 0 ? queue : `${queue}${KOMBU_SEP}${step}`;
}

/** The lists of `queue`, in the order kombu serves them (priority 0 first). */
export function queueLists(queue: string): string[] {
  return PRIORITY_STEPS.map((s) => (s === 0 ? queue : `${queue}${KOMBU_SEP}${s}`));
}

/** kombu's binding entry for the default exchange (`_kombu.binding.<queue>`), as Celery declares it. */
export function bindingOf(queue: string): { key: string; member: string } {
  return { key: `_kombu.binding.${queue}`, member: [queue, '', queue].join(KOMBU_SEP) };
}

/** Python's `datetime.isoformat()` for an aware UTC time, as Celery writes `eta` and `expires`. */
export function isoUtc(d: Date): string {
  return d.toISOString().replace(/Z$/, '+00:00');
}

/** Parses an ISO 8601 time as Celery writes it; naive times are taken as UTC (Celery's default `enable_utc`). */
export function parseIsoTime(value: string, what: string, ids: { taskId?: string; task?: string }): Date {
  const naive = !/(Z|[+-]\d\d:?\d\d)$/i.test(value);
  // Python writes microseconds; Date keeps milliseconds.
  const text = value.replace(/(\.\d{3})\d+/, '$1') + (naive ? 'Z' : '');
  const d = new Date(text);
  if (Number.isNaN(d.getTime())) throw new CeleryMessageError(`${what} is not an ISO 8601 time: ${JSON.stringify(value)}`, ids);
  return d;
}

/** A short `repr`-like rendering for `argsrepr`/`kwargsrepr` (Celery shows them in logs and Flower). */
function repr(value: unknown, max = 1024): string {
  const text = JSON.stringify(value) ?? 'None';
  return text.length > max ? `${text.slice(0, max - 3)}...` : text;
}

export interface BuildOptions {
  id?: string;
  args?: unknown[];
  kwargs?: Record<string, unknown>;
  eta?: Date;
  expires?: Date;
  retries?: number;
  rootId?: string;
  parentId?: string | null;
  priority?: number;
  queue: string;
  callbacks?: CelerySignature[] | null;
  errbacks?: CelerySignature[] | null;
  chain?: CelerySignature[] | null;
  timeLimit?: [number | null, number | null];
  ignoreResult?: boolean;
  group?: string | null;
  groupIndex?: number | null;
  /** The chord body, for a chord's header task (see chord.ts). */
  chord?: CelerySignature | null;
  shadow?: string | null;
}

const ORIGIN = `${process.pid}@${hostname()}`;

/** Builds the envelope Celery 5's `send_task` would push for this task. */
export function buildMessage(task: string, o: BuildOptions): CeleryEnvelope {
  const id = o.id ?? randomUUID();
  const args = o.args ?? [];
  const kwargs = o.kwargs ?? {};
  const embed: CeleryEmbed = {
    callbacks: o.callbacks?.length ? o.callbacks : null,
    errbacks: o.errbacks?.length ? o.errbacks : null,
    chain: o.chain?.length ? o.chain : null,
    chord: o.chord ?? null,
  };
  const body = Buffer.from(JSON.stringify([args, kwargs, embed]), 'utf8').toString('base64');
  return {
    body,
    'content-encoding': 'utf-8',
    'content-type': 'application/json',
    headers: {
      lang: 'py',
      task,
      id,
      shadow: o.shadow ?? null,
      eta: o.eta ? isoUtc(o.eta) : null,
      expires: o.expires ? isoUtc(o.expires) : null,
      group: o.group ?? null,
      group_index: o.groupIndex ?? null,
      retries: o.retries ?? 0,
      timelimit: o.timeLimit ?? [null, null],
      root_id: o.rootId ?? id,
      parent_id: o.parentId ?? null,
      argsrepr: repr(args),
      kwargsrepr: repr(kwargs),
      origin: ORIGIN,
      ignore_result: o.ignoreResult ?? false,
    },
    properties: {
      correlation_id: id,
      reply_to: '',
      delivery_mode: 2,
      delivery_info: { exchange: '', routing_key: o.queue },
      priority: o.priority ?? 0,
      body_encoding: 'base64',
      delivery_tag: randomUUID(),
    },
  };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function signatures(v: unknown, what: string, ids: { taskId?: string; task?: string }): CelerySignature[] | null {
  if (v === null || v === undefined) return null;
  if (!Array.isArray(v)) throw new CeleryMessageError(`embed.${what} is not a list`, ids);
  return v.map((s, i) => {
    if (!isRecord(s) || typeof s.task !== 'string') {
      throw new CeleryMessageError(`embed.${what}[${i}] is not a task signature (an object with a "task" name)`, ids);
    }
    return s as unknown as CelerySignature;
  });
}

/** Decodes one raw list element. Throws `CeleryMessageError` with the reason for anything it cannot run. */
export function decodeMessage(raw: string): CeleryTaskMessage {
  let envelope: unknown;
  try {
    envelope = JSON.parse(raw);
  } catch {
    throw new CeleryMessageError(`the message is not JSON (kombu's Redis transport stores JSON envelopes): ${raw.slice(0, 80)}`);
  }
  if (!isRecord(envelope) || !isRecord(envelope.headers) || !isRecord(envelope.properties)) {
    throw new CeleryMessageError('the message has no headers or properties: not a Celery task message');
  }
  const h = envelope.headers;
  const ids = {
    ...(typeof h.id === 'string' ? { taskId: h.id } : {}),
    ...(typeof h.task === 'string' ? { task: h.task } : {}),
  };
  if (typeof h.task !== 'string' || typeof h.id !== 'string') {
    const v1 =
      isRecord(envelope) && typeof envelope.body === 'string'
        ? ' (protocol 1 messages carry them in the body; only protocol 2 is read)'
        : '';
    throw new CeleryMessageError(`the headers have no task name or id${v1}`, ids);
  }
  const contentType = envelope['content-type'];
  if (contentType !== 'application/json') {
    const unsafe = /pickle|python-serialize/i.test(String(contentType)) ? ' (pickle runs arbitrary code when loaded)' : '';
    throw new CeleryMessageError(
      `content type ${JSON.stringify(contentType)} is refused: only JSON (task_serializer='json', Celery's default) is accepted${unsafe}`,
      ids,
    );
  }
  const enc = envelope['content-encoding'];
  if (enc !== undefined && enc !== null && !/^utf-?8$/i.test(String(enc))) {
    throw new CeleryMessageError(`content encoding ${JSON.stringify(enc)} is not supported (utf-8 only)`, ids);
  }
  const props = envelope.properties;
  if (typeof envelope.body !== 'string') throw new CeleryMessageError('the body is not a string', ids);
  const bodyText =
    props.body_encoding === 'base64'
      ? Buffer.from(envelope.body, 'base64').toString('utf8')
      : props.body_encoding === undefined || props.body_encoding === null
        ? envelope.body
        : (() => {
            throw new CeleryMessageError(`body encoding ${JSON.stringify(props.body_encoding)} is not supported (base64 only)`, ids);
          })();
  let body: unknown;
  try {
    body = JSON.parse(bodyText);
  } catch {
    throw new CeleryMessageError('the body is not valid JSON', ids);
  }
  if (!Array.isArray(body) || body.length < 2) throw new CeleryMessageError('the body is not [args, kwargs, embed] (protocol 2)', ids);
  const [args, kwargs, embedRaw] = body as [unknown, unknown, unknown];
  if (!Array.isArray(args)) throw new CeleryMessageError('args (body[0]) is not a list', ids);
  if (!isRecord(kwargs)) throw new CeleryMessageError('kwargs (body[1]) is not an object', ids);
  const e = isRecord(embedRaw) ? embedRaw : {};
  const embed: CeleryEmbed = {
    callbacks: signatures(e.callbacks, 'callbacks', ids),
    errbacks: signatures(e.errbacks, 'errbacks', ids),
    chain: signatures(e.chain, 'chain', ids),
    chord: isRecord(e.chord) ? (e.chord as unknown as CelerySignature) : null,
  };
  const di = isRecord(props.delivery_info) ? props.delivery_info : {};
  const retries = typeof h.retries === 'number' ? h.retries : 0;
  return {
    envelope: envelope as unknown as CeleryEnvelope,
    id: h.id,
    task: h.task,
    args,
    kwargs,
    embed,
    retries,
    eta: typeof h.eta === 'string' ? parseIsoTime(h.eta, 'eta', ids) : undefined,
    expires: typeof h.expires === 'string' ? parseIsoTime(h.expires, 'expires', ids) : undefined,
    rootId: typeof h.root_id === 'string' ? h.root_id : h.id,
    parentId: typeof h.parent_id === 'string' ? h.parent_id : null,
    priority: typeof props.priority === 'number' ? props.priority : 0,
    deliveryTag: typeof props.delivery_tag === 'string' ? props.delivery_tag : randomUUID(),
    routingKey: typeof di.routing_key === 'string' ? di.routing_key : '',
    exchange: typeof di.exchange === 'string' ? di.exchange : '',
    ignoreResult: h.ignore_result === true,
  };
}
