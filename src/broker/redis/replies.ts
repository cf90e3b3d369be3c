/**
 * Typed decoders of the Lua scripts' replies, one per reply shape (each script's header comment
 * documents its reply; `scripts.ts` loads the scripts). Callers read named fields, never array
 * offsets. A decoder does not validate beyond what its caller needs: the scripts are ours.
 */

import { timeOfRunId } from '../../core/ids.ts';
import { readMark } from '../../core/run.ts';
import { parseRate } from '../shared/flow.ts';
import type { FlowKeyInfo, FlowKeyPage, Reservation } from '../types.ts';

type Reply = unknown;

function arr(reply: Reply): unknown[] {
  return Array.isArray(reply) ? reply : [];
}

/** enqueue.lua: 3 per run. */
export interface EnqueuedRun {
  rid: string;
  created: boolean;
  /** State code (q s a d f c). */
  code: string;
}

export function enqueueReply(reply: Reply): EnqueuedRun[] {
  const r = arr(reply);
  const out: EnqueuedRun[] = [];
  for (let j = 0; j + 2 < r.length; j += 3) out.push({ rid: String(r[j]), created: r[j + 1] === 1, code: String(r[j + 2]) });
  return out;
}

export interface ReserveReply {
  /** Null: nothing pending. */
  nextAt: number | null;
  /** With max 0: the runs queued; otherwise 0 when none remain, more than 0 when some do. */
  queued: number;
  /** One per outcome sent along: true applied, false lost. */
  settled: boolean[];
  /** The runs leased, as reservations (built here directly: the hot path makes no object in between). */
  runs: Reservation[];
  /** Whether the queue's relay outbox holds entries (workflows over several queues: drain it). */
  relay: boolean;
}

/**
 * reserve.lua: { nextAt, queued, m, m statuses, then 8 per leased run: rid, task, input, attempt,
 * priority, enqueuedAt ('': the time in the run id), traceparent ('': none), schedule mark ('': none), then the relay
 * flag }. `idPrefix` is
 * `<queue>.`, `now` the reserve's time (the runs' startedAt).
 */
export function reserveReply(reply: Reply, queue: string, idPrefix: string, now: number): ReserveReply {
  const r = arr(reply);
  const m = Number(r[2]) || 0;
  const settled: boolean[] = new Array(m);
  for (let j = 0; j < m; j++) settled[j] = r[3 + j] === 1;
  const runs: Reservation[] = [];
  const end = r.length - 1; // the relay flag
  for (let j = 3 + m; j + 8 < end; j += 9) {
    const id = idPrefix + String(r[j]);
    const e = String(r[j + 5]);
    const run: Reservation = {
      id,
      task: String(r[j + 1]),
      queue,
      input: String(r[j + 2]),
      attempt: Number(r[j + 3]),
      priority: Number(r[j + 4]),
      enqueuedAt: e === '' ? timeOfRunId(id) : Number(e),
      startedAt: now,
    };
    const tp = String(r[j + 6]);
    if (tp !== '') run.traceparent = tp;
    const mark = r[j + 7];
    if (mark !== '' && mark !== undefined) {
      const sm = readMark(String(mark));
      if (sm) run.schedule = sm;
    }
    const losses = Number(r[j + 8]);
    if (losses > 0) run.leaseLosses = losses;
    runs.push(run);
  }
  const nextAt = Number(r[0]);
  return { nextAt: nextAt < 0 ? null : nextAt, queued: Number(r[1]), settled, runs, relay: r[end] === 1 };
}

/** record.lua: true applied, false lost. */
export function settleReply(reply: Reply): boolean[] {
  return arr(reply).map((s) => s === 1);
}

/** settle.lua: one status per item (true applied, false lost), then the relay flag. */
export function settleRelayReply(reply: Reply): { applied: boolean[]; relay: boolean } {
  const r = arr(reply);
  return { applied: r.slice(0, -1).map((s) => s === 1), relay: r[r.length - 1] === 1 };
}

/** renew.lua: the rids whose lease is not held. */
export function renewReply(reply: Reply): string[] {
  return arr(reply).map(String);
}

/** progress.lua: whether it was stored. */
export function progressReply(reply: Reply): boolean {
  return reply === 1;
}

/** cancel.lua and retry.lua: a letter, and a state code with some. */
export interface CodeReply {
  /** cancel: C cancelled, F finished, N not found, X unreadable; retry: Q queued, S other state, N, X. */
  code: string;
  /** The (previous) state code, with C, F and S. */
  state: string | undefined;
  /** With C and Q: whether the queue's relay outbox holds entries (drain it). */
  relay: boolean;
}

export function codeReply(reply: Reply): CodeReply {
  const r = arr(reply);
  return { code: String(r[0] ?? 'X'), state: r[1] === undefined ? undefined : String(r[1]), relay: r[2] === 1 };
}

/** counts.lua. */
export interface CountsReply {
  waiting: number;
  queued: number;
  scheduled: number;
  active: number;
  succeeded: number;
  failed: number;
  cancelled: number;
}

export function countsReply(reply: Reply): CountsReply {
  const r = arr(reply).map((n) => Number(n) || 0);
  return {
    waiting: r[6] ?? 0,
    queued: r[0] ?? 0,
    scheduled: r[1] ?? 0,
    active: r[2] ?? 0,
    succeeded: r[3] ?? 0,
    failed: r[4] ?? 0,
    cancelled: r[5] ?? 0,
  };
}

/** prune.lua and purge.lua: how many were deleted, and whether to call again. */
export interface SliceReply {
  count: number;
  more: boolean;
  /** purge.lua: whether the queue's relay outbox holds entries (drain it). */
  relay: boolean;
}

export function sliceReply(reply: Reply): SliceReply {
  const r = arr(reply);
  return { count: Number(r[0]) || 0, more: Boolean(Number(r[1])), relay: r[2] === 1 };
}

/** retryfailed.lua. */
export interface RetryFailedReply {
  replayed: number;
  skipped: number;
  scanned: number;
  /** Whether the queue's relay outbox holds entries (drain it). */
  relay: boolean;
}

export function retryFailedReply(reply: Reply): RetryFailedReply {
  const r = arr(reply);
  return { replayed: Number(r[0]) || 0, skipped: Number(r[1]) || 0, scanned: Number(r[2]) || 0, relay: r[3] === 1 };
}

/** list.lua: the boundary ('' when every structure was read to its end) and the rids, newest first. */
export interface ListReply {
  boundary: string;
  rids: string[];
}

export function listReply(reply: Reply): ListReply {
  const [boundary, ...rids] = arr(reply).map(String);
  return { boundary: boundary ?? '', rids };
}

/** flowkeys.lua: the total, then 7 fields per key. */
export function flowKeysReply(reply: Reply): FlowKeyPage {
  const r = arr(reply);
  const keys: FlowKeyInfo[] = [];
  for (let i = 1; i + 6 < r.length; i += 7) {
    const k: FlowKeyInfo = {
      group: String(r[i]),
      key: String(r[i + 1]),
      queued: Math.max(0, Number(r[i + 2]) || 0),
      active: Math.max(0, Number(r[i + 3]) || 0),
      concurrency: Number(r[i + 4]) || 0,
    };
    const rate = parseRate(r[i + 5]);
    if (rate) k.rate = rate;
    if (r[i + 6] !== '' && r[i + 6] != null) k.waitUntil = Number(r[i + 6]);
    keys.push(k);
  }
  return { keys, total: Number(r[0]) || 0 };
}
