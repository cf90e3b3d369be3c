/**
 * The embedded broker: one SQLite file (WAL mode) shared by an API process and its workers on one
 * machine, through `node:sqlite`. Errand's default when no Redis URL is given.
 *
 * - Every state transition is one `BEGIN IMMEDIATE` transaction: writers are serialised by SQLite's
 *   write lock, so a run is never leased to two workers, across processes too. Statements are
 *   prepared once; batch methods run one transaction for the whole batch.
 * - Reserve leases with one `UPDATE ... WHERE rid IN (SELECT ... ORDER BY priority DESC, seq LIMIT ?)
 *   RETURNING ...` per queue, over a partial index of queued runs.
 * - Wake-ups (see `wake-hub.ts`): in-process events, and a watch on the database folder for writes
 *   from other processes; a few-second safety timer only guards against lost events. `watch` and
 *   `onCancel` cross processes the same way (run revisions, the cancel log).
 * - Rows are validated as they are read: a run stored corrupt (edited by hand, say) is failed with
 *   reason `corrupt` by reserve, and never makes a whole batch throw.
 *
 * node:sqlite is synchronous: a transaction that waits for another process's write lock blocks this
 * process's event loop for that time (at most `busyTimeoutMs`). Transactions are kept short for that
 * reason (prune, purge and bulk replays work in slices of 1000 runs).
 *
 * The parts, along the seams of the contract: `core.ts` (the connection, statements, transactions,
 * stats), `transitions.ts` (enqueue to prune) with `reserve.ts` (reserve and settle),
 * `notifications.ts` (waitForWork, watch, onCancel), `inspection.ts` (reads and administration);
 * this file assembles them as the `SqliteBroker`.
 * Schema and migrations: `schema.ts`. SQL and row decoding: `statements.ts`.
 */
import type {
  Broker,
  BrokerInspector,
  CancelOutcome,
  DueSchedules,
  EnqueueResult,
  FinishedRun,
  FlowCounts,
  FlowKeyPage,
  FlowKeyQuery,
  FireOutcome,
  FireRequest,
  Lease,
  MinuteStats,
  NewRun,
  NewWorkflow,
  QueueCounts,
  ReserveRequest,
  ReserveResult,
  RetryOutcome,
  RunFilter,
  RunPage,
  RunRecord,
  WorkflowCancelOutcome,
  WorkflowRecord,
  ScheduleDefinition,
  ScheduleRecord,
  Settlement,
  SettleStatus,
  WorkerInfo,
  UpsertScheduleResult,
  WorkerStatus,
} from '../types.ts';
import { checkFlowKeyQuery } from '../shared/flow.ts';
import { SqliteCore, type SqliteBrokerOptions } from './core.ts';
import * as inspection from './inspection.ts';
import * as schedules from './schedules.ts';
import { SqliteNotifications } from './notifications.ts';
import { recordFinished as recordFinishedRuns } from './record.ts';
import * as reserving from './reserve.ts';
import * as transitions from './transitions.ts';
import { releaseHub } from './wake-hub.ts';
import * as workflows from './workflows.ts';

export type { SqliteBrokerOptions } from './core.ts';

export class SqliteBroker implements Broker, BrokerInspector {
  readonly kind = 'sqlite' as const;
  /** The file (absolute) or `:memory:`. */
  readonly path: string;
  readonly maxLeaseLosses: number;
  readonly #c: SqliteCore;
  readonly #n: SqliteNotifications;

  constructor(options: SqliteBrokerOptions) {
    this.#c = new SqliteCore(options);
    this.path = this.#c.path;
    this.maxLeaseLosses = this.#c.maxLeaseLosses;
    this.#n = new SqliteNotifications(this.#c);
  }

  // Schedules (schedules.ts)

  async upsertSchedule(def: ScheduleDefinition, now: number): Promise<UpsertScheduleResult> {
    return schedules.upsertSchedule(this.#c, def, now);
  }

  async fireSchedule(req: FireRequest): Promise<FireOutcome> {
    return schedules.fireSchedule(this.#c, req);
  }

  async listSchedules(queues?: readonly string[]): Promise<ScheduleRecord[]> {
    return schedules.listSchedules(this.#c, queues);
  }

  async dueSchedules(queues: readonly string[], until: number, limit: number): Promise<DueSchedules> {
    return schedules.dueSchedules(this.#c, queues, until, limit);
  }

  async getSchedule(queue: string, id: string): Promise<ScheduleRecord | null> {
    return schedules.getSchedule(this.#c, queue, id);
  }

  async pauseSchedule(queue: string, id: string, paused: boolean, now: number): Promise<boolean> {
    return schedules.pauseSchedule(this.#c, queue, id, paused, now);
  }

  async deleteSchedule(queue: string, id: string): Promise<boolean> {
    return schedules.deleteSchedule(this.#c, queue, id);
  }

  // Transitions (transitions.ts; reserve and settle: reserve.ts)

  async enqueue(runs: readonly NewRun[], now: number): Promise<EnqueueResult[]> {
    return transitions.enqueue(this.#c, runs, now);
  }

  async reserve(req: ReserveRequest): Promise<ReserveResult> {
    return reserving.reserve(this.#c, req, this.#n.seen);
  }

  async settle(workerId: string, settlements: readonly Settlement[], now: number): Promise<SettleStatus[]> {
    return reserving.settle(this.#c, workerId, settlements, now);
  }

  async recordFinished(runs: readonly FinishedRun[], now: number): Promise<boolean[]> {
    return recordFinishedRuns(this.#c, runs, now);
  }

  async renew(workerId: string, leases: readonly Lease[], leaseMs: number, now: number): Promise<string[]> {
    return transitions.renew(this.#c, workerId, leases, leaseMs, now);
  }

  async release(workerId: string, leases: readonly Lease[], now: number): Promise<void> {
    transitions.release(this.#c, workerId, leases, now);
  }

  async progress(workerId: string, lease: Lease, progress: string): Promise<SettleStatus> {
    return transitions.progress(this.#c, workerId, lease, progress);
  }

  async cancel(id: string, now: number): Promise<CancelOutcome> {
    return transitions.cancel(this.#c, id, now);
  }

  async createWorkflow(workflow: NewWorkflow, now: number): Promise<{ id: string; created: boolean }> {
    return workflows.createWorkflow(this.#c, workflow, now);
  }

  async getWorkflow(id: string): Promise<WorkflowRecord | null> {
    return workflows.getWorkflow(this.#c, id);
  }

  async cancelWorkflow(id: string, now: number): Promise<WorkflowCancelOutcome> {
    return workflows.cancelWorkflow(this.#c, id, now);
  }

  async retry(id: string, now: number): Promise<RetryOutcome> {
    return transitions.retry(this.#c, id, now);
  }

  async prune(now: number): Promise<number> {
    return transitions.prune(this.#c, now);
  }

  // Notifications (notifications.ts)

  waitForWork(queues: readonly string[], until: number | null, signal: AbortSignal): Promise<void> {
    return this.#n.waitForWork(queues, until, signal);
  }

  async watch(id: string, listener: () => void): Promise<() => void> {
    return this.#n.watch(id, listener);
  }

  onCancel(listener: (ids: string[]) => void): () => void {
    return this.#n.onCancel(listener);
  }

  // Reads and administration (inspection.ts)

  async getRun(id: string): Promise<RunRecord | null> {
    return inspection.getRun(this.#c, id);
  }

  async counts(queues?: readonly string[]): Promise<Record<string, QueueCounts>> {
    return inspection.counts(this.#c, queues);
  }

  async listRuns(filter: RunFilter): Promise<RunPage> {
    return inspection.listRuns(this.#c, filter);
  }

  async listQueues(): Promise<string[]> {
    return inspection.listQueues(this.#c);
  }

  async heartbeat(worker: WorkerInfo, ttlMs: number, now: number): Promise<void> {
    inspection.heartbeat(this.#c, worker, ttlMs, now);
  }

  async removeWorker(id: string): Promise<void> {
    inspection.removeWorker(this.#c, id);
  }

  async listWorkers(now: number): Promise<WorkerStatus[]> {
    return inspection.listWorkers(this.#c, now);
  }

  async pause(queue: string): Promise<void> {
    inspection.pause(this.#c, queue);
  }

  async resume(queue: string): Promise<void> {
    inspection.resume(this.#c, queue);
  }

  async pausedQueues(): Promise<string[]> {
    return inspection.pausedQueues(this.#c);
  }

  async purge(queue: string, now: number): Promise<number> {
    return inspection.purge(this.#c, queue, now);
  }

  async retryFailed(queue: string, task: string | undefined, now: number): Promise<number> {
    return inspection.retryFailed(this.#c, queue, task, now);
  }

  /** None: a full disk shows as `BrokerFullError` on the writes it refuses. */
  async storageWarnings(): Promise<string[]> {
    this.#c.open();
    return [];
  }

  async stats(queues: readonly string[], since: number): Promise<Record<string, MinuteStats[]>> {
    return inspection.stats(this.#c, queues, since);
  }

  async flowCounts(queues: readonly string[]): Promise<Record<string, FlowCounts>> {
    return inspection.flowCounts(this.#c, queues);
  }

  async flowKeys(queue: string, query?: FlowKeyQuery): Promise<FlowKeyPage> {
    return inspection.flowKeys(this.#c, queue, checkFlowKeyQuery(query));
  }

  /** How the file is set up on this connection (for `errand inspect`, diagnostics and tests). */
  storageInfo(): ReturnType<typeof inspection.storageInfo> {
    return inspection.storageInfo(this.#c);
  }

  // Setup

  async ping(): Promise<void> {
    this.#c.read(() => this.#c.s.ping.get());
  }

  async close(): Promise<void> {
    const c = this.#c;
    if (c.closed) return;
    c.closed = true;
    this.#n.close();
    releaseHub(c.hub);
    c.db.close();
  }
}
