/**
 * Schedules at run time, over any broker: the declaration options split into spec, policies and
 * version; a schedule as listed (its next five fire times, state); trigger now and backfill, which
 * create runs through `enqueue` with the same idempotency keys as the fires (so a backfill is safe
 * to repeat, and never doubles a fire). Used by the app (`errand.ts`), the HTTP routes, the CLI and
 * the dashboard.
 */
import type { Broker, EnqueueResult, FlowSpec, NewRun, ScheduleMark, ScheduleRecord } from '../broker/types.ts';
import { ConfigError, ScheduleLimitsError, ScheduleVersionError } from '../core/errors.ts';
import { isScheduleVersion, SCHEDULE_ID, SCHEDULE_VERSION_RULE } from '../broker/shared/schedules.ts';
import { newRunId } from '../core/ids.ts';
import {
  checkPolicies,
  expiryOf,
  fireKey,
  limitsRecorded,
  readStored,
  type SchedulePolicies,
  type StoredSchedule,
  scheduleDefinition,
  upcoming,
} from './plan.ts';
import { compileSchedule, type Schedule, type ScheduleSpec } from './spec.ts';
import { firesBetween } from './times.ts';
import { show } from '../core/show.ts';

/** How long the key of a fire or a backfilled run holds (the runs' retention bounds it too). */
export const FIRE_KEY_TTL_MS = 7 * 24 * 3600_000;

/** A schedule's options beside its task: the time spec, the runs' input, the policies and the version. */
export type ScheduleOptions<I = unknown> = ScheduleSpec &
  Partial<SchedulePolicies> & {
    /** The input of every run (checked against the task's schema when declared). */
    input?: I;
    /**
     * The definition's version: a greater one replaces the stored definition, a smaller one never
     * does (a rolling deploy's older workers cannot flap it back). Use a number that grows with each
     * deploy (a build time, a release number): an integer from 0 to 2^53-1 (`Number.MAX_SAFE_INTEGER`).
     * Default: `ERRAND_SCHEDULE_VERSION` from the environment, else 0; definitions of equal versions
     * settle on one by their digest.
     */
    version?: number;
  };

const POLICY_KEYS = ['missed', 'maxBackfill', 'catchUpMs', 'overlap', 'expire', 'priority'] as const;

export interface SplitOptions {
  schedule: Schedule;
  policies: SchedulePolicies;
  version: number;
  input: unknown;
}

/** Splits and checks declaration options; a ConfigError (a ScheduleSpecError for the spec) names each problem. */
export function splitScheduleOptions(options: ScheduleOptions, where: string): SplitOptions {
  if (!options || typeof options !== 'object') throw new ConfigError(`${where}: options { cron | every, ... } are required`);
  const { input, version, ...rest } = options as ScheduleOptions & Record<string, unknown>;
  const policyGiven: Record<string, unknown> = {};
  const spec: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(rest)) {
    if ((POLICY_KEYS as readonly string[]).includes(k)) policyGiven[k] = v;
    else spec[k] = v;
  }
  const schedule = compileSchedule(spec as unknown as ScheduleSpec, where);
  const policies = checkPolicies(policyGiven as Partial<SchedulePolicies>, where);
  const v = version ?? defaultVersion();
  if (!isScheduleVersion(v)) throw new ConfigError(`${where}: version must be ${SCHEDULE_VERSION_RULE}, got ${show(v)}`);
  return { schedule, policies, version: v, input };
}

function defaultVersion(): number {
  const env = process.env.ERRAND_SCHEDULE_VERSION;
  if (env === undefined || env === '') return 0;
  const n = Number(env);
  if (!isScheduleVersion(n)) throw new ConfigError(`ERRAND_SCHEDULE_VERSION must be ${SCHEDULE_VERSION_RULE}, got ${JSON.stringify(env)}`);
  return n;
}

/** Throws a ConfigError unless `id` is a schedule id (1 to 128 characters without spaces). */
export function checkNewScheduleId(id: unknown, where: string): asserts id is string {
  if (typeof id !== 'string' || !SCHEDULE_ID.test(id)) throw new ConfigError(`${where}: the id must be 1 to 128 characters without spaces`);
}

/**
 * Stores schedule `id` of `task` in `queue` from checked options (`splitScheduleOptions`) and its
 * input as JSON text: the one path of run-time creation and update (the app, HTTP, the dashboard,
 * the CLI). A stored definition of a greater version stands (an older deploy never flaps it back):
 * ScheduleVersionError says so, rather than answer with the stored one as if the update were taken.
 */
export async function putSchedule(
  broker: Broker,
  target: { id: string; queue: string; task: string; input: string; limits?: boolean },
  split: SplitOptions,
  now: number,
  where: string,
): Promise<ScheduleView> {
  const def = scheduleDefinition({ ...target, schedule: split.schedule, policies: split.policies, version: split.version }, now);
  const r = await broker.upsertSchedule(def, now);
  if (r.outcome === 'older') {
    throw new ScheduleVersionError(
      `${where}: not updated: the stored definition has version ${r.schedule.version}, greater than this one's (${split.version}); give a greater version`,
    );
  }
  return viewOf(r.schedule);
}

/** A schedule as listed: the stored record, its next five fire times and its state. */
export interface ScheduleView extends ScheduleRecord {
  state: 'active' | 'paused' | 'ended';
  upcoming: number[];
}

export function viewOf(rec: ScheduleRecord): ScheduleView {
  return { ...rec, state: rec.paused ? 'paused' : rec.next === null ? 'ended' : 'active', upcoming: upcoming(rec, 5) };
}

/** Finds a schedule by id (and queue, when ids repeat across queues); a ConfigError when none or ambiguous. */
export async function findSchedule(broker: Broker, id: string, queue?: string): Promise<ScheduleRecord | null> {
  if (queue !== undefined) return broker.getSchedule(queue, id);
  const all = (await broker.listSchedules()).filter((s) => s.id === id);
  if (all.length > 1) {
    throw new ConfigError(
      `schedule ${JSON.stringify(id)} exists in several queues (${all.map((s) => s.queue).join(', ')}): name the queue`,
    );
  }
  return all[0] ?? null;
}

/**
 * The flow spec of a run of `task` with stored input `input`, as enqueue computes it (the app's task
 * definitions know it: `Task.flowOfStored`): runs made here are under their task's limits.
 * Undefined: the task has no limits. Null: this caller does not define the task (then, when the
 * task is known to have limits, nothing is created: see `flowOrRefuse`).
 */
export type FlowOf = (task: string, input: string) => FlowSpec | undefined | null;

/** What a caller without the task's definition is told to do instead (ScheduleLimitsError). */
export const APP_HINT =
  'Run it from an app that defines the task (errand.triggerSchedule or errand.backfillSchedule, or the HTTP routes or dashboard of such an app), or give the CLI that app: errand schedules trigger|backfill <id> --app <module>.';

/**
 * The flow spec of the schedule's runs, as `flowOf` computes it; when `flowOf` is absent or does
 * not know the task, none, unless the task is known to have limits: recorded with the schedule
 * (`limits` in its options, written by an app that defines the task), or seen on the schedule's
 * last run (a run of the same task that carried a flow spec). Then ScheduleLimitsError: the runs
 * would escape their limits, so none is made.
 */
async function flowOrRefuse(broker: Broker, rec: ScheduleRecord, flowOf: FlowOf | undefined, hint: string): Promise<FlowSpec | undefined> {
  const flow = flowOf ? flowOf(rec.task, rec.input) : null;
  if (flow !== null) return flow;
  let limited = limitsRecorded(rec);
  if (!limited && rec.lastRun) {
    const last = await broker.getRun(rec.lastRun);
    limited = last?.task === rec.task && last.flow !== undefined;
  }
  if (limited) throw new ScheduleLimitsError(rec.id, rec.queue, rec.task, hint);
  return undefined;
}

function runOf(
  rec: ScheduleRecord,
  at: number,
  backfilled: boolean,
  now: number,
  stored: StoredSchedule,
  key: string,
  flow: FlowSpec | undefined,
): NewRun {
  const schedule: ScheduleMark = { id: rec.id, at, backfilled };
  const expiresAt = expiryOf(stored, at, Math.max(at, now));
  if (expiresAt !== undefined) schedule.expiresAt = expiresAt;
  return {
    ...(flow ? { flow } : {}),
    id: newRunId(rec.queue, now),
    task: rec.task,
    queue: rec.queue,
    input: rec.input,
    priority: stored.policies.priority,
    runAt: Math.max(at, now),
    idempotencyKey: key,
    idempotencyTtl: FIRE_KEY_TTL_MS,
    schedule,
  };
}

/**
 * Creates one run of the schedule now, outside its fire times (its nominal time is `now`). Works
 * while paused. A task with limits needs `flowOf` to know it (else ScheduleLimitsError, with `hint`).
 */
export async function triggerSchedule(
  broker: Broker,
  rec: ScheduleRecord,
  now: number,
  flowOf?: FlowOf,
  hint = APP_HINT,
): Promise<EnqueueResult> {
  const stored = readStored(rec);
  const flow = await flowOrRefuse(broker, rec, flowOf, hint);
  const run = runOf(rec, now, false, now, stored, `schedule:${rec.id}:trigger:${now}`, flow);
  const [r] = await broker.enqueue([run], now);
  return r as EnqueueResult;
}

export interface BackfillResult {
  /** Runs created, and nominal times that already had their run (a fire, an earlier backfill). */
  created: number;
  existing: number;
  /** The nominal times of the range, oldest first. */
  times: number[];
  /** More times than `limit` in the range: only the first `limit` were done. */
  truncated: boolean;
}

/** An instant (epoch ms) for a message: ISO 8601 in UTC as the user wrote it, else as given (`NaN`, `"2030-01-01"`). */
function instantText(at: unknown): string {
  return typeof at === 'number' && Number.isFinite(at) && Math.abs(at) <= 8.64e15 ? new Date(at).toISOString() : show(at);
}

/**
 * A run for each nominal time of the schedule in [from, to) that has none yet, marked backfilled,
 * due now (a future time: at that time). Safe to repeat: the idempotency key of a time is the one its
 * fire uses, so no time gets two runs while its run is kept (up to 7 days after it was created).
 */
export async function backfillSchedule(
  broker: Broker,
  rec: ScheduleRecord,
  from: number,
  to: number,
  now: number,
  limit = 1000,
  flowOf?: FlowOf,
  hint = APP_HINT,
): Promise<BackfillResult> {
  if (!Number.isFinite(from) || !Number.isFinite(to) || from >= to) {
    throw new ConfigError(`backfill: the range must be two instants with from < to, got ${instantText(from)} .. ${instantText(to)}`);
  }
  if (to > now) throw new ConfigError('backfill: the range must end at or before now (later times are fired as usual)');
  const stored = readStored(rec);
  const { times, truncated } = firesBetween(stored.schedule, from, to, limit);
  const flow = times.length ? await flowOrRefuse(broker, rec, flowOf, hint) : undefined;
  let created = 0;
  for (let i = 0; i < times.length; i += 500) {
    const part = times.slice(i, i + 500);
    const res = await broker.enqueue(
      part.map((at) => runOf(rec, at, true, now, stored, fireKey(rec.id, at), flow)),
      now,
    );
    created += res.filter((r) => r.created).length;
  }
  return { created, existing: times.length - created, times, truncated };
}
