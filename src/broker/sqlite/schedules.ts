/**
 * The SQLite broker's schedules: upsert, the fire step, listings, pause, delete. The fire step is
 * one `BEGIN IMMEDIATE` transaction: the compare-and-set on `next_at` and the creation of the runs
 * (as `enqueue` creates them) commit together or not at all.
 */
import type { DueSchedules, FireOutcome, FireRequest, ScheduleDefinition, ScheduleRecord, UpsertScheduleResult } from '../types.ts';
import { earliestDue, newerDefinition } from '../shared/schedules.ts';
import { type SqliteCore, stateOf } from './core.ts';
import { num, type Row } from './statements.ts';
import { enqueueIn } from './transitions.ts';

function toSchedule(row: Row): ScheduleRecord {
  const rec: ScheduleRecord = {
    id: String(row.id),
    queue: String(row.queue),
    task: String(row.task),
    spec: String(row.spec),
    input: String(row.input),
    options: String(row.options),
    hash: String(row.hash),
    version: num(row.version) ?? 0,
    next: num(row.next_at) ?? null,
    paused: num(row.paused) === 1,
    fires: num(row.fires) ?? 0,
    missed: num(row.missed) ?? 0,
    createdAt: num(row.created_at) ?? 0,
    updatedAt: num(row.updated_at) ?? 0,
  };
  const lastFire = num(row.last_fire);
  if (lastFire !== undefined) rec.lastFire = lastFire;
  if (typeof row.last_run === 'string') rec.lastRun = row.last_run;
  return rec;
}

export function upsertSchedule(c: SqliteCore, def: ScheduleDefinition, now: number): UpsertScheduleResult {
  const params = {
    queue: def.queue,
    id: def.id,
    task: def.task,
    spec: def.spec,
    input: def.input,
    options: def.options,
    hash: def.hash,
    version: def.version,
    next: def.next,
    now,
  };
  const outcome = c.tx((): UpsertScheduleResult['outcome'] => {
    const row = c.row('schGet', def.queue, def.id);
    if (!row) {
      c.change('schInsert', params);
      return 'created';
    }
    const stored = toSchedule(row);
    const order = newerDefinition(def, stored);
    if (order === 0) return 'unchanged';
    if (order < 0) return 'older';
    c.change('schReplace', { ...params, next: stored.spec === def.spec ? stored.next : def.next });
    return 'updated';
  });
  const schedule = getSchedule(c, def.queue, def.id);
  if (!schedule) throw new Error(`schedule ${def.queue}/${def.id} vanished while upserted`);
  return { outcome, schedule } as UpsertScheduleResult;
}

export function fireSchedule(c: SqliteCore, req: FireRequest): FireOutcome {
  const queues = new Set<string>();
  const out = c.tx((): FireOutcome => {
    const row = c.row('schGet', req.queue, req.id);
    if (!row) return { outcome: 'not_found' };
    const s = toSchedule(row);
    if (s.paused) return { outcome: 'paused' };
    if (s.hash !== req.hash || s.next !== req.expect) return { outcome: 'stale', next: s.next, hash: s.hash };
    // The overlap policy, in this transaction: the previous run is read where the runs are created.
    let runs = req.runs;
    let missed = Math.max(0, Math.floor(req.missed));
    let overlapped: string | undefined;
    const policy = req.overlap ?? 'allow';
    if (policy !== 'allow' && s.lastRun !== undefined && runs.length) {
      const prev = c.row('stateOf', s.lastRun);
      const state = prev ? stateOf(prev) : undefined;
      if (state === 'queued' || state === 'active') {
        if (policy === 'buffer') return { outcome: 'buffered', running: s.lastRun };
        if (policy === 'skip') {
          missed += runs.length;
          runs = [];
        } else overlapped = s.lastRun;
      } else if (policy === 'buffer' && runs.length > 1) {
        missed += runs.length - 1;
        runs = runs.slice(-1);
      }
    }
    c.change('schFire', {
      queue: req.queue,
      id: req.id,
      hash: req.hash,
      expect: req.expect,
      next: req.next,
      missed,
      fires: runs.length,
      lastFire: runs.length ? Math.max(...runs.map((r) => r.schedule?.at ?? req.expect)) : null,
      now: req.now,
    });
    const created = enqueueIn(c, runs, req.now, queues);
    // The last run: the one the fire created, or the one an idempotency key already named.
    const last = created[created.length - 1];
    if (last) c.change('schLastRun', last.id, req.queue, req.id);
    const fired: FireOutcome = { outcome: 'fired', runs: created, missed };
    if (overlapped !== undefined) fired.overlapped = overlapped;
    return fired;
  });
  if (queues.size) c.hub.emit('work', [...queues]);
  return out;
}

export function getSchedule(c: SqliteCore, queue: string, id: string): ScheduleRecord | null {
  return c.read(() => {
    const row = c.row('schGet', queue, id);
    return row ? toSchedule(row) : null;
  });
}

export function listSchedules(c: SqliteCore, queues?: readonly string[]): ScheduleRecord[] {
  return c.read(() => (queues ? c.rows('schOf', JSON.stringify(queues)) : c.rows('schAll')).map(toSchedule));
}

export function dueSchedules(c: SqliteCore, queues: readonly string[], until: number, limit: number): DueSchedules {
  return c.read(() => {
    const due: ScheduleRecord[] = [];
    let nextAt: number | null = null;
    for (const q of new Set(queues)) {
      due.push(...c.rows('schDue', q, until, limit + 1).map(toSchedule));
      const n = num(c.row('schNext', q, until)?.next_at);
      if (n !== undefined && (nextAt === null || n < nextAt)) nextAt = n;
    }
    return earliestDue(due, nextAt, limit);
  });
}

export function pauseSchedule(c: SqliteCore, queue: string, id: string, paused: boolean, now: number): boolean {
  return c.tx(() => c.change('schPause', { queue, id, paused: paused ? 1 : 0, now }) > 0);
}

export function deleteSchedule(c: SqliteCore, queue: string, id: string): boolean {
  return c.tx(() => c.change('schDelete', queue, id) > 0);
}
