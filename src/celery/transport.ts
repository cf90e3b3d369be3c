/**
 * kombu's Redis transport, the consumer's side, with its acknowledgement emulation:
 *
 * - a delivered message is recorded in the `unacked` hash (delivery tag -> JSON `[payload, exchange,
 *   routing_key]`) and the `unacked_index` sorted set (delivery tag scored by delivery time, seconds);
 * - acknowledging removes both entries;
 * - a message whose score is older than the visibility timeout is restored to its queue (RPUSH, the
 *   end consumers pop from) with `redelivered` set, by whichever worker (Python or Errand) looks first.
 *
 * Unlike kombu (BRPOP, then a second round trip to record the delivery), taking a message and
 * recording it are one Lua script, so a worker killed in between loses nothing. While a handler
 * runs, its score is renewed, so a long task is not redelivered under a live worker.
 *
 * Messages with an ETA are not held in memory (Celery's way, which on Redis redelivers any ETA past
 * the visibility timeout): they move atomically from `unacked` to a sorted set of their own
 * (`_errand.celery.eta.<list>`) and back to their list when due.
 */
import type { Redis } from 'ioredis';
import { KOMBU_SEP, queueListFor, queueLists } from './protocol.ts';

export const UNACKED = 'unacked';
export const UNACKED_INDEX = 'unacked_index';
export const REJECTED = '_errand.celery.rejected';
export const etaKey = (list: string) => `_errand.celery.eta.${list}`;

// KEYS: unacked, unacked_index, then the lists to take from, in order. ARGV[1]: now (seconds),
// ARGV[2]: at most this many messages. Returns a flat array of {raw, tag, list} triples (empty:
// nothing). An element that is not a JSON object with properties is returned with tag '' and not
// recorded (the caller moves it to the rejected list).
const CLAIM = `
local out = {}
local max = tonumber(ARGV[2])
local i = 3
while i <= #KEYS and #out < max * 3 do
  local raw = redis.call('RPOP', KEYS[i])
  if not raw then
    i = i + 1
  else
    local ok, m = pcall(cjson.decode, raw)
    local tag = ''
    if ok and type(m) == 'table' and type(m['properties']) == 'table' then
      local p = m['properties']
      tag = p['delivery_tag']
      if type(tag) ~= 'string' then
        tag = (type(m['headers']) == 'table' and type(m['headers']['id']) == 'string') and m['headers']['id'] or ''
      end
      if tag ~= '' then
        local di = type(p['delivery_info']) == 'table' and p['delivery_info'] or {}
        local ex = type(di['exchange']) == 'string' and di['exchange'] or ''
        local rk = type(di['routing_key']) == 'string' and di['routing_key'] or KEYS[i]
        redis.call('ZADD', KEYS[2], ARGV[1], tag)
        redis.call('HSET', KEYS[1], tag, '[' .. raw .. ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']')
      end
    end
    out[#out + 1] = raw
    out[#out + 1] = tag
    out[#out + 1] = KEYS[i]
  end
end
return out
`;

// KEYS[1] unacked, KEYS[2] unacked_index, KEYS[3] the ETA set. ARGV: tag, due (ms), raw.
// Moves a delivered message to the ETA set. Returns 1, or 0 if it was no longer unacked (restored).
const SCHEDULE = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
`;

// KEYS[1] the ETA set, KEYS[2] its list. ARGV[1] now (ms), ARGV[2] max count.
// Moves due messages to the consuming end of the list. Returns how many, and the next due time (ms, or -1).
const PROMOTE = `
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, raw in ipairs(due) do
  redis.call('ZREM', KEYS[1], raw)
  redis.call('RPUSH', KEYS[2], raw)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, nxt[2] or '-1'}
`;

// KEYS[1] unacked, KEYS[2] unacked_index, KEYS[3] the list. ARGV: tag, the unacked value read, the
// payload to push. Restores only if the entry is unchanged (another worker may have restored it).
const RESTORE = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if cur ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[3])
return 1
`;

export interface Claimed {
  raw: string;
  /** '' when the element could not be read as a message at all. */
  tag: string;
  list: string;
}

export class Transport {
  readonly redis: Redis;
  readonly queues: string[];
  constructor(redis: Redis, queues: string[]) {
    this.redis = redis;
    this.queues = queues;
    redis.defineCommand('celeryClaim', { lua: CLAIM });
    redis.defineCommand('celerySchedule', { numberOfKeys: 3, lua: SCHEDULE });
    redis.defineCommand('celeryPromote', { numberOfKeys: 2, lua: PROMOTE });
    redis.defineCommand('celeryRestore', { numberOfKeys: 3, lua: RESTORE });
  }

  private get cmd() {
    return this.redis as unknown as Record<string, (...a: (string | number)[]) => Promise<unknown>>;
  }

  /** Every list served, in order: each queue's priority lists 0, 3, 6, 9. */
  get lists(): string[] {
    return this.queues.flatMap(queueLists);
  }

  /** Takes up to `max` messages, highest priority first, each recorded in `unacked` in the same script. */
  async claim(max = 1): Promise<Claimed[]> {
    const lists = this.lists;
    const r = (await this.cmd.celeryClaim!(2 + lists.length, UNACKED, UNACKED_INDEX, ...lists, Date.now() / 1000, max)) as string[];
    const out: Claimed[] = [];
    for (let i = 0; i + 2 < r.length; i += 3) out.push({ raw: r[i] as string, tag: r[i + 1] as string, list: r[i + 2] as string });
    return out;
  }

  /** A MULTI that acknowledges `tag` when executed; the caller adds its own effects before `exec()`. */
  ack(tag: string, pipe = this.redis.multi()) {
    return pipe.zrem(UNACKED_INDEX, tag).hdel(UNACKED, tag);
  }

  /** Marks in-flight deliveries as alive (their visibility timeout starts again). */
  async renew(tags: string[]): Promise<void> {
    if (tags.length === 0) return;
    const now = Date.now() / 1000;
    await this.redis.zadd(UNACKED_INDEX, 'XX', ...tags.flatMap((t) => [now, t]));
  }

  async schedule(tag: string, list: string, dueMs: number, raw: string): Promise<boolean> {
    return (await this.cmd.celerySchedule!(UNACKED, UNACKED_INDEX, etaKey(list), tag, dueMs, raw)) === 1;
  }

  /** Moves due ETA messages back to their lists; resolves with the next due time (ms) or undefined. */
  async promote(): Promise<number | undefined> {
    let next: number | undefined;
    for (const list of this.lists) {
      const [, n] = (await this.cmd.celeryPromote!(etaKey(list), list, Date.now(), 1000)) as [number, string];
      const due = Number(n);
      if (due >= 0 && (next === undefined || due < next)) next = due;
    }
    return next;
  }

  /**
   * Restores deliveries older than `visibilityMs` (kombu's `restore_visible`): at most `limit` per
   * call. Resolves with how many were put back.
   */
  async restoreVisible(visibilityMs: number, limit = 100): Promise<number> {
    const ceil = (Date.now() - visibilityMs) / 1000;
    const tags = await this.redis.zrangebyscore(UNACKED_INDEX, 0, ceil, 'LIMIT', 0, limit);
    let restored = 0;
    for (const tag of tags) {
      const cur = await this.redis.hget(UNACKED, tag);
      if (cur === null) {
        await this.redis.zrem(UNACKED_INDEX, tag);
        continue;
      }
      let payload: Record<string, Record<string, unknown>>;
      let ex = '';
      let rk = '';
      try {
        const v = JSON.parse(cur) as [Record<string, Record<string, unknown>>, string, string];
        [payload, ex, rk] = v;
        if (payload.headers) payload.headers.redelivered = true;
        const di = payload.properties?.delivery_info as Record<string, unknown> | undefined;
        if (di) di.redelivered = true;
      } catch {
        // Unreadable: put the stored text back as it was, for whoever reads it to reject with a reason.
        payload = cur as unknown as Record<string, Record<string, unknown>>;
      }
      const queue = await this.lookup(ex, rk);
      const text = typeof payload === 'string' ? payload : JSON.stringify(payload);
      restored += (await this.cmd.celeryRestore!(UNACKED, UNACKED_INDEX, queue, tag, cur, text)) === 1 ? 1 : 0;
    }
    return restored;
  }

  /** The queue an (exchange, routing key) pair delivers to, from kombu's binding table. */
  private async lookup(exchange: string, routingKey: string): Promise<string> {
    if (!exchange) return routingKey || 'celery';
    const members = await this.redis.smembers(`_kombu.binding.${exchange}`);
    for (const m of members) {
      const [rk, , queue] = m.split(KOMBU_SEP);
      if (rk === routingKey && queue) return queue;
    }
    return routingKey || 'celery';
  }

  /** Keeps an element that is not a message at all, for a person to look at (never dropped). */
  async reject(raw: string): Promise<void> {
    await this.redis.lpush(REJECTED, raw);
  }

  /** Hands a message back to the back of its queue (a task this worker does not serve). */
  requeue(tag: string, list: string, raw: string, pipe = this.redis.multi()) {
    return this.ack(tag, pipe).lpush(list, raw);
  }

  listFor(queue: string, priority: number): string {
    return queueListFor(queue, priority);
  }
}
