/**
 * The broker of `createTesting` (see index.ts): an in-memory SQLite broker (`:memory:`, the same
 * `SqliteBroker` that passes the conformance suite with a file, so every transition behaves as in
 * production) behind a thin layer that adds what tests need and a production broker must not have:
 *
 * - a clock: every time the worker and the app pass in (`now`, a run's `runAt`, a retry's `runAt`)
 *   is moved forward by `offset`, so that `drain({ scheduled: true })` and `advance(ms)` can make
 *   scheduled runs due without waiting (the broker contract takes every time from the caller);
 * - a journal of every enqueue (the runs as the task layer built them, before the clock moved them);
 * - hooks that tell `drain` when something happened, and a way to wake a waiting worker;
 * - `reset()`: a fresh, empty database under the same object (the app keeps its broker).
 *
 * What it does not do, by design: its storage is this process's memory, so no other process (a
 * worker elsewhere, `errand inspect`) can reach it. Within the process, brokers given the same
 * `name` share it (SQLite's shared-cache memory database), in any thread: a worker thread opens it
 * with `connectBroker('sqlite:' + memoryUri(name))`, and the brokers wake each other across threads
 * (the wake hub's BroadcastChannel). The conformance suite (`test/conformance/memory.test.ts`) runs
 * every test against it, its tests of a broker seen from elsewhere with a peer in a worker thread.
 */
import type { Logger } from 'pino';
import { SqliteBroker } from '../broker/sqlite/sqlite-broker.ts';
import { ConfigError } from '../core/errors.ts';
import { show } from '../core/show.ts';
import type {
  Broker,
  BrokerInspector,
  BrokerOptions,
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
} from '../broker/types.ts';

/** One enqueue of one run, as recorded by the test broker. */
export interface JournalEntry {
  run: NewRun;
  result: EnqueueResult;
}

export interface MemoryBrokerOptions extends BrokerOptions {
  logger?: Logger;
  /**
   * Brokers opened with the same name in this process share their storage (and wake each other's
   * workers), until the last of them closes: e.g. an API app and a worker app of one test. Without
   * a name, the storage is this broker's alone.
   */
  name?: string;
}

/** The SQLite memory URI of a named memory broker (what `SqliteBroker` opens, and a test can open to look inside). */
export function memoryUri(name: string): string {
  return `file:errand-memory-${encodeURIComponent(name)}?mode=memory&cache=shared`;
}

/** A throwaway broker in this process's memory: nothing is written to disk; gone once closed (see `name` to share it). */
export function memoryBroker(options: MemoryBrokerOptions = {}): SqliteBroker {
  const { name, ...rest } = options;
  if (name !== undefined && (typeof name !== 'string' || name === '')) {
    throw new ConfigError(`memoryBroker: name must be a non-empty string, got ${show(name)}`);
  }
  return new SqliteBroker({ ...rest, path: name === undefined ? ':memory:' : memoryUri(name) });
}

export class TestBroker implements Broker, BrokerInspector {
  readonly kind = 'sqlite' as const;
  readonly remote = false;
  /** How many lost leases fail a run (the option it was made with, default 3; `reset()` keeps it). */
  readonly maxLeaseLosses: number;
  /** Added to every time given to the storage: the test clock is `Date.now() + offset`. */
  offset = 0;
  /** Every enqueue since the last `clearJournal`, in order. */
  journal: JournalEntry[] = [];
  /** While set, a retry is made due at once (its backoff skipped): `drain({ retries: true })`. */
  retryNow = false;
  /** Called after each call that may have changed what is runnable. */
  onActivity: (() => void) | undefined;
  #inner: SqliteBroker;
  readonly #options: MemoryBrokerOptions;
  /** Aborted to wake every `waitForWork` in progress. */
  #poke = new AbortController();

  constructor(options: MemoryBrokerOptions = {}) {
    this.#options = options;
    this.#inner = memoryBroker(options);
    this.maxLeaseLosses = this.#inner.maxLeaseLosses;
  }

  /** The test clock, epoch ms. */
  now(): number {
    return Date.now() + this.offset;
  }

  /** Wakes every worker waiting for work (a spurious wake-up, which the contract allows). */
  poke(): void {
    const c = this.#poke;
    this.#poke = new AbortController();
    c.abort();
  }

  /**
   * Drops every run, worker, pause and stat: a new empty database. The journal and clock are reset too.
   * Not for a broker that shares its storage by name: the others would keep the old one.
   */
  async reset(): Promise<void> {
    if (this.#options.name !== undefined) {
      throw new ConfigError(
        `reset(): the memory broker "${this.#options.name}" shares its storage by name; close every broker of that name for a fresh one, or use brokers of their own`,
      );
    }
    const old = this.#inner;
    this.#inner = memoryBroker(this.#options);
    this.journal = [];
    this.offset = 0;
    this.poke();
    await old.close();
  }

  #activity<T>(value: T): T {
    this.onActivity?.();
    return value;
  }

  // ---- Broker ---------------------------------------------------------------------------------

  async enqueue(runs: readonly NewRun[], now: number): Promise<EnqueueResult[]> {
    const shifted = this.offset ? runs.map((r) => ({ ...r, runAt: r.runAt + this.offset })) : runs;
    const results = await this.#inner.enqueue(shifted, now + this.offset);
    runs.forEach((run, i) => {
      this.journal.push({ run: { ...run }, result: results[i]! });
    });
    return this.#activity(results);
  }

  async reserve(req: ReserveRequest): Promise<ReserveResult> {
    const settle = req.settle && this.#shiftSettlements(req.settle, req.now + this.offset);
    const result = await this.#inner.reserve({ ...req, now: req.now + this.offset, ...(settle && { settle }) });
    return this.#activity(result);
  }

  async settle(workerId: string, settlements: readonly Settlement[], now: number): Promise<SettleStatus[]> {
    const at = now + this.offset;
    return this.#activity(await this.#inner.settle(workerId, this.#shiftSettlements(settlements, at), at));
  }

  async recordFinished(runs: readonly FinishedRun[], now: number): Promise<boolean[]> {
    const at = now + this.offset;
    const shifted = runs.map((r) => ({ ...r, startedAt: r.startedAt + this.offset }));
    return this.#activity(await this.#inner.recordFinished(shifted, at));
  }

  #shiftSettlements(settlements: readonly Settlement[], now: number): Settlement[] {
    return settlements.map((s) =>
      s.outcome === 'retry' ? { ...s, runAt: this.retryNow ? Math.min(now, s.runAt + this.offset) : s.runAt + this.offset } : s,
    );
  }

  renew(workerId: string, leases: readonly Lease[], leaseMs: number, now: number): Promise<string[]> {
    return this.#inner.renew(workerId, leases, leaseMs, now + this.offset);
  }

  async release(workerId: string, leases: readonly Lease[], now: number): Promise<void> {
    await this.#inner.release(workerId, leases, now + this.offset);
    this.#activity(undefined);
  }

  progress(workerId: string, lease: Lease, progress: string): Promise<SettleStatus> {
    return this.#inner.progress(workerId, lease, progress);
  }

  getRun(id: string): Promise<RunRecord | null> {
    return this.#inner.getRun(id);
  }

  async cancel(id: string, now: number): Promise<CancelOutcome> {
    return this.#activity(await this.#inner.cancel(id, now + this.offset));
  }

  async createWorkflow(workflow: NewWorkflow, now: number): Promise<{ id: string; created: boolean }> {
    const runs = workflow.runs.map((r) => ({ ...r, runAt: r.runAt + this.offset }));
    return this.#activity(await this.#inner.createWorkflow({ ...workflow, runs }, now + this.offset));
  }

  getWorkflow(id: string): Promise<WorkflowRecord | null> {
    return this.#inner.getWorkflow(id);
  }

  async cancelWorkflow(id: string, now: number): Promise<WorkflowCancelOutcome> {
    return this.#activity(await this.#inner.cancelWorkflow(id, now + this.offset));
  }

  async retry(id: string, now: number): Promise<RetryOutcome> {
    return this.#activity(await this.#inner.retry(id, now + this.offset));
  }

  counts(queues?: readonly string[]): Promise<Record<string, QueueCounts>> {
    return this.#inner.counts(queues);
  }

  prune(now: number): Promise<number> {
    return this.#inner.prune(now + this.offset);
  }

  /** The inner broker's wait, which also ends on `poke()`; `until` is on the test clock. */
  async waitForWork(queues: readonly string[], until: number | null, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return;
    const both = AbortSignal.any([signal, this.#poke.signal]);
    if (both.aborted) return;
    await this.#inner.waitForWork(queues, until === null ? null : until - this.offset, both);
  }

  watch(id: string, listener: () => void): Promise<() => void> {
    return this.#inner.watch(id, listener);
  }

  onCancel(listener: (ids: string[]) => void): () => void {
    return this.#inner.onCancel(listener);
  }

  ping(): Promise<void> {
    return this.#inner.ping();
  }

  // Schedules: nominal fire times are instants on the test clock (a schedule's due times are read
  // against `until + offset`), so they pass unshifted, and so do the runAt of the runs a fire creates.

  upsertSchedule(def: ScheduleDefinition, now: number): Promise<UpsertScheduleResult> {
    return this.#inner.upsertSchedule(def, now + this.offset);
  }

  async fireSchedule(req: FireRequest): Promise<FireOutcome> {
    const out = await this.#inner.fireSchedule({ ...req, now: req.now + this.offset });
    if (out.outcome === 'fired') {
      req.runs.forEach((run, i) => {
        this.journal.push({ run: { ...run }, result: out.runs[i]! });
      });
    }
    return this.#activity(out);
  }

  listSchedules(queues?: readonly string[]): Promise<ScheduleRecord[]> {
    return this.#inner.listSchedules(queues);
  }

  async dueSchedules(queues: readonly string[], until: number, limit: number): Promise<DueSchedules> {
    const due = await this.#inner.dueSchedules(queues, until + this.offset, limit);
    return { schedules: due.schedules, nextAt: due.nextAt === null ? null : due.nextAt - this.offset };
  }

  getSchedule(queue: string, id: string): Promise<ScheduleRecord | null> {
    return this.#inner.getSchedule(queue, id);
  }

  pauseSchedule(queue: string, id: string, paused: boolean, now: number): Promise<boolean> {
    return this.#inner.pauseSchedule(queue, id, paused, now + this.offset);
  }

  deleteSchedule(queue: string, id: string): Promise<boolean> {
    return this.#inner.deleteSchedule(queue, id);
  }

  close(): Promise<void> {
    this.poke();
    return this.#inner.close();
  }

  // ---- BrokerInspector --------------------------------------------------------------------------

  listRuns(filter: RunFilter): Promise<RunPage> {
    return this.#inner.listRuns(filter);
  }
  listQueues(): Promise<string[]> {
    return this.#inner.listQueues();
  }
  heartbeat(worker: WorkerInfo, ttlMs: number, now: number): Promise<void> {
    return this.#inner.heartbeat(worker, ttlMs, now + this.offset);
  }
  removeWorker(id: string): Promise<void> {
    return this.#inner.removeWorker(id);
  }
  listWorkers(now: number): Promise<WorkerStatus[]> {
    return this.#inner.listWorkers(now + this.offset);
  }
  pause(queue: string): Promise<void> {
    return this.#inner.pause(queue);
  }
  async resume(queue: string): Promise<void> {
    await this.#inner.resume(queue);
    this.#activity(undefined);
  }
  pausedQueues(): Promise<string[]> {
    return this.#inner.pausedQueues();
  }
  purge(queue: string, now: number): Promise<number> {
    return this.#inner.purge(queue, now + this.offset);
  }
  async retryFailed(queue: string, task: string | undefined, now: number): Promise<number> {
    return this.#activity(await this.#inner.retryFailed(queue, task, now + this.offset));
  }
  storageWarnings(): Promise<string[]> {
    return this.#inner.storageWarnings();
  }
  stats(queues: readonly string[], since: number): Promise<Record<string, MinuteStats[]>> {
    return this.#inner.stats(queues, since + this.offset);
  }

  flowCounts(queues: readonly string[]): Promise<Record<string, FlowCounts>> {
    return this.#inner.flowCounts(queues);
  }

  async flowKeys(queue: string, query?: FlowKeyQuery): Promise<FlowKeyPage> {
    return this.#inner.flowKeys(queue, query);
  }
}
