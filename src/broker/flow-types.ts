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
  /**
   * Weighted fairness: the key is served this many runs in a row per turn of its group's ring
   * (a positive integer; absent: 1, plain round robin). The latest queued run's weight holds.
   */
  weight?: number;
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
}
