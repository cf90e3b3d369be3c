/**
 * Key names and the run hash encoding of the Redis broker (the layout is documented in
 * the opening comments of the libraries of `lua/`, the run hash in `lua/runs.lua`).
 *
 * Every key of a queue starts with `<prefix>:{<queue>}:`: the hash tag puts all of them in one
 * Redis Cluster slot, so each script touches a single slot. Inside a queue, runs are named by the
 * 26-character ULID part of their id (`<queue>.<ulid>`): lists, sorted sets and run keys do not
 * repeat the queue name, which saves its length (plus one) several times per run.
 */
import type { AttemptRecord, RunRecord, RunState } from '../types.ts';
import { ErrandError } from '../../core/errors.ts';
import { runErrorText } from '../shared/run-errors.ts';
import { queueOfRunId, timeOfRunId } from '../../core/ids.ts';
import { readMark } from '../../core/run.ts';

export const RID_LENGTH = 26;

export const STATE_OF_CODE: Readonly<Record<string, RunState>> = {
  w: 'waiting',
  q: 'queued',
  s: 'scheduled',
  a: 'active',
  d: 'succeeded',
  f: 'failed',
  c: 'cancelled',
};

export class QueueKeys {
  readonly queue: string;
  /** `<prefix>:{<queue>}:` */
  readonly base: string;
  /** `<queue>.`: a run id is this plus the rid. */
  readonly idPrefix: string;
  readonly sched: string;
  readonly active: string;
  readonly prios: string;
  readonly wake: string;
  readonly succeeded: string;
  readonly failed: string;
  readonly cancelled: string;
  readonly paused: string;
  /** The minutes that have an expiry list of finished runs. */
  readonly expiryMinutes: string;
  /** The minutes that have stats. */
  readonly statMinutes: string;

  constructor(prefix: string, queue: string) {
    this.queue = queue;
    this.base = `${prefix}:{${queue}}:`;
    this.idPrefix = `${queue}.`;
    this.sched = `${this.base}sched`;
    this.active = `${this.base}active`;
    this.prios = `${this.base}prios`;
    this.wake = `${this.base}wake`;
    this.succeeded = `${this.base}succeeded`;
    this.failed = `${this.base}failed`;
    this.cancelled = `${this.base}cancelled`;
    this.paused = `${this.base}paused`;
    this.expiryMinutes = `${this.base}exps`;
    this.statMinutes = `${this.base}stm`;
  }

  /** Counters of one minute (start of the minute, epoch ms). */
  stats(minute: number): string {
    return `${this.base}st:${minute}`;
  }

  run(rid: string): string {
    return `${this.base}r:${rid}`;
  }

  id(rid: string): string {
    return this.idPrefix + rid;
  }
}

/** The queue and rid of a run id, or null when the text is not a run id. */
export function splitRunId(id: string): { queue: string; rid: string } | null {
  const queue = queueOfRunId(id);
  if (queue === null) return null;
  return { queue, rid: id.slice(id.length - RID_LENGTH) };
}

/** Thrown when a stored run cannot be read: what is wrong and where. */
export class CorruptRunError extends ErrandError {
  override name = 'CorruptRunError';
  readonly runId: string;
  readonly key: string;
  constructor(runId: string, key: string, why: string) {
    super(`Run "${runId}" is stored in an unreadable form at Redis key "${key}": ${why}`);
    this.runId = runId;
    this.key = key;
  }
}

function int(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  return Number.isFinite(n) ? n : undefined;
}

/** Decodes the history field: one JSON array per ended attempt, newline-separated. */
export function decodeHistory(text: string | undefined): AttemptRecord[] {
  if (!text) return [];
  let rows: unknown[];
  try {
    rows = JSON.parse(`[${text.split('\n').join(',')}]`) as unknown[];
  } catch {
    return [];
  }
  const out: AttemptRecord[] = [];
  for (const row of rows) {
    if (!Array.isArray(row)) continue;
    const [attempt, worker, startedAt, finishedAt, outcome, error] = row as [number, string, number, number, string, string?];
    const rec: AttemptRecord = { attempt, worker, startedAt, finishedAt, outcome };
    if (typeof error === 'string') rec.error = error;
    out.push(rec);
  }
  return out;
}

/** The error text stored on (or shown for) an unreadable run. */
export function corruptErrorText(id: string, key: string, why: string): string {
  return runErrorText('corrupt', { id, why: `${why} (Redis key ${key})` });
}

/**
 * A run as stored (HGETALL of its hash) to a RunRecord. A hash without a known state reads as a
 * failed run whose error (reason `corrupt`) says what is wrong; the next reserve that meets it
 * fails it for good. Nothing here throws.
 */
export function decodeRun(id: string, queue: string, key: string, h: Record<string, string>): RunRecord {
  let state = h.s === undefined ? undefined : STATE_OF_CODE[h.s];
  if (!state) {
    state = 'failed';
    h = { ...h, E: corruptErrorText(id, key, h.s === undefined ? 'it has no state field' : `unknown state code "${h.s}"`) };
    delete h.o;
  }
  const attempts = int(h.a) ?? 0;
  const rec: RunRecord = {
    id,
    task: h.t ?? '',
    queue,
    state,
    priority: int(h.p) ?? 0,
    input: h.i ?? '',
    attempts,
    leaseLosses: int(h.l) ?? 0,
    enqueuedAt: int(h.e) ?? timeOfRunId(id),
    history: decodeHistory(h.h),
  };
  if (h.R !== undefined) rec.result = h.R;
  if (h.E !== undefined) rec.error = h.E;
  if (h.P !== undefined) rec.progress = h.P;
  const runAt = int(h.r);
  if (runAt !== undefined) rec.runAt = runAt;
  const startedAt = int(h.b);
  if (startedAt !== undefined) rec.startedAt = startedAt;
  const finishedAt = int(h.f);
  if (finishedAt !== undefined) rec.finishedAt = finishedAt;
  const expiresAt = int(h.x);
  if (expiresAt !== undefined) rec.expiresAt = expiresAt;
  if (h.w !== undefined) rec.worker = h.w;
  if (h.k !== undefined) rec.idempotencyKey = h.k;
  if (h.c !== undefined) rec.traceparent = h.c;
  if (h.g !== undefined) rec.flow = { group: h.g, key: h.y ?? '' };
  if (h.G !== undefined) rec.workflow = h.G;
  const startBy = int(h.X);
  if (startBy !== undefined) rec.startBy = startBy;
  if (h.O !== undefined) rec.origin = h.O;
  const mark = readMark(h.S);
  if (mark) rec.schedule = mark;
  // The open attempt (see `o` in lua/runs.lua) is described by the run's own fields.
  if (h.o !== undefined && h.w !== undefined && startedAt !== undefined) {
    if (state === 'active') rec.history.push({ attempt: attempts, worker: h.w, startedAt });
    else if (state === 'succeeded' || state === 'failed') {
      const last: AttemptRecord = { attempt: attempts, worker: h.w, startedAt, outcome: state };
      if (finishedAt !== undefined) last.finishedAt = finishedAt;
      if (state === 'failed' && h.E !== undefined) last.error = h.E;
      rec.history.push(last);
    }
  }
  return rec;
}
