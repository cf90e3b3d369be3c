/** What every peer (Errand on a broker, BullMQ) offers the benchmark child. */

/** The payload of every benchmark run: the seed's welcome-email input, plus timing fields for the latency scenario. */
export interface Payload {
  username: string;
  email: string;
  /** Enqueue time, microseconds of CLOCK_MONOTONIC (shared by every process on the machine). */
  t?: number;
  /** 1 when this run counts in the latency figures (past the warm-up). */
  m?: number;
}

export interface SessionOptions {
  url: string;
  /** Keep finished runs and their results (1 day), or delete them as soon as they finish. */
  keep: boolean;
  /** Flow control on the benchmark task (the limits scenario); absent: none. */
  limits?: BenchLimits;
}

/**
 * Limits of the limits scenario. `keys`: per-key concurrency and rate limits over `keys` keys (the
 * run's key from its username), set high enough never to bind (Errand only: BullMQ's open-source
 * edition has no per-key limits). `globalRate`: at most `perSecond` starts per second for the task
 * (Errand `limits.globalRate`, burst `burst`; BullMQ Worker `limiter: { max, duration: 1000 }`).
 */
export type BenchLimits = { kind: 'keys'; keys: number } | { kind: 'globalRate'; perSecond: number; burst?: number };

/** The key of a run of the limits scenario: its number (from `user<i>`) modulo the number of keys. */
export function benchKey(username: string, keys: number): string {
  return String(Number(username.slice(4)) % keys);
}

export interface Session {
  enqueueOne(data: Payload): Promise<unknown>;
  enqueueMany(data: Payload[]): Promise<unknown>;
  /**
   * Creates `flows` fan-out / fan-in flows: `children` child runs each, and a parent that runs once
   * they all succeeded and reads their results (Errand: a chord; BullMQ: a FlowProducer flow).
   */
  enqueueFlows(flows: number, children: number): Promise<unknown>;
  /** Starts consuming; `onRun` is called at the start of each handler with its input. */
  startWorker(concurrency: number, onRun: (data: Payload) => void): Promise<void>;
  stopWorker(): Promise<void>;
  /** Runs not yet finished (waiting, delayed, active). */
  pending(): Promise<number>;
  close(): Promise<void>;
}

export interface Peer {
  name: string;
  version: string;
  open(options: SessionOptions): Promise<Session>;
}

/** Microseconds of CLOCK_MONOTONIC: comparable between processes of one machine. */
export function nowUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}
