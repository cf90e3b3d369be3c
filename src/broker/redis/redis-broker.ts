/**
 * The Redis broker: the Broker contract (`../types.ts`) over Redis 6.2+ or Redis Cluster, with one
 * Lua script per state transition (`./lua/*.lua`, loaded by `./scripts.ts`).
 *
 * Layout (details in the opening comments of the libraries of `lua/`: `runs.lua`, `flow.lua`,
 * `workflow.lua`, `stats.lua`, `common.lua`): every key of a queue shares the hash tag
 * `{<queue>}`, so a queue lives in one Cluster slot and no script touches two queues. A run is a
 * small hash named by the ULID part of its id; queued runs sit in one FIFO list per priority
 * level, scheduled and active runs in sorted sets by due time and lease expiry, finished runs in
 * one sorted set per state by the time in their id (listing, counts) and in one list per minute
 * their retention ends, from which `prune` deletes them.
 *
 * Batches: a batch of runs of one queue is one script call (chunked only when very large); calls
 * for several queues are issued together (ioredis writes them without waiting for replies).
 *
 * Connections per broker instance: one for commands, one subscriber (created on the first
 * `watch`/`onCancel`), and one blocking connection per queue that `waitForWork` waits on.
 *
 * The parts, along the seams of the contract: `core.ts` (options, keys, the command connection),
 * `transitions.ts` (enqueue to prune) with `reserve.ts` (reserve and settle), `notifications.ts` (waitForWork, watch, onCancel),
 * `inspection.ts` (reads and administration), `replies.ts` (typed decoders of the scripts'
 * replies); this file assembles them as the `RedisBroker`.
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
import { RedisCore, type RedisBrokerOptions } from './core.ts';
import { evictionOf, evictionWarnings } from './eviction.ts';
import * as inspection from './inspection.ts';
import * as schedules from './schedules.ts';
import { RedisNotifications } from './notifications.ts';
import { recordFinished as recordFinishedRuns } from './record.ts';
import * as reserving from './reserve.ts';
import * as transitions from './transitions.ts';
import * as workflows from './workflows.ts';

export { CorruptRunError } from './codec.ts';
export type { RedisBrokerOptions } from './core.ts';

export class RedisBroker implements Broker, BrokerInspector {
  readonly kind = 'redis' as const;
  readonly remote = true;
  readonly prefix: string;
  readonly maxLeaseLosses: number;
  readonly #c: RedisCore;
  readonly #n: RedisNotifications;

  constructor(options: RedisBrokerOptions) {
    this.#c = new RedisCore(options);
    this.prefix = this.#c.prefix;
    this.maxLeaseLosses = this.#c.maxLeaseLosses;
    this.#n = new RedisNotifications(this.#c);
  }

  // Schedules (schedules.ts)

  upsertSchedule(def: ScheduleDefinition, now: number): Promise<UpsertScheduleResult> {
    return schedules.upsertSchedule(this.#c, def, now);
  }

  fireSchedule(req: FireRequest): Promise<FireOutcome> {
    return schedules.fireSchedule(this.#c, req);
  }

  listSchedules(queues?: readonly string[]): Promise<ScheduleRecord[]> {
    return schedules.listSchedules(this.#c, queues);
  }

  dueSchedules(queues: readonly string[], until: number, limit: number): Promise<DueSchedules> {
    return schedules.dueSchedules(this.#c, queues, until, limit);
  }

  getSchedule(queue: string, id: string): Promise<ScheduleRecord | null> {
    return schedules.getSchedule(this.#c, queue, id);
  }

  pauseSchedule(queue: string, id: string, paused: boolean, now: number): Promise<boolean> {
    return schedules.pauseSchedule(this.#c, queue, id, paused, now);
  }

  deleteSchedule(queue: string, id: string): Promise<boolean> {
    return schedules.deleteSchedule(this.#c, queue, id);
  }

  // Transitions (transitions.ts; reserve and settle: reserve.ts)

  enqueue(runs: readonly NewRun[], now: number): Promise<EnqueueResult[]> {
    return transitions.enqueue(this.#c, runs, now);
  }

  reserve(req: ReserveRequest): Promise<ReserveResult> {
    return reserving.reserve(this.#c, req, this.#n.cancelsPending);
  }

  settle(workerId: string, settlements: readonly Settlement[], now: number): Promise<SettleStatus[]> {
    return reserving.settle(this.#c, workerId, settlements, now);
  }

  recordFinished(runs: readonly FinishedRun[], now: number): Promise<boolean[]> {
    return recordFinishedRuns(this.#c, runs, now);
  }

  renew(workerId: string, leases: readonly Lease[], leaseMs: number, now: number): Promise<string[]> {
    return transitions.renew(this.#c, workerId, leases, leaseMs, now);
  }

  release(workerId: string, leases: readonly Lease[], now: number): Promise<void> {
    return transitions.release(this.#c, workerId, leases, now);
  }

  progress(workerId: string, lease: Lease, progress: string): Promise<SettleStatus> {
    return transitions.progress(this.#c, workerId, lease, progress);
  }

  cancel(id: string, now: number): Promise<CancelOutcome> {
    return transitions.cancel(this.#c, id, now);
  }

  createWorkflow(workflow: NewWorkflow, now: number): Promise<{ id: string; created: boolean }> {
    return workflows.createWorkflow(this.#c, workflow, now);
  }

  getWorkflow(id: string): Promise<WorkflowRecord | null> {
    return workflows.getWorkflow(this.#c, id);
  }

  cancelWorkflow(id: string, now: number): Promise<WorkflowCancelOutcome> {
    return workflows.cancelWorkflow(this.#c, id, now);
  }

  retry(id: string, now: number): Promise<RetryOutcome> {
    return transitions.retry(this.#c, id, now);
  }

  prune(now: number): Promise<number> {
    return transitions.prune(this.#c, now);
  }

  // Notifications (notifications.ts)

  waitForWork(queues: readonly string[], until: number | null, signal: AbortSignal): Promise<void> {
    return this.#n.waitForWork(queues, until, signal);
  }

  watch(id: string, listener: () => void): Promise<() => void> {
    return this.#n.watch(id, listener);
  }

  onCancel(listener: (ids: string[]) => void): () => void {
    return this.#n.onCancel(listener);
  }

  // Reads and administration (inspection.ts)

  getRun(id: string): Promise<RunRecord | null> {
    return inspection.getRun(this.#c, id);
  }

  counts(queues?: readonly string[]): Promise<Record<string, QueueCounts>> {
    return inspection.counts(this.#c, queues);
  }

  listRuns(filter: RunFilter): Promise<RunPage> {
    return inspection.listRuns(this.#c, filter);
  }

  listQueues(): Promise<string[]> {
    return inspection.listQueues(this.#c);
  }

  heartbeat(worker: WorkerInfo, ttlMs: number, now: number): Promise<void> {
    return inspection.heartbeat(this.#c, worker, ttlMs, now);
  }

  removeWorker(id: string): Promise<void> {
    return inspection.removeWorker(this.#c, id);
  }

  listWorkers(now: number): Promise<WorkerStatus[]> {
    return inspection.listWorkers(this.#c, now);
  }

  async pause(queue: string): Promise<void> {
    return inspection.pause(this.#c, queue);
  }

  async resume(queue: string): Promise<void> {
    return inspection.resume(this.#c, queue);
  }

  pausedQueues(): Promise<string[]> {
    return inspection.pausedQueues(this.#c);
  }

  purge(queue: string, now: number): Promise<number> {
    return inspection.purge(this.#c, queue, now);
  }

  retryFailed(queue: string, task: string | undefined, now: number): Promise<number> {
    return inspection.retryFailed(this.#c, queue, task, now);
  }

  /** Read now (INFO memory): the policy, and whether Redis is full at this moment. */
  async storageWarnings(): Promise<string[]> {
    return evictionWarnings(await evictionOf(await this.#c.ready()), this.#c.where);
  }

  stats(queues: readonly string[], since: number): Promise<Record<string, MinuteStats[]>> {
    return inspection.stats(this.#c, queues, since);
  }

  flowCounts(queues: readonly string[]): Promise<Record<string, FlowCounts>> {
    return inspection.flowCounts(this.#c, queues);
  }

  async flowKeys(queue: string, query?: FlowKeyQuery): Promise<FlowKeyPage> {
    return inspection.flowKeys(this.#c, queue, checkFlowKeyQuery(query));
  }

  // Setup

  async ping(): Promise<void> {
    const redis = await this.#c.ready();
    await redis.ping();
  }

  async close(): Promise<void> {
    const c = this.#c;
    if (c.closed) return;
    c.closed = true;
    await this.#n.close();
    await c.main.close();
    this.#n.clear();
  }
}
