// Periodic tasks, the time core: schedule specs and their nominal fire times. Not yet exported from
// the package's entry: the firing mechanism (the brokers' atomic fire step) is still to come.
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
