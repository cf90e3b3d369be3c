/**
 * The SQLite broker's state transitions: enqueue, renew, release, progress, cancel, retry and
 * prune (reserve and settle, the worker's round trip: `reserve.ts`; recordFinished: `record.ts`).
 * Each is one `BEGIN IMMEDIATE` transaction (prune: small ones), and tells the wake hub what
 * changed once it is committed.
 */
import { CANCEL_LOG_RETENTION_MS, DAY, SLICE, STATS_RETENTION_MS, WORKER_MEMORY_MS } from '../shared/options.ts';
import type { CancelOutcome, EnqueueResult, Lease, NewRun, RetryOutcome, RunState, SettleStatus } from '../types.ts';
import { cancelIn, cancellable } from './cancel.ts';
import { type SqliteCore, stateOf } from './core.ts';
import { insertRun } from './create.ts';
import { FlowGroups, flowMove, flowOf, flowPlace } from './flow-counts.ts';
import { num } from './statements.ts';
import { resolveIn, rewaitIn } from './workflows.ts';

/** How long a key's GCRA time is kept once in the past (it no longer matters then: prune's margin). */
const FLOW_RATE_MEMORY_MS = 60_000;

export function enqueue(c: SqliteCore, runs: readonly NewRun[], now: number): EnqueueResult[] {
  c.open();
  if (runs.length === 0) return [];
  const queues = new Set<string>();
  const results = c.tx(() => enqueueIn(c, runs, now, queues));
  if (queues.size) c.hub.emit('work', [...queues]);
  return results;
}

/** The body of `enqueue`, inside the caller's transaction (the schedule fire step uses it too). Adds the queues that got runs to `queues`. */
export function enqueueIn(c: SqliteCore, runs: readonly NewRun[], now: number, queues: Set<string>): EnqueueResult[] {
  const out: EnqueueResult[] = [];
  const mine = new Set<string>();
  const base = c.takeSeq(runs.length);
  const groups = new FlowGroups();
  for (let i = 0; i < runs.length; i++) {
    const run = runs[i] as NewRun;
    const key = run.idempotencyKey;
    const deb = run.debounce;
    // Debounce: a scheduled run of the key takes this input and moves to this runAt (not past maxAt).
    const hit = deb && c.row('debGet', run.queue, run.task, deb.key);
    if (deb && hit) {
      const maxAt = num(hit.max_at);
      c.s.debMove.run({ input: run.input, runAt: maxAt === undefined ? run.runAt : Math.min(run.runAt, maxAt), rid: hit.rid ?? null });
      out.push({ id: String(hit.run_id), created: false, state: 'scheduled' });
      mine.add(run.queue);
      continue;
    }
    if (key !== undefined) {
      const hit = c.row('idemGet', run.queue, run.task, key);
      if (hit && (num(hit.expires_at) ?? 0) > now) {
        // A key never stands for a run that no longer exists: a key left naming a deleted run
        // (by a version that kept keys past their runs, or by hand) is taken by this new run.
        const id = String(hit.run_id);
        const existing = c.row('stateOf', id);
        if (existing) {
          out.push({ id, created: false, state: stateOf(existing) });
          continue;
        }
      }
    }
    const state: RunState = run.runAt <= now ? 'queued' : 'scheduled';
    const f = run.flow;
    const inserted = insertRun(c, run, state, base + i + 1, now, run.runAt);
    if (inserted === 0) {
      // The same id enqueued again: the first one stands.
      const existing = c.row('stateOf', run.id);
      out.push({ id: run.id, created: false, state: existing ? stateOf(existing) : 'queued' });
      continue;
    }
    if (key !== undefined) c.s.idemPut.run(run.queue, run.task, key, run.id, now + (run.idempotencyTtl ?? DAY));
    if (deb) c.s.debPut.run(run.queue, run.task, deb.key, run.id, deb.maxAt);
    if (f && state === 'queued') groups.move(c, flowPlace(run.queue, f), 1, 0);
    mine.add(run.queue);
    c.stat(run.queue, now).enqueued++;
    out.push({ id: run.id, created: true, state });
  }
  groups.flush(c);
  for (const q of mine) {
    c.bump(q);
    queues.add(q);
  }
  return out;
}

export function renew(c: SqliteCore, workerId: string, leases: readonly Lease[], leaseMs: number, now: number): string[] {
  c.open();
  if (leases.length === 0) return [];
  return c.tx(() => {
    const lost: string[] = [];
    for (const l of leases) {
      if (c.change('renew', l.id, l.attempt, workerId, now + leaseMs) === 0) lost.push(l.id);
    }
    return lost;
  });
}

export function release(c: SqliteCore, workerId: string, leases: readonly Lease[], now: number): void {
  c.open();
  if (leases.length === 0) return;
  const changed: string[] = [];
  const queues = new Set<string>();
  c.tx(() => {
    for (const l of leases) {
      const row = c.row('release', l.id, l.attempt, workerId, now);
      const f = row && flowOf(row);
      if (f) flowMove(c, f, 1, -1);
      if (row) {
        changed.push(l.id);
        queues.add(String(row.queue));
      }
    }
    for (const q of queues) c.bump(q);
  });
  if (changed.length) c.hub.emit('runs', changed);
  if (queues.size) c.hub.emit('work', [...queues]);
}

export function progress(c: SqliteCore, workerId: string, lease: Lease, value: string): SettleStatus {
  c.open();
  const ok = c.tx(() => c.change('progress', lease.id, lease.attempt, workerId, value) > 0);
  if (ok) c.hub.emit('runs', [lease.id]);
  return ok ? 'ok' : 'lost';
}

export function cancel(c: SqliteCore, id: string, now: number): CancelOutcome {
  c.open();
  let freed: string | undefined;
  const changed: string[] = [];
  const queues = new Set<string>();
  const out = c.tx((): CancelOutcome => {
    const row = c.row('stateOf', id);
    if (!row) return { outcome: 'not_found' };
    const state = stateOf(row);
    if (!cancellable(state)) return { outcome: 'finished', state };
    // The queue of a flow slot it freed: its key may be ready again (other workers look).
    freed = cancelIn(c, id, row, state, now);
    changed.push(id);
    if (typeof row.workflow === 'string') resolveIn(c, id, false, null, now, changed, queues);
    return { outcome: 'cancelled', previous: state };
  });
  if (queues.size) c.hub.emit('work', [...queues]);
  if (out.outcome === 'cancelled') {
    c.hub.emit('runs', changed);
    if (out.previous === 'active') c.hub.emit('cancel', [id]);
    if (freed !== undefined) c.hub.emit('work', [freed]);
  }
  return out;
}

export function retry(c: SqliteCore, id: string, now: number): RetryOutcome {
  c.open();
  let queue: string | undefined;
  const changed = [id];
  const out = c.tx((): RetryOutcome => {
    const row = c.row('retry', { id, now, seq: c.takeSeq(1) + 1 });
    if (row) {
      queue = String(row.queue);
      const f = flowOf(row);
      if (f) flowMove(c, f, 1, 0);
      c.bump(queue);
      // Retry from a step: what its failure cancelled waits again (docs/workflows.md).
      if (typeof row.workflow === 'string') rewaitIn(c, id, changed);
      return { outcome: 'queued' };
    }
    const existing = c.row('stateOf', id);
    if (!existing) return { outcome: 'not_found' };
    if (typeof existing.origin === 'string') return { outcome: 'recorded', origin: existing.origin };
    return { outcome: 'not_failed', state: stateOf(existing) };
  });
  if (queue !== undefined) {
    c.hub.emit('runs', changed);
    c.hub.emit('work', [queue]);
  }
  return out;
}

export function prune(c: SqliteCore, now: number): number {
  c.open();
  let removed = 0;
  // Small transactions: the write lock is never held for long, whatever the backlog.
  for (;;) {
    const ids = c.tx(() => {
      const rows = c.rows('pruneRuns', now, SLICE);
      for (const r of rows) {
        c.releaseKey(String(r.id), r);
        if (typeof r.workflow === 'string') {
          c.s.pruneEdges.run(String(r.id));
          c.s.pruneWorkflow.run(r.workflow, r.workflow);
        }
      }
      return rows.map((r) => String(r.id));
    });
    removed += ids.length;
    if (ids.length) c.hub.emit('runs', ids);
    if (ids.length < SLICE) break;
  }
  for (;;) {
    const n = c.tx(() => c.change('pruneKeys', now, SLICE));
    if (n < SLICE) break;
  }
  pruneDebounce(c);
  c.tx(() => {
    c.s.pruneCancels.run(now - CANCEL_LOG_RETENTION_MS);
    c.s.pruneStats.run(now - STATS_RETENTION_MS);
    c.s.pruneWorkers.run(now - WORKER_MEMORY_MS);
    c.s.pruneFlowRates.run(now - FLOW_RATE_MEMORY_MS);
  });
  return removed;
}

/** Debounce rows read per prune call at most (in transactions of `DEBOUNCE_PAGE`), the pass going on at the next call. */
export const DEBOUNCE_SCAN = 10_000;
const DEBOUNCE_PAGE = 500;
/** Where each broker's pass over the debounce table stands (its primary key; empty: at the start). */
const debounceCursor = new WeakMap<SqliteCore, [string, string, string]>();

/**
 * Deletes debounce rows that no longer matter: a row names the latest run of its key and is
 * matched only while that run is scheduled and never started (`debGet`), so once the run is queued,
 * started, finished or gone the row is dead weight (the key's next enqueue starts a new burst and
 * replaces it anyway). Reads at most `scan` rows per call, in primary-key order from where the
 * last call stopped (wrapping at the end), so a call's cost is bounded whatever the table's size.
 * Returns the rows deleted.
 */
export function pruneDebounce(c: SqliteCore, scan = DEBOUNCE_SCAN): number {
  let deleted = 0;
  let read = 0;
  let wrapped = false;
  while (read < scan) {
    const from = debounceCursor.get(c) ?? ['', '', ''];
    const page = Math.min(DEBOUNCE_PAGE, scan - read);
    const rows = c.tx(() => {
      const got = c.rows('debPage', ...from, page);
      for (const r of got) if (r.live === null) deleted += c.change('debDrop', r.queue ?? null, r.task ?? null, r.key ?? null);
      return got;
    });
    read += rows.length;
    const last = rows[rows.length - 1];
    if (rows.length < page) {
      // The end of the table: the next pass starts over (once per call: a small table is read once).
      debounceCursor.delete(c);
      if (wrapped || from[0] === '') break;
      wrapped = true;
      continue;
    }
    if (last) debounceCursor.set(c, [String(last.queue), String(last.task), String(last.key)]);
  }
  return deleted;
}
