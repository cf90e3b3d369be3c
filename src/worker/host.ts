// What a worker needs from the app that makes it, and nothing more (as BullMQ's lock manager takes a
// LockManagerWorkerContext rather than the whole Worker): the worker depends on this interface, not
// on `Errand`, so the dependency points one way (errand -> worker). `Errand.worker()` builds one; an
// `Errand` also fits it as it is.
import type { Logger } from 'pino';
import type { Broker, ScheduleDefinition } from '../broker/types.ts';
import type { TaskDefinition } from '../task/task.ts';

export interface WorkerHost {
  /**
   * The broker, connected on first call (every call gives the same one). Its `maxLeaseLosses` is the
   * worker's last-chance threshold (see ReserveLoop#lastChance).
   */
  broker(): Promise<Broker>;
  /** The tasks the worker can run, by name (read when a run starts: tasks defined later are seen). */
  readonly tasks: ReadonlyMap<string, TaskDefinition>;
  /** The parent of the worker's logger (unless `WorkerOptions.logger` is given). */
  readonly logger: Logger;
  /** The redaction paths for the input of a task's runs: their values are scrubbed from the errors the worker logs and stores. */
  redactPaths(task: string): readonly string[];
  /** The largest input of a run a handler spawns (`ctx.spawn`), in bytes of JSON (the app's `maxInputBytes`). */
  readonly maxInputBytes?: number;
  /** The schedules declared in code, as definitions to upsert (their first fire time from `now`). */
  scheduleDefinitions?(now: number): ScheduleDefinition[];
}
