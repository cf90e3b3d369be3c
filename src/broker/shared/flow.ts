/**
 * What both brokers share for flow control (docs/flow-control.md): how a rate limit is stored with
 * a run, and the GCRA step that the SQLite broker runs in TypeScript and the Redis broker in Lua
 * (`flowGcra` in lua/flow.lua: the same arithmetic, on the same doubles).
 */
import { ConfigError } from '../../core/errors.ts';
import { show } from '../../core/show.ts';
import type { FlowKeyQuery, FlowKeySort, FlowRate, FlowWait } from '../types.ts';

/** A rate as stored with a run and a key: `<interval>,<burst>`; '' for none. */
export function rateText(r: FlowRate | undefined): string {
  return r ? `${r.interval},${r.burst}` : '';
}

/** The rate of `rateText`, or undefined ('' or unreadable). */
export function parseRate(text: unknown): FlowRate | undefined {
  if (typeof text !== 'string' || text === '') return undefined;
  const [i, b] = text.split(',');
  const interval = Number(i);
  const burst = Number(b);
  if (!(interval > 0) || !(burst >= 1) || !Number.isFinite(interval)) return undefined;
  return { interval, burst: Math.floor(burst) };
}

/**
 * GCRA: `tat` is the key's theoretical arrival time (absent: never started). A start at `now` is
 * admitted while `max(tat, now) - now <= interval * (burst - 1)`, and moves `tat` to
 * `max(tat, now) + interval`; otherwise the key may start again at `until` (whole ms, rounded up).
 */
export function gcra(tat: number | undefined, now: number, r: FlowRate): { ok: true; tat: number } | { ok: false; until: number } {
  const from = Math.max(tat ?? 0, now);
  const tau = r.interval * (r.burst - 1);
  if (from - now > tau) return { ok: false, until: Math.ceil(from - tau) };
  return { ok: true, tat: from + r.interval };
}

/** A key's or a group's limits as stored: active runs, concurrency limit (0: none), held by its rate until. */
export interface FlowLimitState {
  active: number;
  limit: number;
  waitUntil?: number;
  /** Set when the wait is a handler's back-off rather than the rate. */
  backedOff?: boolean;
}

/** What holds a queued run back (see `RunFlow.waiting`), from its key's and group's states; in reserve's order. */
export function flowWaiting(key: FlowLimitState | undefined, group: FlowLimitState | undefined): FlowWait | undefined {
  if (group?.waitUntil !== undefined) return { reason: group.backedOff ? 'group_backoff' : 'group_rate', until: group.waitUntil };
  if (group && group.limit > 0 && group.active >= group.limit)
    return { reason: 'group_concurrency', active: group.active, limit: group.limit };
  if (key?.waitUntil !== undefined) return { reason: key.backedOff ? 'key_backoff' : 'key_rate', until: key.waitUntil };
  if (key && key.limit > 0 && key.active >= key.limit) return { reason: 'key_concurrency', active: key.active, limit: key.limit };
  return undefined;
}

const FLOW_KEY_SORTS: readonly FlowKeySort[] = ['queued', 'active', 'key'];

/** `flowKeys`' query with its defaults, or a ConfigError naming the field that is wrong. */
export function checkFlowKeyQuery(query: unknown): Required<FlowKeyQuery> {
  if (query === undefined || query === null) return { sort: 'queued', offset: 0, limit: 50 };
  if (typeof query !== 'object' || Array.isArray(query)) throw new ConfigError(`flowKeys: the query must be an object, got ${show(query)}`);
  const q = query as Record<string, unknown>;
  const sort = q.sort ?? 'queued';
  if (!FLOW_KEY_SORTS.includes(sort as FlowKeySort))
    throw new ConfigError(`flowKeys: sort must be one of ${FLOW_KEY_SORTS.join(', ')}, got ${show(sort)}`);
  const offset = q.offset ?? 0;
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0)
    throw new ConfigError(`flowKeys: offset must be a non-negative integer, got ${show(offset)}`);
  const limit = q.limit ?? 50;
  if (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 1 || limit > 500)
    throw new ConfigError(`flowKeys: limit must be an integer from 1 to 500, got ${show(limit)}`);
  return { sort: sort as FlowKeySort, offset, limit };
}
