/**
 * Schedules as the broker stores them, and the plan of one fire step.
 *
 * A declaration (in code, or through the API, HTTP or the CLI) becomes a `ScheduleDefinition`: its
 * spec normalised to JSON, its policies to JSON, a digest (`hash`) of all of it, and a version. A
 * worker reads a stored definition back (`readStored`) and, when its next fire time F comes, plans
 * the fire (`planFire`): which nominal times get a run (F, or the missed ones the policy keeps),
 * how many are counted as missed, and the time to store next. Pure functions: every worker that
 * reads the same record at the same time plans the same step, and the broker's compare-and-set on
 * F lets exactly one of them apply it.
 */
import { createHash } from 'node:crypto';
import { ConfigError } from '../core/errors.ts';
import { show } from '../core/show.ts';
import type { ScheduleDefinition, ScheduleRecord } from '../broker/types.ts';
import { compileSchedule, type NormalizedSpec, type Schedule, type ScheduleIssue, type ScheduleSpec } from './spec.ts';
import { firesBetween, nextFire } from './times.ts';

/** What to do with nominal times that passed with no fire (no worker up, the schedule paused). */
export type MissedPolicy = 'skip' | 'latest' | 'all';
/** What to do when the previous run of the schedule is still queued, scheduled or active at a fire. */
export type OverlapPolicy = 'allow' | 'skip' | 'cancel' | 'buffer';

/** The policies and run options of a schedule, as stored (every field filled in). */
export interface SchedulePolicies {
  /** Default `latest`: one run for the latest missed time (marked backfilled), the others counted as missed. */
  missed: MissedPolicy;
  /** With `missed: 'all'`: at most this many runs per catch-up (the latest ones); the rest are counted. Default 100. */
  maxBackfill: number;
  /** A fire time later than this (ms) behind the clock is missed; within it, it still runs as usual. Default 60,000. */
  catchUpMs: number;
  /** Default `allow`. */
  overlap: OverlapPolicy;
  /**
   * Expiry: a run that has not started this long after it became due is failed with reason
   * `expired` instead of run: `period` (until the schedule's next fire time), ms, or `never` (default).
   */
  expire: 'period' | 'never' | number;
  priority: number;
}

export const DEFAULT_POLICIES: SchedulePolicies = {
  missed: 'latest',
  maxBackfill: 100,
  catchUpMs: 60_000,
  overlap: 'allow',
  expire: 'never',
  priority: 0,
};

const MISSED: readonly MissedPolicy[] = ['skip', 'latest', 'all'];
const OVERLAP: readonly OverlapPolicy[] = ['allow', 'skip', 'cancel', 'buffer'];

/** The bounds of the numeric policies (whole numbers), for their checks and the HTTP body's schema. */
export const POLICY_BOUNDS = {
  maxBackfill: { min: 1, max: 10_000 },
  catchUpMs: { min: 0 },
  expire: { min: 1 },
  priority: { min: -1000, max: 1000 },
} as const;

/** Schedule policies that Errand refuses: each issue names its field (`missed`, `priority`, ...). */
export class SchedulePolicyError extends ConfigError {
  override name = 'SchedulePolicyError';
  readonly issues: ScheduleIssue[];
  constructor(issues: ScheduleIssue[], where: string) {
    super(`${where}: ${issues.map((i) => `${i.field}: ${i.message}`).join('; ')}`);
    this.issues = issues;
  }
}

/** Policies given by a user (partial), checked; a SchedulePolicyError names every bad field. */
export function checkPolicies(given: Partial<SchedulePolicies> | undefined, where: string): SchedulePolicies {
  const p = { ...DEFAULT_POLICIES, ...stripUndefined(given ?? {}) };
  const issues: ScheduleIssue[] = [];
  const bad = (field: string, message: string) => issues.push({ field, message });
  if (!MISSED.includes(p.missed)) bad('missed', `expected one of ${MISSED.join(', ')}, got ${show(p.missed)}`);
  if (!OVERLAP.includes(p.overlap)) bad('overlap', `expected one of ${OVERLAP.join(', ')}, got ${show(p.overlap)}`);
  const { maxBackfill, catchUpMs, expire, priority } = POLICY_BOUNDS;
  if (!Number.isInteger(p.maxBackfill) || p.maxBackfill < maxBackfill.min || p.maxBackfill > maxBackfill.max)
    bad('maxBackfill', `expected a whole number from ${maxBackfill.min} to ${maxBackfill.max}, got ${show(p.maxBackfill)}`);
  if (!Number.isInteger(p.catchUpMs) || p.catchUpMs < catchUpMs.min)
    bad('catchUpMs', `expected a whole number of ms >= ${catchUpMs.min}, got ${show(p.catchUpMs)}`);
  if (p.expire !== 'period' && p.expire !== 'never' && !(Number.isInteger(p.expire) && (p.expire as number) >= expire.min))
    bad('expire', `expected "period", "never" or a whole number of ms >= ${expire.min}, got ${show(p.expire)}`);
  if (!Number.isInteger(p.priority) || p.priority < priority.min || p.priority > priority.max)
    bad('priority', `expected a whole number from ${priority.min} to ${priority.max}, got ${show(p.priority)}`);
  if (issues.length) throw new SchedulePolicyError(issues, where);
  return p;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** The spec as stored: the normalised spec, which `compileSchedule` accepts back. */
export function specOf(schedule: Schedule): ScheduleSpec {
  const s = schedule.spec;
  const out: Record<string, unknown> = s.kind === 'cron' ? { cron: s.cron, timezone: s.timezone } : { every: s.every };
  if (s.start !== undefined) out.start = s.start;
  if (s.end !== undefined) out.end = s.end;
  return out as unknown as ScheduleSpec;
}

export interface DefinitionInput {
  id: string;
  queue: string;
  task: string;
  schedule: Schedule;
  /** JSON text of the runs' input. */
  input: string;
  policies: SchedulePolicies;
  version: number;
  /**
   * The task has flow-control limits (its definition says so): recorded in the stored options as
   * `limits: true`, so that a process without the task's definition (the CLI) refuses to make its
   * runs without them (see `triggerSchedule` in manage.ts).
   */
  limits?: boolean;
}

/** A definition ready to upsert; `next` is the first fire strictly after `now`... or at it. */
export function scheduleDefinition(d: DefinitionInput, now: number): ScheduleDefinition {
  const spec = JSON.stringify(specOf(d.schedule));
  const options = JSON.stringify(d.limits ? { ...d.policies, limits: true } : d.policies);
  const hash = createHash('sha256')
    .update(JSON.stringify([d.task, spec, d.input, options]))
    .digest('hex')
    .slice(0, 32);
  return {
    id: d.id,
    queue: d.queue,
    task: d.task,
    spec,
    input: d.input,
    options,
    hash,
    version: d.version,
    next: nextFire(d.schedule, now - 1),
  };
}

export interface StoredSchedule {
  schedule: Schedule;
  policies: SchedulePolicies;
}

/** A stored record's spec and policies, or a ConfigError saying what is wrong with them. */
export function readStored(rec: Pick<ScheduleRecord, 'id' | 'spec' | 'options'>): StoredSchedule {
  let spec: unknown;
  let options: unknown;
  try {
    spec = JSON.parse(rec.spec);
    options = JSON.parse(rec.options);
  } catch (err) {
    throw new ConfigError(`schedule ${rec.id}: its stored spec or options are not JSON (${(err as Error).message})`);
  }
  const schedule = compileSchedule(spec as ScheduleSpec, `schedule ${rec.id}`);
  const policies = checkPolicies((options ?? {}) as Partial<SchedulePolicies>, `schedule ${rec.id}`);
  return { schedule, policies };
}

export interface FirePlan {
  /** The nominal times to create a run for, oldest first, and whether each is backfilled. */
  runs: { at: number; backfilled: boolean }[];
  /** Nominal times given up (counted as missed). */
  missed: number;
  /** The next fire time to store (null: the schedule has ended). */
  next: number | null;
}

/**
 * The fire step of a schedule whose stored next fire time is `F`, planned at `now` (F is at or
 * before `now + lead`). A fire time within `catchUpMs` behind `now` is on time: it gets its run.
 * Older ones are missed: the policy decides which get a run (marked backfilled) and which are
 * counted. At most `limit` times are looked at in one step (the next step goes on from there).
 */
export function planFire(s: StoredSchedule, F: number, now: number, limit = 10_000): FirePlan {
  const { schedule, policies } = s;
  const cutoff = now - policies.catchUpMs;
  if (F >= cutoff) return { runs: [{ at: F, backfilled: false }], missed: 0, next: nextFire(schedule, F) };
  // Every time from F to now: the late ones (before the cutoff) and the ones still on time.
  const { times, truncated } = firesBetween(schedule, F, now + 1, limit);
  if (times.length === 0) return { runs: [], missed: 0, next: nextFire(schedule, F) };
  const last = times[times.length - 1] as number;
  // More than `limit` times behind: this step counts them all as missed; a later step reaches the
  // latest ones, where the policy applies (so `all` keeps at most maxBackfill of the last `limit`).
  if (truncated && last < cutoff) return { runs: [], missed: times.length, next: nextFire(schedule, last) };
  const late = times.filter((t) => t < cutoff);
  const onTime = times.filter((t) => t >= cutoff);
  const runs: FirePlan['runs'] = onTime.map((at) => ({ at, backfilled: false }));
  let kept: number[] = [];
  if (policies.missed === 'latest' && onTime.length === 0) kept = late.slice(-1);
  else if (policies.missed === 'all') kept = late.slice(-policies.maxBackfill);
  runs.unshift(...kept.map((at) => ({ at, backfilled: true })));
  return { runs, missed: late.length - kept.length, next: nextFire(schedule, last) };
}

/** When a run of nominal time `at`, due at `dueAt`, expires under the policy (undefined: never). */
export function expiryOf(s: StoredSchedule, at: number, dueAt: number): number | undefined {
  const e = s.policies.expire;
  if (e === 'never') return undefined;
  if (e === 'period') {
    const next = nextFire(s.schedule, at);
    return next === null ? undefined : dueAt + (next - at);
  }
  return dueAt + e;
}

/** The idempotency key of the run of schedule `id` at nominal time `at`: the same for a fire and a backfill. */
export function fireKey(id: string, at: number): string {
  return `schedule:${id}:${at}`;
}

/** The first fire times of a stored schedule from `after` on (for listings); [] when its spec cannot be read. */
export function upcoming(rec: Pick<ScheduleRecord, 'id' | 'spec' | 'options' | 'next'>, count: number): number[] {
  if (rec.next === null) return [];
  try {
    const { schedule } = readStored(rec);
    const out = [rec.next];
    while (out.length < count) {
      const t = nextFire(schedule, out[out.length - 1] as number);
      if (t === null) break;
      out.push(t);
    }
    return out;
  } catch {
    return [];
  }
}

export type { NormalizedSpec };

/** Whether a stored schedule's options record that its task has flow-control limits (`DefinitionInput.limits`). */
export function limitsRecorded(rec: Pick<ScheduleRecord, 'options'>): boolean {
  try {
    return (JSON.parse(rec.options) as { limits?: unknown } | null)?.limits === true;
  } catch {
    return false;
  }
}
