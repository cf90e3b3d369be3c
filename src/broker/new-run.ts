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
  /**
   * The run's deadline to start (epoch ms; its task's `expiresIn`, or the enqueue's): a run that
   * never started (no attempt counted: a release or a back-off gives its attempt back) is failed
   * by `reserve` with reason `expired` instead of leased once `now` is past it; the dead-letter
   * state, so `retry` may still replay it (without the deadline). A run that started once runs
   * its retries whatever the deadline. Absent: none. SQLite fails every such run of the queue at
   * each reserve (an index of them); Redis the ones reserve reaches (its queue lists are FIFO).
   */
  startBy?: number;
  /**
   * Debounce (docs/flow-control.md): when the task and queue already have a `scheduled` run of
   * this key that never started, created by an enqueue with a debounce, that run takes this input and is moved to
   * this `runAt` (but not past the burst's `maxAt`, set by its first run; null: no bound), and
   * the enqueue returns it (`created: false`). Otherwise the run is created and the key names it.
   * Atomic with the enqueue. Not with an idempotency key. The key no longer matches once its run
   * is no longer scheduled (started, cancelled, deleted): the next enqueue makes a new run.
   */
  debounce?: { key: string; maxAt: number | null };
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
