/**
 * Schedule definitions and records as the Broker contract stores them (see `upsertSchedule`,
 * `dueSchedules` and the other schedule methods in types.ts, which re-exports these types).
 */
import type { EnqueueResult, NewRun } from './new-run.ts';

/** A schedule's definition, as upserted. Ids are unique within their queue. */
export interface ScheduleDefinition {
  /** 1 to 128 characters, no spaces. */
  id: string;
  queue: string;
  task: string;
  /** JSON text of the time spec (cron or every, timezone, start, end); stored as given. */
  spec: string;
  /** JSON text of the runs' input. */
  input: string;
  /** JSON text of the schedule's policies and run options; stored as given. */
  options: string;
  /** A digest of the whole definition (spec, input, options, task). */
  hash: string;
  /** The definition's version: a newer deploy declares a greater one (see `upsertSchedule`). */
  version: number;
  /** The first nominal fire time from now, for a new schedule or a changed spec (null: none). */
  next: number | null;
}

export interface ScheduleRecord extends ScheduleDefinition {
  paused: boolean;
  /** Fires done (runs created by the fire step). */
  fires: number;
  /** Nominal fire times missed and not run (the skip policy, the bounds of the others). */
  missed: number;
  /** The nominal time of the latest fire, and the run it created. */
  lastFire?: number;
  lastRun?: string;
  createdAt: number;
  updatedAt: number;
}

export type UpsertScheduleResult =
  | { outcome: 'created' | 'updated' | 'unchanged'; schedule: ScheduleRecord }
  /** A newer (or equal-versioned, greater-hash) definition is stored: it stays. */
  | { outcome: 'older'; schedule: ScheduleRecord };

export interface DueSchedules {
  schedules: ScheduleRecord[];
  /** The earliest next fire time among the unpaused schedules not returned, or null. */
  nextAt: number | null;
}

export interface FireRequest {
  queue: string;
  id: string;
  /** The definition the caller computed the times from. */
  hash: string;
  /** The next fire time the caller read: the compare in compare-and-set. */
  expect: number;
  /** The following fire time to store (null: the schedule has ended). */
  next: number | null;
  /** The runs to create (usually one, marked with `schedule`, idempotency key `schedule:<id>:<at>`). */
  runs: readonly NewRun[];
  /** Nominal times given up (missed-fire policies): added to the schedule's misses. */
  missed: number;
  /**
   * The overlap policy (docs/schedules.md), applied inside the fire step, atomically with the
   * compare-and-set: the schedule's previous run (its stored `lastRun`) overlaps while it is
   * `queued` or `active` (a run scheduled ahead does not). With `runs` given and an overlap:
   * `skip` creates none and adds `runs.length` to the misses; `buffer` writes nothing and answers
   * `buffered` (the schedule stays due); `cancel` creates them and names the previous run in
   * `overlapped` (the caller cancels it). `buffer` without an overlap, when a previous run is stored,
   * creates only the last of `runs` and counts the others as missed. Absent: `allow`.
   */
  overlap?: FireOverlap;
  now: number;
}

/** How a fire treats a previous run still due or running (`SchedulePolicies.overlap`). */
export type FireOverlap = 'allow' | 'skip' | 'cancel' | 'buffer';

export type FireOutcome =
  /**
   * `runs`: one result per run created or found, of the request's runs that the overlap policy kept
   * (all of them, none, or the last); `missed`: what was added to the misses (the request's
   * `missed`, plus the runs the policy gave up); `overlapped`: with `cancel`, the previous run that
   * was still due or running.
   */
  | { outcome: 'fired'; runs: EnqueueResult[]; missed: number; overlapped?: string }
  /** `overlap: 'buffer'` and run `running` (the previous one) is still due or running: nothing written. */
  | { outcome: 'buffered'; running: string }
  /** Another caller fired it first (or it was moved): nothing written. */
  | { outcome: 'stale'; next: number | null; hash: string }
  | { outcome: 'paused' }
  | { outcome: 'not_found' };
