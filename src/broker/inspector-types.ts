/**
 * The Broker contract's inspection and administration (`BrokerInspector`): what the dashboard,
 * /metrics and `errand inspect` need. Every broker implements it beside `Broker` (`types.ts`, which
 * re-exports this file), and test/conformance/inspector.ts checks that they agree.
 */
import type { RunRecord, RunState } from '../core/run.ts';
import type { FlowCounts, FlowKeyPage, FlowKeyQuery } from './flow-types.ts';

export interface RunFilter {
  queue?: string;
  task?: string;
  state?: RunState;
  /** Page size; integers are rounded down and clamped into 1..500. */
  limit: number;
  /** Opaque cursor from a previous page's `next`; a cursor the broker did not make throws `ConfigError`. */
  cursor?: string;
}

export interface RunPage {
  /**
   * Newest first by enqueue time (the time in the run id; runs of one millisecond in an order that
   * is stable across pages). Every page but the last holds exactly `limit` runs. Runs enqueued
   * after the first page do not shift later pages.
   */
  runs: RunRecord[];
  /** Cursor of the next (older) page, or null when there is none (never a cursor to an empty page). */
  next: string | null;
}

export interface WorkerInfo {
  id: string;
  host: string;
  pid: number;
  queues: string[];
  concurrency: number;
  /** Runs executing at the last heartbeat. */
  active: number;
  startedAt: number;
}

export interface WorkerStatus extends WorkerInfo {
  /** Time of the last heartbeat. A worker silent for longer than its heartbeat TTL is lost. */
  lastSeen: number;
  /** Heartbeat TTL the worker announced. */
  ttlMs: number;
}

/**
 * Outcome counters and latency histograms for one queue and one minute.
 *
 * Every count lands in the minute of the `now` of the call that caused it: an enqueue in the minute
 * of the enqueue, a start in the minute of the reserve, a settlement in the minute of the settle, a
 * run the broker fails itself in the minute of the reserve that found it. Cancellations, releases,
 * requeues after a lost lease and replays (`retry`, `retryFailed`) count in none of the counters.
 *
 * `stats(queues, since)` answers every requested queue (one it has never seen: `[]`) with its minutes
 * oldest first, from the minute that contains `since` on; a minute with nothing counted may be left out.
 */
export interface MinuteStats {
  /** Start of the minute, epoch ms (a multiple of 60,000). */
  minute: number;
  /** Runs created. An enqueue that an idempotency key collapses into an existing run is not counted. */
  enqueued: number;
  /** Settlements `succeeded` (with any retentionMs, 0 included). */
  succeeded: number;
  /** Runs that became `failed`: settlements `failed`, and runs the broker failed (lease lost `maxLeaseLosses` times, corrupt). */
  failed: number;
  /** Settlements `retry`. */
  retried: number;
  /**
   * Histograms over the bucket bounds of `LATENCY_BUCKETS_MS`, always `LATENCY_BUCKETS_MS.length + 1`
   * entries: entry i counts the times t with LATENCY_BUCKETS_MS[i - 1] < t <= LATENCY_BUCKETS_MS[i]
   * (the first bucket from 0; a negative time, from the clocks of different machines, counts there
   * too); the last entry counts the times above the last bound.
   *
   * `wait`: one entry per start (every run a reserve hands out), in the minute of that reserve: the
   * time from when the run last became due to its start, i.e. `startedAt - max(enqueuedAt, runAt)`
   * where `runAt` is the due time it waited for: the NewRun's `runAt`, a retry settlement's `runAt`,
   * or the time of a replay (`retry`, `retryFailed`). Not enqueue-to-start: a run scheduled for
   * tomorrow has not waited a day when it starts tomorrow. (After a lost lease or a release, whether
   * the wait counts from the earlier due time or from the requeue is not specified.)
   *
   * `run`: one entry per attempt that `settle` ends (succeeded, failed or retry), in the minute of the
   * settlement: the settle's `now` minus the attempt's `startedAt`. Attempts that end otherwise (lease
   * lost, released, cancelled) are not counted.
   */
  wait: number[];
  run: number[];
}

/** Upper bounds (ms) of the latency histogram buckets; one more bucket holds everything above. */
export const LATENCY_BUCKETS_MS: readonly number[] = [
  1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000,
];

export interface BrokerInspector {
  /** Runs matching the filter, newest first, paginated. Cheap for 100,000 runs and more. */
  listRuns(filter: RunFilter): Promise<RunPage>;
  /** Every queue the broker has seen. */
  listQueues(): Promise<string[]>;

  /** A worker announces itself; called every few seconds with `ttlMs` a few times that period. */
  heartbeat(worker: WorkerInfo, ttlMs: number, now: number): Promise<void>;
  /** A worker stopping cleanly removes itself. */
  removeWorker(id: string): Promise<void>;
  /** Workers seen within the last hour, lost ones included (lastSeen + ttlMs < now). */
  listWorkers(now: number): Promise<WorkerStatus[]>;

  /**
   * Paused queues keep accepting runs but no worker reserves from them (and `reserve` reports no
   * `nextAt` for them) until resumed; `resume` wakes waiting workers. A paused queue is listed by
   * `listQueues` even if it never had a run.
   */
  pause(queue: string): Promise<void>;
  resume(queue: string): Promise<void>;
  pausedQueues(): Promise<string[]>;
  /** Deletes the queued and scheduled runs of a queue (active ones finish), and their idempotency keys. Returns how many. */
  purge(queue: string, now: number): Promise<number>;
  /** Replays every failed run of a queue (optionally of one task), but runs recorded from elsewhere (recordFinished). Returns how many. */
  retryFailed(queue: string, task: string | undefined, now: number): Promise<number>;

  /**
   * What the broker's storage is set to do that can lose runs, or refuses now, each a sentence
   * saying what happens and what to do; none when all is well. Redis (read at each call, `INFO
   * memory`): a `maxmemory-policy` other than `noeviction` (it deletes runs when memory is full), a
   * policy it could not read (INFO refused), and a Redis at its `maxmemory` (it refuses new runs);
   * SQLite: none (a full disk shows on the writes it refuses). The dashboard's overview and
   * `errand inspect queues` show them.
   */
  storageWarnings(): Promise<string[]>;

  /** Per-minute counters of each queue from `since` (epoch ms) on; kept for at least 24 hours. */
  stats(queues: readonly string[], since: number): Promise<Record<string, MinuteStats[]>>;

  /** Flow control now (docs/flow-control.md), per queue asked (a queue without it: all zeros). */
  flowCounts(queues: readonly string[]): Promise<Record<string, FlowCounts>>;

  /**
   * One page of a queue's flow-control keys (those with queued or active runs), each with its
   * backlog, active runs, limits and, when held by its rate, until when; sorted and paged by the
   * broker (only the page is read out). A queue without flow control: no keys.
   */
  flowKeys(queue: string, query?: FlowKeyQuery): Promise<FlowKeyPage>;
}
