/**
 * The Redis broker's schedules. Keys, per queue (sharing its hash tag, so Redis Cluster never
 * needs a cross-slot call): `<base>S:<id>` (a hash: the definition and state of one schedule),
 * `<base>Sids` (a set of its ids) and `<base>Sdue` (a sorted set: id -> next nominal fire time, for
 * the unpaused schedules that have one). The fire step is one script (lua/schedfire.lua).
 */
import { ConfigError } from '../../core/errors.ts';
import { show } from '../../core/show.ts';
import type {
  DueSchedules,
  EnqueueResult,
  FireOutcome,
  FireRequest,
  ScheduleDefinition,
  ScheduleRecord,
  UpsertScheduleResult,
} from '../types.ts';
import { earliestDue } from '../shared/schedules.ts';
import { STATE_OF_CODE, splitRunId } from './codec.ts';
import type { RedisClient } from './connection.ts';
import { type RedisCore, time } from './core.ts';
import { pushRunArgs } from './run-args.ts';
import { runScript } from './scripts.ts';

interface Keys {
  hash: string;
  ids: string;
  due: string;
}

function keys(c: RedisCore, queue: string, id: string): Keys {
  const base = c.k(queue).base;
  return { hash: `${base}S:${id}`, ids: `${base}Sids`, due: `${base}Sdue` };
}

function int(v: string | undefined): number | undefined {
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

/** A schedule's hash as a record (fields: see schedupsert.lua). */
export function toSchedule(queue: string, id: string, h: Record<string, string>): ScheduleRecord {
  const rec: ScheduleRecord = {
    id,
    queue,
    task: h.t ?? '',
    spec: h.s ?? '',
    input: h.i ?? '',
    options: h.o ?? '',
    hash: h.h ?? '',
    version: int(h.v) ?? 0,
    next: int(h.n) ?? null,
    paused: h.p === '1',
    fires: int(h.f) ?? 0,
    missed: int(h.m) ?? 0,
    createdAt: int(h.c) ?? 0,
    updatedAt: int(h.u) ?? 0,
  };
  const lastFire = int(h.l);
  if (lastFire !== undefined) rec.lastFire = lastFire;
  if (h.L !== undefined) rec.lastRun = `${queue}.${h.L}`;
  return rec;
}

function pairs(flat: unknown[], from: number): Record<string, string> {
  const h: Record<string, string> = {};
  for (let i = from; i + 1 < flat.length; i += 2) h[String(flat[i])] = String(flat[i + 1]);
  return h;
}

export async function upsertSchedule(c: RedisCore, def: ScheduleDefinition, now: number): Promise<UpsertScheduleResult> {
  now = time(now, 'now');
  const redis = await c.ready();
  const k = keys(c, def.queue, def.id);
  if (!c.knows(def.queue)) await c.remember([def.queue]);
  const reply = (await runScript(
    redis,
    'schedupsert',
    [k.hash, k.ids, k.due],
    [def.id, def.task, def.spec, def.input, def.options, def.hash, def.version, def.next === null ? '' : Math.floor(def.next), now],
  )) as unknown[];
  const outcome = String(reply[0]) as UpsertScheduleResult['outcome'];
  return { outcome, schedule: toSchedule(def.queue, def.id, pairs(reply, 1)) } as UpsertScheduleResult;
}

export async function fireSchedule(c: RedisCore, req: FireRequest): Promise<FireOutcome> {
  const now = time(req.now, 'now');
  const k = keys(c, req.queue, req.id);
  const qk = c.k(req.queue);
  const args: (string | number)[] = [
    qk.base,
    req.id,
    req.hash,
    Math.floor(req.expect),
    req.next === null ? '' : Math.floor(req.next),
    Math.max(0, Math.floor(req.missed)),
    now,
    req.runs.map((r) => Math.floor(r.schedule?.at ?? req.expect)).join(','),
    req.overlap === undefined || req.overlap === 'allow' ? '' : req.overlap,
  ];
  for (const run of req.runs) {
    const parts = splitRunId(run.id);
    if (!parts || parts.queue !== req.queue) {
      throw new ConfigError(`fireSchedule: run id ${show(run.id)} is not a run id of queue ${req.queue}`);
    }
    pushRunArgs(args, run, parts.rid, now);
  }
  const redis = await c.ready();
  if (!c.knows(req.queue)) await c.remember([req.queue]);
  const r = (await runScript(redis, 'schedfire', [k.hash, k.due, qk.sched], args)) as unknown[];
  const what = String(r[0]);
  if (what === 'not_found' || what === 'paused') return { outcome: what };
  if (what === 'stale') return { outcome: 'stale', next: int(String(r[1])) ?? null, hash: String(r[2]) };
  if (what === 'buffered') return { outcome: 'buffered', running: qk.idPrefix + String(r[1]) };
  const runs: EnqueueResult[] = [];
  for (let j = 3; j + 2 < r.length; j += 3) {
    runs.push({ id: qk.idPrefix + String(r[j]), created: r[j + 1] === 1, state: STATE_OF_CODE[String(r[j + 2])] ?? 'queued' });
  }
  const out: FireOutcome = { outcome: 'fired', runs, missed: Number(r[1]) };
  if (r[2] !== '' && r[2] !== undefined) out.overlapped = qk.idPrefix + String(r[2]);
  return out;
}

async function readMany(redis: RedisClient, c: RedisCore, queue: string, ids: readonly string[]): Promise<ScheduleRecord[]> {
  const out: ScheduleRecord[] = [];
  const hashes = await Promise.all(ids.map((id) => redis.hgetall(keys(c, queue, id).hash)));
  ids.forEach((id, i) => {
    const h = hashes[i];
    if (h && Object.keys(h).length) out.push(toSchedule(queue, id, h));
  });
  return out;
}

export async function getSchedule(c: RedisCore, queue: string, id: string): Promise<ScheduleRecord | null> {
  const redis = await c.ready();
  return (await readMany(redis, c, queue, [id]))[0] ?? null;
}

export async function listSchedules(c: RedisCore, queues?: readonly string[]): Promise<ScheduleRecord[]> {
  const redis = await c.ready();
  const qs = queues ? [...new Set(queues)].sort() : await c.allQueues(redis);
  const out: ScheduleRecord[] = [];
  for (const q of qs) {
    const ids = (await redis.smembers(keys(c, q, 'x').ids)).sort();
    out.push(...(await readMany(redis, c, q, ids)));
  }
  return out;
}

export async function dueSchedules(c: RedisCore, queues: readonly string[], until: number, limit: number): Promise<DueSchedules> {
  until = time(until, 'until');
  const redis = await c.ready();
  const due: ScheduleRecord[] = [];
  let nextAt: number | null = null;
  for (const q of new Set(queues)) {
    const k = keys(c, q, 'x');
    const [ids, later] = await Promise.all([
      redis.zrangebyscore(k.due, '-inf', until, 'LIMIT', 0, limit + 1),
      redis.zrangebyscore(k.due, `(${until}`, '+inf', 'WITHSCORES', 'LIMIT', 0, 1),
    ]);
    due.push(...(await readMany(redis, c, q, ids)).filter((s) => !s.paused && s.next !== null));
    const n = later[1] === undefined ? undefined : Number(later[1]);
    if (n !== undefined && (nextAt === null || n < nextAt)) nextAt = n;
  }
  return earliestDue(due, nextAt, limit);
}

async function admin(c: RedisCore, queue: string, id: string, op: 'pause' | 'resume' | 'delete', now: number): Promise<boolean> {
  const redis = await c.ready();
  const k = keys(c, queue, id);
  return (await runScript(redis, 'schedadmin', [k.hash, k.ids, k.due], [id, op, Math.floor(now)])) === 1;
}

export function pauseSchedule(c: RedisCore, queue: string, id: string, paused: boolean, now: number): Promise<boolean> {
  return admin(c, queue, id, paused ? 'pause' : 'resume', time(now, 'now'));
}

export function deleteSchedule(c: RedisCore, queue: string, id: string): Promise<boolean> {
  return admin(c, queue, id, 'delete', Date.now());
}
