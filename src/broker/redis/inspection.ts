/**
 * The Redis broker's reads and administration: getRun and counts (Broker), and the
 * BrokerInspector (listing runs, queues and workers, pause and resume, purge, bulk replay, stats).
 */
import { ConfigError } from '../../core/errors.ts';
import { QUEUE_NAME, timeOfRunId } from '../../core/ids.ts';
import { show } from '../../core/show.ts';
import { type FlowLimitState, flowWaiting } from '../shared/flow.ts';
import { invalidCursor, MINUTE, pageLimit, SLICE, WORKER_MEMORY_MS } from '../shared/options.ts';
import { parseWorkerRecord, workerRecord } from '../shared/workers.ts';
import {
  type FlowCounts,
  type FlowKeyPage,
  type FlowKeyQuery,
  LATENCY_BUCKETS_MS,
  type MinuteStats,
  type QueueCounts,
  RUN_STATES,
  type RunFilter,
  type RunPage,
  type RunRecord,
  type RunState,
  type WorkerInfo,
  type WorkerStatus,
} from '../types.ts';
import { corruptErrorText, decodeRun, splitRunId } from './codec.ts';
import { type RedisCore, time } from './core.ts';
import { drainAfter } from './relay.ts';
import { countsReply, flowKeysReply, listReply, retryFailedReply, sliceReply } from './replies.ts';
import { runScript } from './scripts.ts';

/** A listing's cursor: the ULID part of the last run id of the previous page. */
const CURSOR = /^[0-9A-HJKMNP-TV-Z]{26}$/;
const CODE_OF_STATE: Readonly<Record<RunState, string>> = {
  waiting: 'w',
  queued: 'q',
  scheduled: 's',
  active: 'a',
  succeeded: 'd',
  failed: 'f',
  cancelled: 'c',
};

function checkQueue(queue: string): string {
  if (typeof queue !== 'string' || !QUEUE_NAME.test(queue)) {
    throw new ConfigError(`Queue name ${show(queue)} is invalid: use 1 to 64 letters, digits, "_" or "-"`);
  }
  return queue;
}

export async function getRun(c: RedisCore, id: string): Promise<RunRecord | null> {
  const parts = splitRunId(id);
  if (!parts) return null;
  const key = c.k(parts.queue).run(parts.rid);
  const redis = await c.ready();
  let h: Record<string, string>;
  try {
    h = await redis.hgetall(key);
  } catch (err) {
    if (!(err instanceof Error && err.message.startsWith('WRONGTYPE'))) throw err;
    // Not a hash: shown as a failed run saying so (the next reserve that meets it fails it for good).
    return {
      id,
      task: '',
      queue: parts.queue,
      state: 'failed',
      priority: 0,
      input: '',
      error: corruptErrorText(id, key, 'the key is not a hash'),
      attempts: 0,
      leaseLosses: 0,
      enqueuedAt: timeOfRunId(id),
      history: [],
    };
  }
  if (Object.keys(h).length === 0) return null;
  const rec = decodeRun(id, parts.queue, key, h);
  // A queued run under flow control: what holds it back, if anything (keys of the same queue: one slot).
  if (rec.flow && rec.state === 'queued') {
    const k = c.k(parts.queue);
    const gy = `${rec.flow.group}|${rec.flow.key}`;
    const [kh, gh, kw, gw] = (await redis
      .pipeline()
      .hgetBuffer(`${k.base}fy|${rec.flow.group}`, rec.flow.key)
      .hmget(`${k.base}fG|${rec.flow.group}`, 'a', 'c', 'w')
      .zscore(`${k.base}fW`, gy)
      .zscore(`${k.base}fWg`, rec.flow.group)
      .exec()) as [Error | null, unknown][];
    const state = (v: unknown, wait: unknown): FlowLimitState | undefined => {
      const [a, lim, w] = Array.isArray(v) ? (v as (string | null)[]) : keyStateFields(v);
      if (a == null && lim == null) return undefined;
      const s: FlowLimitState = { active: Number(a ?? 0) || 0, limit: Number(lim ?? 0) || 0 };
      if (w != null && wait != null) s.waitUntil = Number(wait);
      if (w === 'b' && wait != null) s.backedOff = true;
      return s;
    };
    const waiting = flowWaiting(state(kh?.[1], kw?.[1]), state(gh?.[1], gw?.[1]));
    if (waiting) rec.flow.waiting = waiting;
  }
  return rec;
}

/** A flow key's state as stored (lua/flow.lua). */
export interface KeyStateRecord {
  active: number;
  queued: number;
  /** Concurrency limit, 0: none. */
  limit: number;
  /** GCRA time, undefined: none. */
  tat?: number;
  /** The rate's interval (ms) and burst; interval 0: no rate. */
  interval: number;
  burst: number;
  /** '' not waiting, '1' held by its rate, 'b' backed off by a handler. */
  wait: '' | '1' | 'b';
  weight: number;
  /** Runs served in a row at the head of its ring. */
  streak: number;
}

/** The length of a packed key state (lua/flow.lua's KEY_LEN). */
const KEY_STATE_BYTES = 45;

/**
 * A flow key's state as stored, one field of its group's hash: 45 bytes packed by struct (KEY_FMT
 * in lua/flow.lua, little-endian: a, q, c 32-bit integers, t, ri, rb doubles, w a byte, e, z 32-bit
 * integers). Undefined when it has none, or one of another length (which reserve rebuilds).
 */
export function keyState(v: unknown): KeyStateRecord | undefined {
  if (!Buffer.isBuffer(v) || v.length !== KEY_STATE_BYTES) return undefined;
  const t = v.readDoubleLE(12);
  const w = v.readUInt8(36);
  const s: KeyStateRecord = {
    active: v.readInt32LE(0),
    queued: v.readInt32LE(4),
    limit: v.readInt32LE(8),
    interval: v.readDoubleLE(20),
    burst: v.readDoubleLE(28),
    wait: w === 1 ? '1' : w === 2 ? 'b' : '',
    weight: v.readInt32LE(37),
    streak: v.readInt32LE(41),
  };
  if (t >= 0) s.tat = t;
  return s;
}

/** The active count, limit and wait flag of a packed key state (keyState); [] when it has none. */
function keyStateFields(v: unknown): (string | null)[] {
  const s = keyState(v);
  return s ? [String(s.active), String(s.limit), s.wait || null] : [];
}

export async function flowCounts(c: RedisCore, queues: readonly string[]): Promise<Record<string, FlowCounts>> {
  const redis = await c.ready();
  const out: Record<string, FlowCounts> = {};
  await Promise.all(
    [...new Set(queues)].map(async (queue) => {
      const b = c.k(queue).base;
      // One queue's keys share its hash tag: one pipeline, one node.
      const r = (await redis.pipeline().hget(`${b}fM`, 'q').scard(`${b}fY`).zcard(`${b}fW`).zcard(`${b}fWg`).exec()) as [
        Error | null,
        unknown,
      ][];
      const n = (i: number) => Math.max(0, Number(r[i]?.[1] ?? 0) || 0);
      // Runs held back by a limit, and the keys: every key read, in one script (only for a queue
      // whose groups have had keys).
      const h = n(1) > 0 ? ((await runScript(redis, 'flowkeys', [`${b}fY`], [b, 'held', 0, 0])) as unknown[]) : [];
      const m = (i: number) => Math.max(0, Number(h[i] ?? 0) || 0);
      out[queue] = {
        queued: n(0),
        keys: m(4),
        rateLimitedKeys: n(2),
        rateLimitedGroups: n(3),
        heldRuns: { group_rate: m(0), group_concurrency: m(1), key_rate: m(2), key_concurrency: m(3) },
      };
    }),
  );
  return out;
}

export async function flowKeys(c: RedisCore, queue: string, query: Required<FlowKeyQuery>): Promise<FlowKeyPage> {
  const redis = await c.ready();
  const b = c.k(queue).base;
  return flowKeysReply(await runScript(redis, 'flowkeys', [`${b}fY`], [b, query.sort, query.offset, query.limit]));
}

export async function counts(c: RedisCore, queues?: readonly string[]): Promise<Record<string, QueueCounts>> {
  const redis = await c.ready();
  const list = queues ? [...new Set(queues)] : await c.allQueues(redis);
  const out: Record<string, QueueCounts> = {};
  await Promise.all(
    list.map(async (queue) => {
      if (!QUEUE_NAME.test(queue)) {
        out[queue] = { waiting: 0, queued: 0, scheduled: 0, active: 0, succeeded: 0, failed: 0, cancelled: 0 };
        return;
      }
      const k = c.k(queue);
      out[queue] = countsReply(
        await runScript(redis, 'counts', [k.prios, k.sched, k.active, k.succeeded, k.failed, k.cancelled], [k.base]),
      );
    }),
  );
  // Keys in the order asked (Promise.all filled them in reply order).
  return Object.fromEntries(list.map((q) => [q, out[q]!]));
}

/**
 * Newest first by run id, keyset-paginated on the id (the cursor is the ULID of the last run
 * of the page). Each queue's structures are read by `lua/list.lua` (at most `limit + 1` runs
 * per queue), and the queues' pages are merged here.
 */
export async function listRuns(c: RedisCore, filter: RunFilter): Promise<RunPage> {
  const limit = pageLimit(filter.limit);
  const { queue, task, state } = filter;
  if (state !== undefined && !(RUN_STATES as readonly string[]).includes(state)) return { runs: [], next: null };
  const cursor = filter.cursor ?? '';
  if (cursor !== '' && !CURSOR.test(cursor)) throw invalidCursor(filter.cursor);
  const redis = await c.ready();
  const queues = queue !== undefined ? (QUEUE_NAME.test(queue) ? [queue] : []) : await c.allQueues(redis);
  const codes = state !== undefined ? CODE_OF_STATE[state] : 'wqsadfc';
  const pages = await Promise.all(
    queues.map(async (q) => {
      const k = c.k(q);
      const r = listReply(
        await runScript(
          redis,
          'list',
          [k.prios, k.sched, k.active, k.succeeded, k.failed, k.cancelled],
          [k.base, codes, cursor, limit + 1, task ?? '', c.listCap],
        ),
      );
      return { boundary: r.boundary, runs: r.rids.map((rid) => ({ rid, queue: q })) };
    }),
  );
  // A queue whose structures were not read to their end is exact only down to its boundary:
  // the page stops there, and the next page starts there.
  let boundary = '';
  for (const p of pages) if (p.boundary > boundary) boundary = p.boundary;
  const merged = pages
    .flatMap((p) => p.runs)
    .filter((r) => r.rid >= boundary)
    .sort((a, b) => (a.rid < b.rid ? 1 : a.rid > b.rid ? -1 : a.queue < b.queue ? 1 : -1));
  const page = merged.slice(0, limit);
  const records = await Promise.all(
    page.map(async ({ rid, queue: q }) => {
      const k = c.k(q);
      try {
        const h = await redis.hgetall(k.run(rid));
        return Object.keys(h).length ? decodeRun(k.id(rid), q, k.run(rid), h) : null;
      } catch {
        return null; // not a hash: left out of the page
      }
    }),
  );
  const last = page[page.length - 1];
  return {
    runs: records.filter((r): r is RunRecord => r !== null),
    next: merged.length > limit && last ? last.rid : boundary !== '' ? boundary : null,
  };
}

export async function listQueues(c: RedisCore): Promise<string[]> {
  return c.allQueues(await c.ready());
}

export async function heartbeat(c: RedisCore, worker: WorkerInfo, ttlMs: number, now: number): Promise<void> {
  const status: WorkerStatus = { ...workerRecord(worker), lastSeen: now, ttlMs };
  await (await c.ready()).hset(c.workersKey, worker.id, JSON.stringify(status));
}

export async function removeWorker(c: RedisCore, id: string): Promise<void> {
  await (await c.ready()).hdel(c.workersKey, id);
}

export async function listWorkers(c: RedisCore, now: number): Promise<WorkerStatus[]> {
  const redis = await c.ready();
  const all = await redis.hgetall(c.workersKey);
  const out: WorkerStatus[] = [];
  const forgotten: string[] = [];
  for (const [id, text] of Object.entries(all)) {
    // A corrupt registry entry is skipped: the worker rewrites it on its next heartbeat.
    const w = parseWorkerRecord(text) as WorkerStatus | undefined;
    if (!w) continue;
    if (w.lastSeen < now - WORKER_MEMORY_MS) forgotten.push(id);
    else out.push(w);
  }
  if (forgotten.length) await redis.hdel(c.workersKey, ...forgotten);
  return out.sort((a, b) => (a.id < b.id ? -1 : 1));
}

export async function pause(c: RedisCore, queue: string): Promise<void> {
  const k = c.k(checkQueue(queue));
  const redis = await c.ready();
  await Promise.all([redis.set(k.paused, '1'), redis.sadd(c.pausedKey, queue), c.remember([queue])]);
}

export async function resume(c: RedisCore, queue: string): Promise<void> {
  const k = c.k(checkQueue(queue));
  const redis = await c.ready();
  await Promise.all([redis.del(k.paused), redis.srem(c.pausedKey, queue)]);
  await runScript(redis, 'wake', [k.wake], []);
}

export async function pausedQueues(c: RedisCore): Promise<string[]> {
  return (await (await c.ready()).smembers(c.pausedKey)).sort();
}

export async function purge(c: RedisCore, queue: string, now: number): Promise<number> {
  if (!QUEUE_NAME.test(queue)) return 0;
  now = time(now, 'now');
  const k = c.k(queue);
  const redis = await c.ready();
  let total = 0;
  for (;;) {
    const r = sliceReply(await runScript(redis, 'purge', [k.prios, k.sched], [k.base, SLICE, c.eventsChannel, k.idPrefix, now]));
    total += r.count;
    if (r.relay) await drainAfter(c, [queue], now);
    if (!r.more) return total;
  }
}

export async function retryFailed(c: RedisCore, queue: string, task: string | undefined, now: number): Promise<number> {
  if (!QUEUE_NAME.test(queue)) return 0;
  now = time(now, 'now');
  const k = c.k(queue);
  const redis = await c.ready();
  let total = 0;
  let offset = 0;
  for (;;) {
    const r = retryFailedReply(
      await runScript(redis, 'retryfailed', [k.failed], [k.base, task ?? '', offset, SLICE, c.eventsChannel, k.idPrefix, now]),
    );
    total += r.replayed;
    offset += r.skipped;
    if (r.relay) await drainAfter(c, [queue], now);
    if (r.scanned < SLICE) return total;
  }
}

export async function stats(c: RedisCore, queues: readonly string[], since: number): Promise<Record<string, MinuteStats[]>> {
  const redis = await c.ready();
  const from = Math.floor(since / MINUTE) * MINUTE;
  const out: Record<string, MinuteStats[]> = {};
  const buckets = LATENCY_BUCKETS_MS.length + 1;
  await Promise.all(
    [...new Set(queues)].map(async (queue) => {
      if (!QUEUE_NAME.test(queue)) {
        out[queue] = [];
        return;
      }
      const k = c.k(queue);
      const minutes = (await redis.zrangebyscore(k.statMinutes, from, '+inf')).map(Number).sort((a, b) => a - b);
      const rows = await Promise.all(minutes.map((m) => redis.hgetall(k.stats(m))));
      out[queue] = minutes.flatMap((minute, i) => {
        const h = rows[i] ?? {};
        if (Object.keys(h).length === 0) return []; // expired
        const n = (f: string) => Number(h[f] ?? 0) || 0;
        return [
          {
            minute,
            enqueued: n('e'),
            succeeded: n('d'),
            failed: n('f'),
            retried: n('r'),
            wait: Array.from({ length: buckets }, (_, j) => n(`w${j}`)),
            run: Array.from({ length: buckets }, (_, j) => n(`u${j}`)),
          },
        ];
      });
    }),
  );
  return Object.fromEntries(queues.map((q) => [q, out[q] ?? []]));
}
