/**
 * Schedule definitions and records as the Broker contract stores them (see `upsertSchedule`,
 * `dueSchedules` and the other schedule methods in types.ts, which re-exports these types).
 */

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
