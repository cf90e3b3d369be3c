export { connectBroker, defaultBrokerUrl } from './broker/connect.ts';
export type * from './broker/types.ts';
export {
  BackOff,
  type BackOffScope,
  BrokerConfigError,
  BrokerFullError,
  type BrokerStorage,
  BrokerUnavailableError,
  ConfigError,
  EmptyPrefixError,
  ErrandError,
  InputError,
  type InputIssue,
  PermanentError,
  ResultTimeoutError,
  RunCancelledError,
  RunFailedError,
  RunNotFoundError,
  ScheduleNotFoundError,
  ScheduleLimitsError,
  ScheduleVersionError,
  TaskTimeoutError,
  WorkflowNotFoundError,
  IsolateCrashedError,
  IsolateMemoryError,
} from './core/errors.ts';
export { isRunId, queueOfRunId } from './core/ids.ts';
export { type CreateLoggerOptions, createLogger, type LogFormat, logFormat } from './core/logger.ts';
export type { RunInfo } from './core/run-info.ts';
export { REDACTED, redactRecord, redactRun, redactValue } from './core/redact.ts';
export { createErrand, type DeclaredSchedule, Errand, type ErrandOptions, Task } from './errand.ts';
export type { BackfillResult, ScheduleOptions, ScheduleView } from './schedule/manage.ts';
export type { MissedPolicy, OverlapPolicy, SchedulePolicies } from './schedule/plan.ts';
export {
  type CronSpec,
  compileSchedule,
  type EverySpec,
  type Instant,
  type Schedule,
  type ScheduleIssue,
  type ScheduleSpec,
  ScheduleSpecError,
  scheduleIssues,
} from './schedule/spec.ts';
export { type FiresBetween, firesBetween, nextFire, nextFires } from './schedule/times.ts';
export { RunHandle } from './task/handle.ts';
export { backoffDelay, DEFAULTS, type Retention, type RetryPolicy } from './task/options.ts';
export type { Isolation } from './task/isolation.ts';
export type { KeyLimits, RateLimit, TaskLimits } from './task/limits.ts';
export type { EnqueueOptions, Handler, TaskContext, TaskOptions } from './task/task.ts';
export {
  type AnyFlow,
  chain,
  chord,
  type DagFlow,
  dag,
  type Flow,
  type GroupFlow,
  group,
  type Join,
  type Pending,
  type ResultOf,
  type Spawn,
  type StepOptions,
} from './task/workflow.ts';
export { type WorkflowInfo, WorkflowHandle, type WorkflowState, workflowState } from './task/workflow-handle.ts';
export type { FireEvent } from './worker/schedules.ts';
export { type RunEvent, Worker, type WorkerHost, type WorkerOptions } from './worker/worker.ts';
