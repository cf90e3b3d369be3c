/**
 * The flow-control part of the Broker contract (docs/flow-control.md): a run's flow spec, rate
 * limits, and the inspector's counts. Re-exported by `types.ts`, where the rest of the contract is.
 */

/**
 * Where a run stands for flow control. Its `group` (the task with limits) and `key` (from its input;
 * '' when only the group's limit applies) decide which limits it counts against: at most
 * `concurrency` active runs of (group, key) and at most `groupConcurrency` of the group, in its
 * queue (0 or absent: unlimited), and starts admitted by `rate` and `groupRate`. `reserve`
 * enforces all of them atomically; runs of a key are served FIFO,
 * keys and groups round robin, and runs with a `flow` are offered before the queue's other runs.
 * The limits in force for a key (or group) are those of its latest run to become queued.
 */
export interface FlowSpec {
  /** 1 to 128 letters, digits, "_", ".", ":" or "-" (a task name). */
  group: string;
  /** 0 to 256 characters. */
  key: string;
  concurrency?: number;
  groupConcurrency?: number;
  /** Rate limit of (group, key): starts are admitted by GCRA, see `FlowRate`. Absent: none. */
  rate?: FlowRate;
  /** Rate limit of the group, all keys together. */
  groupRate?: FlowRate;
}

/**
 * A rate limit by GCRA (one stored time per key): on average one start every `interval` ms, and at
 * most `burst` starts at once (a key idle long enough may start `burst` runs at the same instant).
 * `limit` starts per `period` ms is `interval = period / limit`. A key over its rate is not
 * scanned by reserve until the time it may start again, which `reserve` reports in `nextAt`.
 */
export interface FlowRate {
  /** ms between starts on average; > 0 (fractions allowed). */
  interval: number;
  /** A positive integer. */
  burst: number;
}

/** A queue's flow control at one moment (`BrokerInspector.flowCounts`). */
export interface FlowCounts {
  /** Runs queued under flow control: waiting for their turn, a free slot or their rate. */
  queued: number;
  /** Keys that have queued or active runs. */
  keys: number;
  /** Keys held back by their rate limit until they may start again. */
  rateLimitedKeys: number;
  /** Groups (tasks) held back by their rate limit. */
  rateLimitedGroups: number;
  /**
   * Queued runs held back by a limit right now, by what holds them (the first that applies, in
   * reserve's order: the task's rate, the task's concurrency, the key's rate, the key's
   * concurrency). Runs waiting only for their turn or a free worker are not counted.
   */
  heldRuns: FlowHeldRuns;
}

/** `FlowCounts.heldRuns`: queued runs by the limit that holds them back. */
export interface FlowHeldRuns {
  group_rate: number;
  group_concurrency: number;
  key_rate: number;
  key_concurrency: number;
}

/** How `BrokerInspector.flowKeys` orders a queue's keys: most queued or most active first, or by group and key. */
export type FlowKeySort = 'queued' | 'active' | 'key';

/** What `BrokerInspector.flowKeys` is asked for: one page of a queue's keys. */
export interface FlowKeyQuery {
  /** Default 'queued'. Ties are broken by group, then key. */
  sort?: FlowKeySort;
  /** Keys skipped (default 0). */
  offset?: number;
  /** Keys returned, 1 to 500 (default 50). */
  limit?: number;
}

/** One key of a queue under flow control, now. */
export interface FlowKeyInfo {
  /** The task (limit group). */
  group: string;
  /** '' for runs counted against the task's limits only. */
  key: string;
  /** Runs queued: waiting for their turn, a free slot or the key's rate. */
  queued: number;
  active: number;
  /** The key's concurrency limit, 0 for none (the latest queued run's). */
  concurrency: number;
  /** The key's rate limit, if any. */
  rate?: FlowRate;
  /** Held by its rate until then (epoch ms); absent: not held by its rate. */
  waitUntil?: number;
}

/** A page of `BrokerInspector.flowKeys`. */
export interface FlowKeyPage {
  keys: FlowKeyInfo[];
  /** Keys of the queue in all (with queued or active runs). */
  total: number;
}
