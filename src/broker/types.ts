/**
 * The Broker contract: the one seam between Errand and storage.
 *
 * Everything above this file (tasks, handles, the worker, the HTTP layer, the dashboard) reads and
 * writes runs only through these methods. Every broker (Redis, embedded SQLite) implements all of
 * them with the same semantics, and `test/conformance` checks that they do.
 *
 * Conventions:
 * - Times are epoch milliseconds taken from the caller (`now` arguments), never from the storage
 *   server, so that tests can drive time and every broker agrees on what "due" means.
 * - Inputs, results, errors and progress cross this seam as JSON text. The broker stores them as
 *   given and never parses them: decoding (and the handling of a corrupt value) is the caller's.
 * - Every state transition is atomic: a reader never sees a run half way between two states.
 * - Batch methods exist so that callers never need one round trip per run.
 */

import type { RunRecord, RunState, ScheduleMark } from '../core/run.ts';
import type { EnqueueResult, NewRun } from './new-run.ts';
import type { NewWorkflow, SpawnSettlement, WorkflowCancelOutcome, WorkflowCreated, WorkflowRecord } from './workflow-types.ts';
import type { DueSchedules, FireOutcome, FireRequest, ScheduleDefinition, ScheduleRecord, UpsertScheduleResult } from './schedule-types.ts';

export type { FlowCounts, FlowHeldRuns, FlowKeyInfo, FlowKeyPage, FlowKeyQuery, FlowKeySort, FlowRate, FlowSpec } from './flow-types.ts';
export type { EnqueueResult, NewRun } from './new-run.ts';
export {
  type BrokerInspector,
  LATENCY_BUCKETS_MS,
  type MinuteStats,
  type RunFilter,
  type RunPage,
  type WorkerInfo,
  type WorkerStatus,
} from './inspector-types.ts';
export {
  DEPENDENCY_POLICIES,
  type Dependency,
  type DependencyPolicy,
  type InputFrom,
  type NewWorkflow,
  type NewWorkflowRun,
  type SpawnSettlement,
  type WorkflowCancelOutcome,
  type WorkflowCreated,
  type WorkflowEdge,
  type WorkflowRecord,
} from './workflow-types.ts';
export type {
  DueSchedules,
  FireOutcome,
  FireOverlap,
  FireRequest,
  ScheduleDefinition,
  ScheduleRecord,
  UpsertScheduleResult,
} from './schedule-types.ts';

// The run model lives in src/core/run.ts (everything above the broker reads it); re-exported here,
// where the contract and the public API have always named it.
export {
  type AttemptRecord,
  FINISHED_STATES,
  type FlowWait,
  RUN_STATES,
  type RunError,
  type RunFlow,
  type RunRecord,
  type RunState,
  type ScheduleMark,
} from '../core/run.ts';

/** A run handed to a worker under a lease. */
export interface Reservation {
  id: string;
  task: string;
  queue: string;
  input: string;
  /** 1 for the first start; incremented each time the run is reserved. The lease is identified by (id, attempt). */
  attempt: number;
  priority: number;
  enqueuedAt: number;
  startedAt: number;
  traceparent?: string;
  schedule?: ScheduleMark;
  /**
   * How many times the run's lease was lost before this reservation (its worker died or stalled),
   * when it was: a worker holds at most one run one short of `maxLeaseLosses` (a run that kills its
   * worker must not take the runs beside it down with it).
   */
  leaseLosses?: number;
}

export interface ReserveRequest {
  workerId: string;
  queues: readonly string[];
  /** At most this many runs (the worker's free slots). */
  max: number;
  /** Lease length in ms: the run returns to `queued` if not renewed or settled by `now + leaseMs`. */
  leaseMs: number;
  now: number;
  /**
   * Outcomes of this worker's runs to record first, exactly as `settle(workerId, settle, now)`
   * would (each applied only if its lease is still held), in the same call: a worker sends the
   * runs it finished along with its next reservation, which saves a round trip per batch. The
   * statuses are in `ReserveResult.settled`. If the call fails, some may have been recorded:
   * settling them again is harmless (they report `lost`).
   */
  settle?: readonly Settlement[];
}

export interface ReserveResult {
  /**
   * Queues in the order requested (a run of an earlier queue comes before any run of a later one,
   * whatever their priorities), and within a queue by priority, FIFO within a priority.
   */
  runs: Reservation[];
  /**
   * The earliest time something in these queues becomes due without an enqueue (a scheduled run's
   * `runAt`, or an active run's lease expiry), or null when nothing is pending. An idle worker sleeps
   * until then unless woken earlier.
   */
  nextAt: number | null;
  /** With `settle`: one status per outcome, in order. */
  settled?: SettleStatus[];
}

export type Settlement =
  | { id: string; attempt: number; outcome: 'succeeded'; result: string | null; retentionMs: number }
  | { id: string; attempt: number; outcome: 'failed'; error: string; retentionMs: number }
  | { id: string; attempt: number; outcome: 'retry'; error: string; runAt: number }
  | SpawnSettlement
  /**
   * The handler asked to back off (docs/flow-control.md): the run goes back to queued at the head
   * of its key, its attempt not counted (as `release`), recorded in its history as `backoff`; and
   * its key (`scope: 'key'`) or its group (`'group'`; also for a run whose key is '') is held out
   * of the rings until `until` (the later of this and a wait already set). A run without a flow spec is put back alone: scheduled
   * at `until` (queued when `until <= now`). Not counted in the stats' settlements.
   */
  | { id: string; attempt: number; outcome: 'backoff'; until: number; scope: 'key' | 'group' };

/** `lost`: the lease was no longer this worker's (expired and recovered, cancelled, or the run is gone); nothing was written. */
export type SettleStatus = 'ok' | 'lost';

/**
 * A run that ran outside this broker's workers, recorded once it finished so that listings, counts,
 * stats and the dashboard show it beside the broker's own runs: a Celery task served by an
 * `errand/celery` worker. Its enqueue time is the time in its id; it finished at the `now` of the call.
 */
export interface FinishedRun {
  /** `<queue>.<26-char time-ordered id>`, like every run id. */
  id: string;
  task: string;
  queue: string;
  /** JSON text of what the run was given. */
  input: string;
  outcome: 'succeeded' | 'failed';
  /** `succeeded`: JSON text of the result, null for none. */
  result?: string | null;
  /** `failed`: JSON text of the error (a RunError). */
  error?: string;
  /** Attempts made, at least 1. */
  attempts: number;
  /** The worker that ran the last attempt. */
  worker: string;
  /** When the last attempt started (epoch ms). */
  startedAt: number;
  /** How long the record is kept, in ms; 0 or less: nothing is stored (the stats still count it). */
  retentionMs: number;
  /**
   * Where it ran (e.g. `celery`): stored as the run's `origin`. A recorded run is a record of work done
   * elsewhere, never work to do: `retry` refuses it (`recorded`) and `retryFailed` leaves it.
   */
  origin: string;
  /** As NewRun's: a run already holding the key (same queue and task) stands, and nothing is recorded. */
  idempotencyKey?: string;
  idempotencyTtl?: number;
}

export interface Lease {
  id: string;
  attempt: number;
}

export type CancelOutcome =
  | { outcome: 'cancelled'; previous: RunState }
  | { outcome: 'finished'; state: RunState }
  | { outcome: 'not_found' };

export type RetryOutcome =
  | { outcome: 'queued' }
  | { outcome: 'not_failed'; state: RunState }
  | { outcome: 'not_found' }
  /** The run was recorded from elsewhere (recordFinished): it is replayed where it ran, not here. */
  | { outcome: 'recorded'; origin: string };

export type QueueCounts = Record<RunState, number>;

export interface BrokerOptions {
  /** Runs whose lease expired this many times are failed with reason `lease_lost` instead of requeued. Default 3. */
  maxLeaseLosses?: number;
  /** Retention of runs that the broker itself fails (lease losses, corrupt records), in ms. Default 7 days. */
  failedRetentionMs?: number;
}

export interface Broker {
  readonly kind: 'redis' | 'sqlite';
  /**
   * True when calls are served by another process (a server over the network). A worker under load
   * then keeps two reservations in flight, and merged enqueues two calls, so that the caller's work
   * and the broker's overlap; with a broker that works in the caller's process (SQLite) that would
   * only add calls.
   */
  readonly remote?: boolean;
  /**
   * How many lost leases fail a run (`BrokerOptions.maxLeaseLosses`, default 3), as this broker was
   * made with. A worker takes its threshold from here: it holds at most one run one short of it.
   */
  readonly maxLeaseLosses: number;

  /**
   * Creates runs, in order. Runs sharing an idempotency key (same task) collapse into the first. A
   * run whose id is taken already (stored, or earlier in the same call) is not created: its result
   * reports the stored run (`created: false` and that run's state), which is left unchanged.
   */
  enqueue(runs: readonly NewRun[], now: number): Promise<EnqueueResult[]>;

  /**
   * Atomically, per queue: moves due scheduled runs to queued, recovers runs whose lease expired
   * (back to queued, or failed after `maxLeaseLosses`), then leases up to `max` queued runs to the
   * worker, marking them active with `attempt` incremented.
   */
  reserve(req: ReserveRequest): Promise<ReserveResult>;

  /** Records the outcome of leased runs. Each item is applied only if (id, attempt) is still this worker's lease. */
  settle(workerId: string, settlements: readonly Settlement[], now: number): Promise<SettleStatus[]>;

  /**
   * Records runs that ran elsewhere, finished (see FinishedRun), in one transaction per queue. One
   * boolean per run: false when its id or its idempotency key (same queue and task) is held by a run
   * already, which is left unchanged. Counts each recorded run in the stats of `now`'s minute as
   * enqueued, then succeeded or failed, with its wait (`startedAt` minus the time in its id) and
   * run time (`now - startedAt`).
   */
  recordFinished(runs: readonly FinishedRun[], now: number): Promise<boolean[]>;
  /** Extends leases to `now + leaseMs`. Returns the ids whose lease is no longer held (cancelled, recovered, gone). */
  renew(workerId: string, leases: readonly Lease[], leaseMs: number, now: number): Promise<string[]>;

  /** Hands leased runs back (worker shutting down): they return to queued at once, the attempt not counted. */
  release(workerId: string, leases: readonly Lease[], now: number): Promise<void>;

  /** Stores a progress value (JSON text) on an active run held by this worker. */
  progress(workerId: string, lease: Lease, progress: string): Promise<SettleStatus>;

  getRun(id: string): Promise<RunRecord | null>;

  /** Cancels a queued, scheduled or active run. An active run's worker learns of it on its next renew (or sooner, see `onCancel`). */
  cancel(id: string, now: number): Promise<CancelOutcome>;

  /**
   * Replays a failed or cancelled run: back to queued with its attempt count reset (so a run
   * cancelled by mistake can still be done, under its id and idempotency key). A run in another
   * state: `not_failed` with that state, unchanged; a run recorded from elsewhere (recordFinished):
   * `recorded` with its origin, unchanged.
   */
  retry(id: string, now: number): Promise<RetryOutcome>;

  /**
   * Creates a workflow: all its runs and edges in one atomic step, or nothing. A run with
   * dependencies is created `waiting`; it becomes `queued` exactly once, in the same atomic step
   * that settles (succeeded, or failed under a `continue` edge) the last of its dependencies, with
   * its input built as its `inputFrom` says. (Redis, runs in several queues: one step per queue,
   * and no run starts before every queue's runs exist; an edge between queues is applied by the
   * relay, exactly once, right after that settle rather than in it. See docs/workflows.md.) A terminal failure of a dependency (settled `failed`,
   * failed by the broker, or cancelled) applies each edge's `onFailure` in that same step,
   * transitively. A workflow whose id is stored already, or with a run whose idempotency key a
   * stored run holds (`held`): nothing is created, `created: false`. A run with a flow spec
   * (`NewRun.flow`) is under its limits as an enqueued run is, counting in its key only while
   * queued or active: from when it becomes queued (at creation, when made ready, released,
   * promoted or replayed) until it ends; `cancelWorkflow` frees its key as `cancel` does.
   * Throws `ConfigError` for a workflow that is not a DAG of its own runs (see docs/workflows.md).
   */
  createWorkflow(workflow: NewWorkflow, now: number): Promise<WorkflowCreated>;

  /** A workflow: its runs (those not yet pruned) and edges; null when unknown. */
  getWorkflow(id: string): Promise<WorkflowRecord | null>;

  /**
   * Cancels every run of the workflow that is not finished (waiting, queued, scheduled, active as
   * `cancel` does), atomically per queue. Returns how many were cancelled.
   */
  cancelWorkflow(id: string, now: number): Promise<WorkflowCancelOutcome>;

  /** Counts by state for each queue (all queues known to the broker when `queues` is omitted). */
  counts(queues?: readonly string[]): Promise<Record<string, QueueCounts>>;

  /** Deletes finished runs whose retention has passed, and their idempotency keys. Returns how many were removed. */
  prune(now: number): Promise<number>;

  /**
   * Resolves when work may be available in one of `queues` (an enqueue, a retry, a cancel freeing
   * nothing is fine too: spurious wake-ups are allowed), when `until` (epoch ms) is reached, or when
   * `signal` aborts. Never busy-polls. A wake-up that happens after this broker instance's previous
   * `reserve` call is not lost, even if it happens before `waitForWork` is called.
   */
  waitForWork(queues: readonly string[], until: number | null, signal: AbortSignal): Promise<void>;

  /**
   * Calls `listener` whenever the run may have changed state (spurious calls allowed). The caller
   * re-reads the run. Resolves once watching is in place; the returned function stops it.
   */
  watch(id: string, listener: () => void): Promise<() => void>;

  /** Calls `listener` with ids of active runs cancelled anywhere, as soon as the broker can tell. Optional fast path; renew is the guarantee. */
  onCancel(listener: (ids: string[]) => void): () => void;

  /** Throws when storage is unreachable. */
  ping(): Promise<void>;

  // Schedules (periodic tasks): stored per queue; see the section below and docs/schedules.md.

  /**
   * Creates or updates a schedule definition, atomically. A newer definition wins and an older one
   * never overwrites it: the stored one is replaced only when `def.version` is greater, or equal with
   * a greater `def.hash` (string order; so two definitions declared at once settle on one, whatever
   * the order of the calls). An equal version and hash is `unchanged`. On replace, the stored next
   * fire time is kept when `spec` is unchanged, and taken from `def.next` otherwise; `paused`, the
   * counters and the last fire are kept.
   */
  upsertSchedule(def: ScheduleDefinition, now: number): Promise<UpsertScheduleResult>;

  /**
   * The fire step, atomic (one transaction, one script): only if the schedule exists, is not
   * paused, its `hash` is `req.hash` and its next fire time is still `req.expect`, moves the next
   * fire time to `req.next` (null: the schedule has ended), adds `req.missed` to its misses and
   * `req.runs.length` to its fires, records the last fire, and creates `req.runs` exactly as
   * `enqueue` would (their idempotency keys make a second creation of the same fire a no-op),
   * applying `req.overlap` against the previous run in the same step (see `FireRequest.overlap`).
   * Otherwise nothing is written: the outcome says why, with the stored next time and hash.
   */
  fireSchedule(req: FireRequest): Promise<FireOutcome>;

  /** Schedules of these queues (all queues when omitted), sorted by queue then id. */
  listSchedules(queues?: readonly string[]): Promise<ScheduleRecord[]>;

  /**
   * Schedules of these queues that are not paused and whose next fire time is at or before `until`
   * (at most `limit`, earliest first), and the earliest next fire time of the others (null: none).
   * A worker sleeps until then: this must stay cheap with thousands of schedules.
   */
  dueSchedules(queues: readonly string[], until: number, limit: number): Promise<DueSchedules>;

  getSchedule(queue: string, id: string): Promise<ScheduleRecord | null>;

  /** Pauses (true) or resumes (false) a schedule. False when there is no such schedule. */
  pauseSchedule(queue: string, id: string, paused: boolean, now: number): Promise<boolean>;

  /** Deletes a schedule (its runs stay). False when there was none. */
  deleteSchedule(queue: string, id: string): Promise<boolean>;

  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Schedules. The broker stores definitions and fire times; it never computes a time itself (the
// schedule layer does, in the caller): every method takes the times it writes. The definition,
// record and fire-step types are in schedule-types.ts (re-exported here).
// Inspection and administration (`BrokerInspector`: what the dashboard, /metrics and `errand
// inspect` need) are in inspector-types.ts (re-exported here).
// ---------------------------------------------------------------------------------------------
