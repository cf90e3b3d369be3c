/**
 * Just enough of Celery's remote control (kombu's "pidbox" mailbox) for `celery inspect ping` and
 * `celery status` to list Errand workers, `celery inspect registered`, `active` and `revoked` to show
 * their tasks, and `revoke` (`AsyncResult.revoke()`, `celery control revoke`) to reach them.
 *
 * On Redis, a broadcast is PUBLISHed on `/<db>.celery.pidbox` (kombu's fanout prefix and the
 * `celery.pidbox` exchange) as a JSON envelope whose body is `{method, arguments, destination,
 * reply_to: {exchange, routing_key}, ticket}`. A reply is an envelope with header `ticket`, pushed
 * onto the queue that `_kombu.binding.reply.celery.pidbox` binds to the reply routing key.
 * Other commands (`inspect active`, `stats`, `control rate_limit`, ...) get no answer.
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { KOMBU_SEP } from './protocol.ts';

interface ControlBody {
  method?: unknown;
  arguments?: Record<string, unknown> | null;
  destination?: unknown;
  reply_to?: { exchange?: unknown; routing_key?: unknown } | null;
  ticket?: unknown;
}

/** What the worker answers the commands with. */
export interface PidboxWorker {
  /** The task names it serves (`inspect registered`). */
  tasks(): string[];
  /** Flags `ids` as revoked (`control revoke`); returns Celery's reply text. */
  revoke(ids: string[], terminate: boolean): string;
  /** The tasks running now (`inspect active`). */
  active(): unknown[];
  /** The revoked ids kept (`inspect revoked`). */
  revoked(): string[];
}

/** The channel kombu's Redis transport broadcasts Celery's remote control on (`/<db>.celery.pidbox`). */
export function pidboxChannel(redis: Redis): string {
  return `/${(redis.options as { db?: number }).db ?? 0}.celery.pidbox`;
}

/**
 * A broadcast as Celery's `app.control.broadcast(method, arguments, destination)` publishes it, with no
 * reply asked; `expires` (seconds from now) is when workers stop acting on it.
 */
export function broadcastMessage(method: string, args: Record<string, unknown>, destination: string[] | null, expiresS = 60): string {
  const body = { method, arguments: args, destination, pattern: null, matcher: null };
  return JSON.stringify({
    body: Buffer.from(JSON.stringify(body)).toString('base64'),
    'content-encoding': 'utf-8',
    'content-type': 'application/json',
    headers: { clock: 1, expires: Date.now() / 1000 + expiresS },
    properties: {
      delivery_mode: 2,
      delivery_info: { exchange: 'celery.pidbox', routing_key: '' },
      priority: 0,
      body_encoding: 'base64',
      delivery_tag: randomUUID(),
    },
  });
}

export class Pidbox {
  private sub: Redis | undefined;
  private clock = 0;
  private readonly redis: Redis;
  private readonly hostname: string;
  private readonly worker: PidboxWorker;

  constructor(redis: Redis, hostname: string, worker: PidboxWorker) {
    this.redis = redis;
    this.hostname = hostname;
    this.worker = worker;
  }

  get channel(): string {
    return pidboxChannel(this.redis);
  }

  async start(): Promise<void> {
    const sub = this.redis.duplicate();
    sub.on('error', () => {});
    sub.on('message', (_channel: string, message: string) => {
      this.handle(message).catch(() => {}); // a malformed broadcast or a reply queue gone: nothing to do
    });
    await sub.subscribe(this.channel);
    this.sub = sub;
  }

  private reply(method: string, args: Record<string, unknown>): unknown {
    if (method === 'ping') return { ok: 'pong' };
    if (method === 'registered') return this.worker.tasks();
    if (method === 'active') return this.worker.active();
    if (method === 'revoked') return this.worker.revoked();
    if (method === 'revoke') {
      // Celery's `task_id` is one id or a list of them.
      const ids = (Array.isArray(args.task_id) ? args.task_id : [args.task_id]).filter((id): id is string => typeof id === 'string');
      return { ok: this.worker.revoke(ids, args.terminate === true) };
    }
    return undefined;
  }

  private async handle(message: string): Promise<void> {
    const envelope = JSON.parse(message) as { body?: string; 'content-type'?: string; properties?: { body_encoding?: string } };
    if (envelope['content-type'] !== 'application/json' || typeof envelope.body !== 'string') return;
    const text = envelope.properties?.body_encoding === 'base64' ? Buffer.from(envelope.body, 'base64').toString('utf8') : envelope.body;
    const body = JSON.parse(text) as ControlBody;
    if (Array.isArray(body.destination) && body.destination.length && !body.destination.includes(this.hostname)) return;
    if (typeof body.method !== 'string') return;
    const answer = this.reply(body.method, body.arguments && typeof body.arguments === 'object' ? body.arguments : {});
    const rk = body.reply_to?.routing_key;
    const exchange = body.reply_to?.exchange;
    if (answer === undefined || typeof rk !== 'string' || typeof exchange !== 'string') return;
    const queues = (await this.redis.smembers(`_kombu.binding.${exchange}`))
      .map((m) => m.split(KOMBU_SEP))
      .filter(([key]) => key === rk)
      .map(([, , queue]) => queue)
      .filter((q): q is string => Boolean(q));
    if (queues.length === 0) return;
    const reply = JSON.stringify({
      body: Buffer.from(JSON.stringify({ [this.hostname]: answer })).toString('base64'),
      'content-encoding': 'utf-8',
      'content-type': 'application/json',
      headers: { ticket: body.ticket ?? null, clock: ++this.clock },
      properties: {
        delivery_mode: 1,
        delivery_info: { exchange, routing_key: rk },
        priority: 0,
        body_encoding: 'base64',
        delivery_tag: randomUUID(),
      },
    });
    const pipe = this.redis.multi();
    for (const q of queues) pipe.lpush(q, reply);
    await pipe.exec();
  }

  async stop(): Promise<void> {
    const sub = this.sub;
    this.sub = undefined;
    if (sub) await sub.quit().catch(() => sub.disconnect());
  }
}
