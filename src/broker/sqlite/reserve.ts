/**
 * The SQLite broker's reserve and settle: the worker's round trip. A reserve, in one
 * `BEGIN IMMEDIATE` transaction, records the outcomes that ride along with it, then per queue
 * promotes due runs, recovers expired leases, fails runs past their deadline to start and leases
 * runs (flow control's first: flow.ts); a settle records outcomes on their own. Both apply an
 * outcome through `settleIn`. The other transitions are in `transitions.ts`.
 */
import { checkSpawns } from '../shared/workflow.ts';
import type { Reservation, ReserveRequest, ReserveResult, Settlement, SettleStatus } from '../types.ts';
import type { SqliteCore } from './core.ts';
import { type CorruptRows, failCorruptRow } from './corrupt.ts';
import { backOffIn, failExpired, leaseFlow, nextExpiry } from './flow.ts';
import { FlowGroups, flowMoveRows, flowOf } from './flow-counts.ts';
import { byPriorityThenSeq, LEASE_LOST_ERROR, num, type Row, toReservation } from './statements.ts';
import { resolveIn, spawnIn } from './workflows.ts';

/**
 * Per queue: due scheduled runs to queued, expired leases recovered, then up to `max` runs leased.
 * `seen` gets each queue's signal revision as of this reserve (see notifications.ts).
 */
export function reserve(c: SqliteCore, req: ReserveRequest, seen: Map<string, number>): ReserveResult {
  c.open();
  if (req.settle?.length) checkSpawns(req.settle);
  const { workerId, now, leaseMs } = req;
  const requested = [...new Set(req.queues)];
  let remaining = Math.max(0, Math.floor(req.max));
  const reserved: Reservation[] = [];
  const changed: string[] = [];
  const woken: string[] = [];
  const corrupt: CorruptRows = [];
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
        // Untouched until resumed (resume wakes the waiters); its due times do not count either,
        // but for deadlines to start: runs past theirs are failed at it, paused or not.
        const x = failExpired(c, queue, now, changed, retried) ? nextExpiry(c, queue) : undefined;
        if (x !== undefined && (nextAt === null || x < nextAt)) nextAt = x;
        revs.push([queue, c.signal(queue)]);
        continue;
      }
      // 1. Due scheduled runs become queued, in the order they became due.
      const promotedRows = c.rows('promote', { base: c.takeSeq(0), queue, now });
      const promoted = promotedRows.length;
      if (promoted > 0) {
        c.takeSeq(promoted);
        flowMoveRows(c, promotedRows, 1, 0, queue);
      }
      // 2. Expired leases: failed after maxLeaseLosses, requeued (at the head of their priority) before.
      const lostRows = c.rows('recoverFail', {
        queue,
        now,
        max: c.maxLeaseLosses,
        expires: now + c.failedRetentionMs,
        error: LEASE_LOST_ERROR,
      });
      const lost = lostRows.length;
      if (lost > 0) {
        c.stat(queue, now).failed += lost;
        flowMoveRows(c, lostRows, 0, -1, queue);
      }
      // A terminal failure of a workflow run reaches its dependents (docs/workflows.md).
      for (const r of lostRows) if (typeof r.workflow === 'string') resolveIn(c, String(r.id), false, null, now, changed, retried);
      const requeuedRows = c.rows('recoverRequeue', { queue, now });
      const requeued = requeuedRows.length;
      if (requeued > 0) flowMoveRows(c, requeuedRows, 1, -1, queue);
      // Queued runs past their deadline to start: failed (expired), never started.
      const deadlines = failExpired(c, queue, now, changed, retried);
      // 3. Runs under flow control first (docs/flow-control.md), then up to `remaining` other queued runs.
      // Only a queue that has had runs under flow control reads its tables.
      const flow = c.row('flowAny', queue) !== undefined;
      if (flow) {
        // Keys and groups whose rate limit lets them start again are back in their rings.
        // Keys whose wait is over join their rings at the back: a turn after every turn given so far
        // (taken only when a key came back, so that a reserve with nothing due writes no position).
        if (c.change('flowKeysDue', queue, now, c.takeSeq(0) + 1) > 0) c.takeSeq(1);
        c.change('flowGroupsDue', queue, now);
        remaining -= leaseFlow(c, queue, workerId, now, leaseMs, remaining, reserved, changed, corrupt, retried);
      }
      // Corrupt rows are failed and take no slot.
      while (remaining > 0) {
        const rows = c.rows('lease', { queue, now, worker: workerId, until: now + leaseMs, max: remaining });
        if (rows.length === 0) break;
        rows.sort(byPriorityThenSeq);
        const stat = c.stat(queue, now);
        let valid = 0;
        for (const row of rows) {
          const r = toReservation(row, now);
          if (Array.isArray(r)) {
            failCorruptRow(c, queue, row, r, now, corrupt, changed, retried);
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
      const waits = [
        num(c.row('nextScheduled', queue)?.run_at),
        num(c.row('nextLease', queue)?.lease_until),
        deadlines ? nextExpiry(c, queue) : undefined,
      ];
      // A key or group held back by its rate limit becomes eligible then (none: no statement run).
      if (flow) waits.push(num(c.row('flowNextWait', queue)?.wait));
      for (const t of waits) {
        if (t !== undefined && (nextAt === null || t < nextAt)) nextAt = t;
      }
      // Runs made queued here may be more than this worker takes: other idle workers should look.
      // (New leases need no signal: an idle worker learns of their expiry at its next reserve, within
      // the safety period, which is far shorter than any lease.)
      // Recovered leases free flow slots too (their keys may be ready again).
      if (promoted + requeued > 0 || (lost > 0 && c.row('flowReady', queue))) {
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
  checkSpawns(settlements);
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
  const groups = new FlowGroups();
  const out = settlements.map((s): SettleStatus => {
    let row: Row | undefined;
    if (s.outcome === 'backoff') return backOffIn(c, workerId, s, now, changed, queues, groups);
    let refused = false;
    if (s.outcome === 'spawned') {
      const spawned = spawnIn(c, workerId, s, now, changed, queues);
      row = spawned?.row;
      refused = spawned?.refused ?? false;
    } else if (s.outcome === 'retry') {
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
    // A flow slot freed (and a retry due now queued again): its key may be ready again.
    const f = flowOf(row);
    if (f) {
      groups.move(c, f, row.state === 'queued' ? 1 : 0, -1);
      queues.add(f.queue);
    }
    // Fan-in and failure propagation, in this transaction (docs/workflows.md).
    // (A spawning run resolves its dependents once it finishes with its spawned runs' values.)
    if (typeof row.workflow === 'string' && s.outcome !== 'retry' && s.outcome !== 'spawned') {
      resolveIn(c, s.id, s.outcome === 'succeeded', s.outcome === 'succeeded' ? s.result : null, now, changed, queues);
    }
    const stat = c.stat(String(row.queue), now);
    if (s.outcome === 'succeeded') stat.succeeded++;
    else if (s.outcome === 'failed' || refused) stat.failed++;
    else if (s.outcome === 'retry') stat.retried++;
    const startedAt = num(row.started_at);
    if (startedAt !== undefined) c.observe(stat, 'run', now - startedAt);
    return 'ok';
  });
  groups.flush(c);
  // A retried run is work again, now or at its runAt (which may move the queue's next due time).
  for (const q of queues) c.bump(q);
  return out;
}
