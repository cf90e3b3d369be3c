// Periodic tasks, the time core: schedule specs and their nominal fire times (the package's entry,
// src/index.ts, exports what users need; plan.ts and manage.ts hold the fire plan and the run-time management).
export {
  type CronSpec,
  canonicalSpec,
  compileSchedule,
  type EverySpec,
  type Instant,
  type NormalizedSpec,
  type Schedule,
  type ScheduleIssue,
  type ScheduleSpec,
  ScheduleSpecError,
  scheduleIssues,
} from './spec.ts';
export { type FiresBetween, firesBetween, nextFire, nextFires } from './times.ts';
export { MAX_TIME, MIN_TIME } from './zone.ts';
