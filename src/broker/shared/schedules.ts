/**
 * What every broker shares about schedules: which of two definitions wins an upsert, the checks
 * of what callers give (ids, versions, times), so that both brokers refuse the same things, and
 * the trim of `dueSchedules`' answer to its limit (`earliestDue`).
 */
import { ConfigError } from '../../core/errors.ts';
import { show } from '../../core/show.ts';
import type { DueSchedules, FireOverlap, FireRequest, ScheduleDefinition, ScheduleRecord } from '../types.ts';

/** A schedule id: 1 to 128 characters, no whitespace. */
export const SCHEDULE_ID = /^[^\s]{1,128}$/;

/**
 * The greatest schedule version: a build time in ms or a release number fits, and every such number
 * is exact in a double, in Lua and in SQLite's REAL alike.
 */
export const MAX_SCHEDULE_VERSION = Number.MAX_SAFE_INTEGER;

/** What a schedule version must be, for messages ("version must be ..."). */
export const SCHEDULE_VERSION_RULE = `an integer from 0 to ${MAX_SCHEDULE_VERSION} (a build time or a release number)`;

/** A schedule version: an integer from 0 to `MAX_SCHEDULE_VERSION`. */
export function isScheduleVersion(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}

/**
 * A version's place in the order. One above `MAX_SCHEDULE_VERSION` (stored before versions were
 * checked: a typo such as 1e300) counts below every version, so that it can still be replaced,
 * else nothing could ever replace it. schedupsert.lua does the same.
 */
function versionRank(v: number): number {
  return v > MAX_SCHEDULE_VERSION ? Number.NEGATIVE_INFINITY : v;
}

/**
 * 1 when `a` replaces `b` (a greater version, or an equal version and a greater hash), -1 when `b`
 * stays, 0 when they are the same definition. A total order: whatever order two deploys upsert in,
 * every broker ends on the same definition and never flaps between them.
 */
export function newerDefinition(a: Pick<ScheduleDefinition, 'version' | 'hash'>, b: Pick<ScheduleDefinition, 'version' | 'hash'>): number {
  const va = versionRank(a.version);
  const vb = versionRank(b.version);
  if (va !== vb) return va > vb ? 1 : -1;
  if (a.hash === b.hash) return 0;
  return a.hash > b.hash ? 1 : -1;
}

export function checkScheduleId(id: unknown, method: string): string {
  if (typeof id !== 'string' || !SCHEDULE_ID.test(id)) {
    throw new ConfigError(`${method}: schedule id ${show(id)} is invalid: use 1 to 128 characters without spaces`);
  }
  return id;
}

function text(v: unknown, method: string, field: string): void {
  if (typeof v !== 'string') throw new ConfigError(`${method}: ${field} must be a string, got ${typeof v}`);
}

function time(v: unknown, method: string, field: string, nullable: boolean): void {
  if (v === null && nullable) return;
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new ConfigError(`${method}: ${field} must be a finite number of ms${nullable ? ' or null' : ''}, got ${show(v)}`);
  }
}

export function checkDefinition(def: ScheduleDefinition): void {
  const m = 'upsertSchedule';
  if (!def || typeof def !== 'object') throw new ConfigError(`${m}: a schedule definition object is required`);
  checkScheduleId(def.id, m);
  for (const f of ['task', 'spec', 'input', 'options', 'hash'] as const) text(def[f], m, f);
  if (!isScheduleVersion(def.version)) throw new ConfigError(`${m}: version must be ${SCHEDULE_VERSION_RULE}, got ${show(def.version)}`);
  time(def.next, m, 'next', true);
}

const FIRE_OVERLAPS: readonly FireOverlap[] = ['allow', 'skip', 'cancel', 'buffer'];

export function checkFire(req: FireRequest): void {
  const m = 'fireSchedule';
  if (!req || typeof req !== 'object') throw new ConfigError(`${m}: a request object is required`);
  checkScheduleId(req.id, m);
  text(req.hash, m, 'hash');
  time(req.expect, m, 'expect', false);
  time(req.next, m, 'next', true);
  time(req.missed, m, 'missed', false);
  if (!Array.isArray(req.runs)) throw new ConfigError(`${m}: runs must be an array`);
  if (req.overlap !== undefined && !FIRE_OVERLAPS.includes(req.overlap)) {
    throw new ConfigError(`${m}: overlap must be one of ${FIRE_OVERLAPS.join(', ')}, got ${show(req.overlap)}`);
  }
  for (const r of req.runs) {
    if (r.queue !== req.queue) throw new ConfigError(`${m}: run ${r.id} is of queue ${r.queue}, not the schedule's queue ${req.queue}`);
  }
}

/**
 * The answer of `dueSchedules` from what each queue gave: `due` (up to `limit + 1` of each queue,
 * due at or before `until`) and `nextAt` (the earliest later fire time among them). When more than
 * `limit` are due, the earliest `limit` are kept and the earliest of the rest counts in `nextAt`.
 */
export function earliestDue(due: ScheduleRecord[], nextAt: number | null, limit: number): DueSchedules {
  if (due.length <= limit) return { schedules: due, nextAt };
  due.sort((a, b) => (a.next ?? 0) - (b.next ?? 0));
  for (const s of due.slice(limit)) if (s.next !== null && (nextAt === null || s.next < nextAt)) nextAt = s.next;
  return { schedules: due.slice(0, limit), nextAt };
}
