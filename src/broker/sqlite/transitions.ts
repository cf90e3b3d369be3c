/**
 * The SQLite broker's state transitions: enqueue, reserve, settle, renew, release, progress,
 * cancel, retry and prune. Each is one `BEGIN IMMEDIATE` transaction (prune: small ones), and
 * tells the wake hub what changed once it is committed.
 */
import { timeOfRunId } from '../../core/ids.ts';
import { checkFinishedRun } from '../shared/finished.ts';
import { CANCEL_LOG_RETENTION_MS, DAY, ownRetention, SLICE, STATS_RETENTION_MS, WORKER_MEMORY_MS } from '../shared/options.ts';
import type {
  CancelOutcome,
  EnqueueResult,
  FinishedRun,
  Lease,
  NewRun,
  Reservation,
  ReserveRequest,
  ReserveResult,
  RetryOutcome,
  RunState,
  Settlement,
  SettleStatus,
} from '../types.ts';
import { markText } from '../../core/run.ts';
import { type SqliteCore, stateOf } from './core.ts';
import { byPriorityThenSeq, corruptError, LEASE_LOST_ERROR, num, type Row, toReservation } from './statements.ts';

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
  for (let i = 0; i < runs.length; i++) {
    const run = runs[i] as NewRun;
    const key = run.idempotencyKey;
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
    const inserted = c.change(
      'insert',
      run.id,
      run.queue,
      state,
      run.task,
      run.priority,
      base + i + 1,
      run.input,
      now,
      run.runAt,
      key ?? null,
      run.traceparent ?? null,
      ownRetention(run.cancelledRetentionMs) ?? null,
      run.schedule ? markText(run.schedule) : null,
    );
    if (inserted === 0) {
      // The same id enqueued again: the first one stands.
      const existing = c.row('stateOf', run.id);
      out.push({ id: run.id, created: false, state: existing ? stateOf(existing) : 'queued' });
      continue;
    }
    if (key !== undefined) c.s.idemPut.run(run.queue, run.task, key, run.id, now + (run.idempotencyTtl ?? DAY));
    mine.add(run.queue);
    c.stat(run.queue, now).enqueued++;
    out.push({ id: run.id, created: true, state });
  }
  for (const q of mine) {
    c.bump(q);
    queues.add(q);
  }
  return out;
}

/** Records runs that ran elsewhere as finished (see FinishedRun), in one transaction. */
export function recordFinished(c: SqliteCore, runs: readonly FinishedRun[], now: number): boolean[] {
  c.open();
  for (const run of runs) checkFinishedRun(run);
  if (runs.length === 0) return [];
  const changed: string[] = [];
  const results = c.tx(() => {
    const base = c.takeSeq(runs.length);
    return runs.map((run, i) => {
      const key = run.idempotencyKey;
      if (key !== undefined) {
        const hit = c.row('idemGet', run.queue, run.task, key);
        // A key held by a run that still exists stands (see enqueue).
        if (hit && (num(hit.expires_at) ?? 0) > now && c.row('stateOf', String(hit.run_id))) return false;
      }
      if (c.row('stateOf', run.id)) return false;
      const enqueued = timeOfRunId(run.id);
      const stat = c.stat(run.queue, now);
      stat.enqueued++;
      if (run.outcome === 'succeeded') stat.succeeded++;
      else stat.failed++;
      c.observe(stat, 'wait', run.startedAt - enqueued);
      c.observe(stat, 'run', now - run.startedAt);
      if (run.retentionMs <= 0) return true;
      c.change('insertFinished', {
        id: run.id,
        queue: run.queue,
        state: run.outcome,
        task: run.task,
        seq: base + i + 1,
        input: run.input,
        result: run.outcome === 'succeeded' ? (run.result ?? null) : null,
        error: run.outcome === 'failed' ? (run.error ?? null) : null,
        attempts: Math.max(1, Math.floor(run.attempts)),
        enqueued,
        started: Math.floor(run.startedAt),
        now,
        expires: now + Math.floor(run.retentionMs),
        worker: run.worker,
        key: key ?? null,
        origin: run.origin,
      });
      if (key !== undefined) c.s.idemPut.run(run.queue, run.task, key, run.id, now + (run.idempotencyTtl ?? DAY));
      changed.push(run.id);
      return true;
    });
  });
  if (changed.length) c.hub.emit('runs', changed);
  return results;
}

/**
 * Per queue: due scheduled runs to queued, expired leases recovered, then up to `max` runs leased.
 * `seen` gets each queue's signal revision as of this reserve (see notifications.ts).
 */
export function reserve(c: SqliteCore, req: ReserveRequest, seen: Map<string, number>): ReserveResult {
  c.open();
  const { workerId, now, leaseMs } = req;
  const requested = [...new Set(req.queues)];
  let remaining = Math.max(0, Math.floor(req.max));
  const reserved: Reservation[] = [];
  const changed: string[] = [];
  const woken: string[] = [];
  const corrupt: { id: string; problems: string[] }[] = [];
  let nextAt: number | null = null;
  const revs: [string, number][] = [];
  const retried = new Set<string>();
  let settled: SettleStatus[] | undefined;

  c.tx(() => {
    // Outcomes sent along: recorded first, in the same transaction.
    if (req.settle?.length) settled = settleIn(c, workerId, req.settle, now, changed, retried);
    const paused = new Set(c.rows('paused').map((r) => String(r.queue)));
    for (const queue of requested) {
      if (paused.has(queue)) {
        // Untouched until resumed (resume wakes the waiters); its due times do not count either.
        revs.push([queue, c.signal(queue)]);
        continue;
      }
      // 1. Due scheduled runs become queued, in the order they became due.
      const promoted = c.change('promote', { base: c.takeSeq(0), queue, now });
      if (promoted > 0) c.takeSeq(promoted);
      // 2. Expired leases: failed after maxLeaseLosses, requeued (at the head of their priority) before.
      const lost = c.change('recoverFail', {
        queue,
        now,
        max: c.maxLeaseLosses,
        expires: now + c.failedRetentionMs,
        error: LEASE_LOST_ERROR,
      });
      if (lost > 0) c.stat(queue, now).failed += lost;
      const requeued = c.change('recoverRequeue', { queue, now });
      // 3. Lease up to `remaining` queued runs. Corrupt rows are failed and take no slot.
      while (remaining > 0) {
        const rows = c.rows('lease', { queue, now, worker: workerId, until: now + leaseMs, max: remaining });
        if (rows.length === 0) break;
        rows.sort(byPriorityThenSeq);
        const stat = c.stat(queue, now);
        let valid = 0;
        for (const row of rows) {
          const r = toReservation(row, now);
          if (Array.isArray(r)) {
            const id = typeof row.id === 'string' ? row.id : `rowid ${String(row.rid)}`;
            const error = corruptError(id, r);
            c.s.failCorrupt.run({ rid: row.rid ?? null, now, expires: now + c.failedRetentionMs, error });
            corrupt.push({ id, problems: r });
            stat.failed++;
            if (typeof row.id === 'string') changed.push(row.id);
            continue;
          }
          reserved.push(r);
          changed.push(r.id);
          c.observe(stat, 'wait', now - Math.max(r.enqueuedAt, num(row.run_at) ?? r.enqueuedAt));
          valid++;
        }
        remaining -= valid;
        if (valid === rows.length) break;
      }
      // 4. When something here becomes due without an enqueue.
      for (const t of [num(c.row('nextScheduled', queue)?.run_at), num(c.row('nextLease', queue)?.lease_until)]) {
        if (t !== undefined && (nextAt === null || t < nextAt)) nextAt = t;
      }
      // Runs made queued here may be more than this worker takes: other idle workers should look.
      // (New leases need no signal: an idle worker learns of their expiry at its next reserve, within
      // the safety period, which is far shorter than any lease.)
      if (promoted + requeued > 0) {
        revs.push([queue, c.bump(queue)]);
        woken.push(queue);
      } else {
        revs.push([queue, c.signal(queue)]);
      }
    }
  });

  for (const [q, rev] of revs) seen.set(q, rev);
  for (const x of corrupt) {
    c.logger?.warn({ runId: x.id, problems: x.problems }, 'SQLite broker: a stored run is corrupt; failed it with reason "corrupt"');
  }
  if (changed.length) c.hub.emit('runs', changed);
  // Runs put back in a queue may be more than this worker took: let other waiters look.
  for (const q of retried) if (!woken.includes(q)) woken.push(q);
  if (woken.length) c.hub.emit('work', woken);
  return settled ? { runs: reserved, nextAt, settled } : { runs: reserved, nextAt };
}

export function settle(c: SqliteCore, workerId: string, settlements: readonly Settlement[], now: number): SettleStatus[] {
  c.open();
  if (settlements.length === 0) return [];
  const changed: string[] = [];
  const queues = new Set<string>();
  const statuses = c.tx(() => settleIn(c, workerId, settlements, now, changed, queues));
  if (changed.length) c.hub.emit('runs', changed);
  if (queues.size) c.hub.emit('work', [...queues]);
  return statuses;
}

/** Within a transaction: records outcomes; adds the runs changed to `changed` and the queues given work to `queues`. */
function settleIn(
  c: SqliteCore,
  workerId: string,
  settlements: readonly Settlement[],
  now: number,
  changed: string[],
  queues: Set<string>,
): SettleStatus[] {
  const out = settlements.map((s): SettleStatus => {
    let row: Row | undefined;
    if (s.outcome === 'retry') {
      const seq = c.takeSeq(1) + 1;
      row = c.row('retryLater', s.id, s.attempt, workerId, now, s.runAt, seq, s.error);
      if (row) queues.add(String(row.queue));
    } else if (s.retentionMs <= 0) {
      row = c.row('deleteHeld', s.id, s.attempt, workerId);
      if (row) c.releaseKey(s.id, row);
    } else if (s.outcome === 'succeeded') {
      row = c.row('succeed', s.id, s.attempt, workerId, now, now + s.retentionMs, s.result ?? null);
    } else {
      row = c.row('fail', s.id, s.attempt, workerId, now, now + s.retentionMs, s.error);
    }
    if (!row) return 'lost';
    changed.push(s.id);
    const stat = c.stat(String(row.queue), now);
    if (s.outcome === 'succeeded') stat.succeeded++;
    else if (s.outcome === 'failed') stat.failed++;
    else stat.retried++;
    const startedAt = num(row.started_at);
    if (startedAt !== undefined) c.observe(stat, 'run', now - startedAt);
    return 'ok';
  });
  // A retried run is work again, now or at its runAt (which may move the queue's next due time).
  for (const q of queues) c.bump(q);
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
  const out = c.tx((): CancelOutcome => {
    const row = c.row('stateOf', id);
    if (!row) return { outcome: 'not_found' };
    const state = stateOf(row);
    if (state !== 'queued' && state !== 'scheduled' && state !== 'active') return { outcome: 'finished', state };
    // The run's own retention (stored at enqueue), else the broker's.
    c.s.cancel.run({ id, now, retention: c.cancelledRetentionMs });
    if (state === 'active') c.s.cancelLog.run(id, now);
    return { outcome: 'cancelled', previous: state };
  });
  if (out.outcome === 'cancelled') {
    c.hub.emit('runs', [id]);
    if (out.previous === 'active') c.hub.emit('cancel', [id]);
  }
  return out;
}

export function retry(c: SqliteCore, id: string, now: number): RetryOutcome {
  c.open();
  let queue: string | undefined;
  const out = c.tx((): RetryOutcome => {
    const row = c.row('retry', { id, now, seq: c.takeSeq(1) + 1 });
    if (row) {
      queue = String(row.queue);
      c.bump(queue);
      return { outcome: 'queued' };
    }
    const existing = c.row('stateOf', id);
    if (!existing) return { outcome: 'not_found' };
    if (typeof existing.origin === 'string') return { outcome: 'recorded', origin: existing.origin };
    return { outcome: 'not_failed', state: stateOf(existing) };
  });
  if (queue !== undefined) {
    c.hub.emit('runs', [id]);
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
      for (const r of rows) c.releaseKey(String(r.id), r);
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
  c.tx(() => {
    c.s.pruneCancels.run(now - CANCEL_LOG_RETENTION_MS);
    c.s.pruneStats.run(now - STATS_RETENTION_MS);
    c.s.pruneWorkers.run(now - WORKER_MEMORY_MS);
  });
  return removed;
}
