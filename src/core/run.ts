/**
 * The run model: a run's states, its stored record, its attempts and its errors.
 *
 * The lowest layer's view of a run, shared by every layer above: the Broker contract
 * (`src/broker/types.ts`, which re-exports these names) stores it, and `run-info.ts` decodes it.
 */

/**
 * The states of a run. `failed` is the dead-letter state: retries exhausted, kept for inspection and replay.
 * `waiting`: a run of a workflow waiting for its dependencies (see docs/workflows.md); no worker takes it.
 */
export type RunState = 'waiting' | 'queued' | 'scheduled' | 'active' | 'succeeded' | 'failed' | 'cancelled';

export const RUN_STATES: readonly RunState[] = ['waiting', 'queued', 'scheduled', 'active', 'succeeded', 'failed', 'cancelled'];

export const FINISHED_STATES: ReadonlySet<RunState> = new Set(['succeeded', 'failed', 'cancelled']);

/** An error as stored on a run. */
export interface RunError {
  name: string;
  message: string;
  stack?: string;
  /** Set when Errand (not the handler) failed the run: e.g. `lease_lost`, `invalid_input`, `unknown_task`, `timeout`, `corrupt`, `crashed` and `memory` (an isolated handler's thread or process ended, or went past its memory limit). */
  reason?: string;
}

/**
 * What a run created by a schedule carries (stored with the run, in its record and its reservation):
 * the schedule's id, the nominal fire time it stands for, and whether it was created late (a missed
 * fire run by the schedule's missed-fire policy, or an explicit backfill).
 */
export interface ScheduleMark {
  id: string;
  /** The nominal fire time, epoch ms. */
  at: number;
  backfilled: boolean;
  /** The schedule's expiry policy: a run not started by then is failed with reason `expired` instead of run. */
  expiresAt?: number;
}

/** The stored text of a mark: `<at> <0|1> <id>[ <expiresAt>]` (ids have no spaces). */
export function markText(m: ScheduleMark): string {
  const base = `${Math.floor(m.at)} ${m.backfilled ? 1 : 0} ${m.id}`;
  return m.expiresAt === undefined ? base : `${base} ${Math.floor(m.expiresAt)}`;
}

/** A stored mark read back; undefined when absent or not a mark. */
export function readMark(text: unknown): ScheduleMark | undefined {
  if (typeof text !== 'string') return undefined;
  const m = /^(-?\d+) ([01]) (\S+)(?: (-?\d+))?$/.exec(text);
  if (!m) return undefined;
  const mark: ScheduleMark = { id: m[3] as string, at: Number(m[1]), backfilled: m[2] === '1' };
  if (m[4] !== undefined) mark.expiresAt = Number(m[4]);
  return mark;
}

/** One start of a run, as kept in its history. */
export interface AttemptRecord {
  attempt: number;
  worker: string;
  startedAt: number;
  finishedAt?: number;
  /** `succeeded`, `failed`, `retry`, `lost` (lease expired), `released` (handed back at shutdown), `backoff` (the handler backed off: not counted), `cancelled`. */
  outcome?: string;
  error?: string;
}

/** A run under flow control (docs/flow-control.md): its limit group (task) and key. */
export interface RunFlow {
  group: string;
  key: string;
  /**
   * Read by `getRun` for a queued run: the limit that holds it back, when one does (absent: it
   * waits for its turn or a free worker). A rate limit is noticed when a reserve meets the key.
   */
  waiting?: FlowWait;
}

export interface FlowWait {
  /**
   * At its limit of active runs (`*_concurrency`), over its rate until `until` (`*_rate`), or
   * backed off by a handler until `until` (`*_backoff`: `ctx.backOff`).
   */
  reason: 'key_concurrency' | 'group_concurrency' | 'key_rate' | 'group_rate' | 'key_backoff' | 'group_backoff';
  active?: number;
  limit?: number;
  /** Epoch ms when the key (or group) may start again. */
  until?: number;
}

/** A run as stored. JSON fields are raw text (see `decodeRun` in `src/core/run-info.ts`). */
export interface RunRecord {
  id: string;
  task: string;
  queue: string;
  state: RunState;
  priority: number;
  input: string;
  result?: string;
  error?: string;
  progress?: string;
  attempts: number;
  /** How many times the run's lease expired (its worker died or stalled). */
  leaseLosses: number;
  enqueuedAt: number;
  runAt?: number;
  startedAt?: number;
  finishedAt?: number;
  expiresAt?: number;
  worker?: string;
  idempotencyKey?: string;
  traceparent?: string;
  /** The workflow this run belongs to, if any (see docs/workflows.md). */
  workflow?: string;
  /** The deadline to start (`NewRun.startBy`), kept after; cleared by a replay. */
  startBy?: number;
  /** Set on a run that ran elsewhere and was recorded finished (`recordFinished`): where it ran, e.g. `celery`. */
  origin?: string;
  /** Set on a run created by a schedule. */
  schedule?: ScheduleMark;
  history: AttemptRecord[];
  /** Flow control: set for a run of a task with `limits`. */
  flow?: RunFlow;
}
