/**
 * A run to create, as the Broker contract takes it (`enqueue`). Re-exported by `types.ts`, where the
 * rest of the contract is; apart so that the workflow types (`workflow-types.ts`) can extend it.
 */
import type { RunState, ScheduleMark } from '../core/run.ts';
import type { FlowSpec } from './flow-types.ts';

/** A run to create. Built and validated by the task layer; the broker stores it as is. */
export interface NewRun {
  /** Globally unique, `<queue>.<26-char time-ordered id>` (see `src/core/ids.ts`). */
  id: string;
  task: string;
  queue: string;
  /** JSON text of the task input (already validated). */
  input: string;
  /** Higher runs first; an integer in [-1000, 1000]. Runs of equal priority run in enqueue order. */
  priority: number;
  /** When the run may start. At or before `now` the run is `queued`, after it `scheduled`. */
  runAt: number;
  /**
   * Idempotency key, scoped to the task within its queue: a second enqueue with the same queue, task
   * and key within `idempotencyTtl` returns the first run. (Keys live with their queue, so Redis
   * Cluster never needs a cross-slot operation.) A key never names a run that no longer exists: it
   * is released when its run is deleted (purge, prune, retention 0), and a key found naming a
   * missing run is taken by the new run. It holds while both its TTL and its run last.
   */
  idempotencyKey?: string;
  /** How long the idempotency key holds, in ms. */
  idempotencyTtl?: number;
  /** W3C trace context of the enqueuer (OpenTelemetry `traceparent`), carried to the worker. */
  traceparent?: string;
  /**
   * How long the run is kept once cancelled, in ms (its task's `retention.cancelled`): stored with
   * the run, so that a cancel by run id from anywhere (the app, HTTP, the CLI, the dashboard) keeps
   * it that long. Absent: the broker's `cancelledRetentionMs`.
   */
  cancelledRetentionMs?: number;
  /** Concurrency limits of the run's task and key (docs/flow-control.md); absent for a task without limits. */
  flow?: FlowSpec;
  /** Set on a run created by a schedule: which schedule, for which nominal fire time (see `ScheduleMark`). */
  schedule?: ScheduleMark;
}

/** What `enqueue` (and the schedule fire step) answers for each run. */
export interface EnqueueResult {
  id: string;
  /** False when an idempotency key matched an existing run: `id` is then that run's id. */
  created: boolean;
  /** The state of the run (the existing run's state when `created` is false). */
  state: RunState;
}
