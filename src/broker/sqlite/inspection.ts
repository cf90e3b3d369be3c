/**
 * The SQLite broker's reads and administration: getRun and counts (Broker), and the
 * BrokerInspector (listing runs, queues and workers, pause and resume, purge, bulk replay, stats).
 */
import type { SQLOutputValue } from 'node:sqlite';
import { invalidCursor, MINUTE, pageLimit, SLICE, WORKER_MEMORY_MS } from '../shared/options.ts';
import { parseWorkerRecord, workerRecord } from '../shared/workers.ts';
import type {
  FlowCounts,
  FlowKeyInfo,
  FlowKeyPage,
  FlowKeyQuery,
  MinuteStats,
  QueueCounts,
  RunFilter,
  RunPage,
  RunRecord,
  RunState,
  WorkerInfo,
  WorkerStatus,
} from '../types.ts';
import { RUN_STATES } from '../types.ts';
import type { SqliteCore } from './core.ts';
import { type FlowLimitState, flowWaiting, parseRate } from '../shared/flow.ts';
import { flowMoveRows } from './flow-counts.ts';
import { emptyCounts, histogram, num, type Row, STATES, toRecord } from './statements.ts';
import { resolveIn, rewaitIn } from './workflows.ts';

export function getRun(c: SqliteCore, id: string): RunRecord | null {
  c.open();
  return c.read(() => {
    const row = c.row('get', id);
    if (!row) return null;
    const rec = toRecord(row);
    // A queued run under flow control: what holds it back, if anything.
    if (rec.flow && rec.state === 'queued') {
      const state = (r: Row | undefined): FlowLimitState | undefined => {
        if (!r) return undefined;
        const s: FlowLimitState = { active: num(r.active) ?? 0, limit: num(r.conc) ?? 0 };
        const wait = num(r.wait);
        if (wait !== undefined) s.waitUntil = wait;
        if (r.held === 'backoff') s.backedOff = true;
        return s;
      };
      const waiting = flowWaiting(
        state(c.row('flowKeyGet', rec.queue, rec.flow.group, rec.flow.key)),
        state(c.row('flowGroupGet', rec.queue, rec.flow.group)),
      );
      if (waiting) rec.flow.waiting = waiting;
    }
    return rec;
  });
}

export function counts(c: SqliteCore, queues?: readonly string[]): Record<string, QueueCounts> {
  c.open();
  const out: Record<string, QueueCounts> = {};
  const rows = c.read((): Row[] => {
    if (queues) {
      for (const q of queues) out[q] = emptyCounts();
      return c.rows('countsSome', JSON.stringify(queues));
    }
    for (const r of c.rows('queues')) out[String(r.queue)] = emptyCounts();
    return c.rows('countsAll');
  });
  for (const r of rows) {
    const state = String(r.state);
    if (!STATES.has(state)) continue;
    const n = (out[String(r.queue)] ??= emptyCounts());
    n[state as RunState] += Number(r.n);
  }
  return out;
}

/** The cursor of the page after `rid` (the last rid of a page). */
function encodeCursor(rid: number): string {
  return Buffer.from(`r${rid}`).toString('base64url');
}

function decodeCursor(cursor: string): number | undefined {
  if (typeof cursor !== 'string') return undefined;
  const m = /^r(\d{1,16})$/.exec(Buffer.from(cursor, 'base64url').toString());
  return m ? Number(m[1]) : undefined;
}

/**
 * Newest first (rid DESC), keyset-paginated on rid: each page reads at most `limit + 1` entries
 * from each index range it needs, whatever the number of runs. One range when the filter names a
 * state and a queue or task ((queue, state) or (task, state)); otherwise the ranges of every state
 * of the queue or task, or of every queue for a state alone, merged here. No filter: the table
 * itself, backwards.
 */
export function listRuns(c: SqliteCore, filter: RunFilter): RunPage {
  c.open();
  const limit = pageLimit(filter.limit);
  const { queue, task, state } = filter;
  if (state !== undefined && !STATES.has(state)) return { runs: [], next: null };
  let before = Number.MAX_SAFE_INTEGER;
  if (filter.cursor !== undefined && filter.cursor !== null) {
    const cur = decodeCursor(filter.cursor);
    if (cur === undefined) throw invalidCursor(filter.cursor);
    before = cur;
  }
  const n = limit + 1;
  const ranges: (() => Row[])[] = [];
  const states = state !== undefined ? [state] : RUN_STATES;
  if (task !== undefined) {
    for (const st of states) {
      ranges.push(() =>
        queue !== undefined ? c.rows('ridsTaskStateQueue', task, st, queue, before, n) : c.rows('ridsTaskState', task, st, before, n),
      );
    }
  } else if (queue !== undefined) {
    for (const st of states) ranges.push(() => c.rows('ridsQueueState', queue, st, before, n));
  } else if (state !== undefined) {
    for (const q of listQueues(c)) ranges.push(() => c.rows('ridsQueueState', q, state, before, n));
  } else {
    ranges.push(() => c.rows('ridsAll', before, n));
  }
  const rids: number[] = [];
  const rows = c.read(() => {
    for (const range of ranges) for (const r of range()) rids.push(num(r.rid) ?? 0);
    rids.sort((a, b) => b - a);
    const page = rids.slice(0, limit);
    return page.length ? c.rows('rowsByRid', JSON.stringify(page)) : [];
  });
  const page = rids.slice(0, limit);
  const last = page[page.length - 1];
  return { runs: rows.map(toRecord), next: rids.length > limit && last !== undefined ? encodeCursor(last) : null };
}

export function listQueues(c: SqliteCore): string[] {
  c.open();
  return c.read(() => c.rows('queues')).map((r) => String(r.queue));
}

export function heartbeat(c: SqliteCore, worker: WorkerInfo, ttlMs: number, now: number): void {
  c.open();
  const info = workerRecord(worker);
  c.tx(() => {
    c.s.heartbeat.run(worker.id, JSON.stringify(info), now, ttlMs);
  });
}

export function removeWorker(c: SqliteCore, id: string): void {
  c.open();
  c.tx(() => {
    c.s.removeWorker.run(id);
  });
}

export function listWorkers(c: SqliteCore, now: number): WorkerStatus[] {
  c.open();
  const out: WorkerStatus[] = [];
  for (const r of c.read(() => c.rows('workers', now - WORKER_MEMORY_MS))) {
    // A corrupt registry entry is skipped; the worker rewrites it on its next heartbeat.
    const info = parseWorkerRecord(String(r.info));
    if (info) out.push({ ...info, lastSeen: num(r.last_seen) ?? 0, ttlMs: num(r.ttl_ms) ?? 0 });
  }
  return out;
}

export function pause(c: SqliteCore, queue: string): void {
  c.open();
  c.tx(() => {
    c.s.pause.run(queue, Date.now());
  });
}

export function resume(c: SqliteCore, queue: string): void {
  c.open();
  const resumed = c.tx(() => {
    const n = c.change('resume', queue);
    if (n) c.bump(queue);
    return n > 0;
  });
  if (resumed) c.hub.emit('work', [queue]);
}

export function pausedQueues(c: SqliteCore): string[] {
  c.open();
  return c
    .read(() => c.rows('paused'))
    .map((r) => String(r.queue))
    .sort();
}

export function purge(c: SqliteCore, queue: string, now: number): number {
  c.open();
  let removed = 0;
  for (;;) {
    const queues = new Set<string>();
    const out = c.tx(() => {
      const rows = c.rows('purge', queue, SLICE);
      const changed = rows.map((r) => String(r.id));
      for (const r of rows) {
        c.releaseKey(String(r.id), r);
        // A purged step of a workflow counts as cancelled for the runs waiting for it.
        if (typeof r.workflow === 'string') resolveIn(c, String(r.id), false, null, now, changed, queues);
      }
      flowMoveRows(
        c,
        rows.filter((r) => r.state === 'queued'),
        -1,
        0,
      );
      return { count: rows.length, changed };
    });
    removed += out.count;
    if (out.changed.length) c.hub.emit('runs', out.changed);
    if (queues.size) c.hub.emit('work', [...queues]);
    if (out.count < SLICE) break;
  }
  return removed;
}

export function retryFailed(c: SqliteCore, queue: string, task: string | undefined, now: number): number {
  c.open();
  let replayed = 0;
  for (;;) {
    const ids = c.tx(() => {
      const base = c.takeSeq(0);
      const rows =
        task === undefined
          ? c.rows('retryFailedAll', { queue, now, base, limit: SLICE })
          : c.rows('retryFailedTask', { queue, task, now, base, limit: SLICE });
      if (rows.length) {
        c.takeSeq(rows.length);
        c.bump(queue);
        flowMoveRows(c, rows, 1, 0, queue);
      }
      const changed = rows.map((r) => String(r.id));
      // Retry from a step, for each replayed step of a workflow (docs/workflows.md).
      for (const r of rows) if (typeof r.workflow === 'string') rewaitIn(c, String(r.id), changed);
      return { count: rows.length, changed };
    });
    replayed += ids.count;
    if (ids.changed.length) {
      c.hub.emit('runs', ids.changed);
      c.hub.emit('work', [queue]);
    }
    if (ids.count < SLICE) break;
  }
  return replayed;
}

export function flowCounts(c: SqliteCore, queues: readonly string[]): Record<string, FlowCounts> {
  c.open();
  return c.read(() => {
    const out: Record<string, FlowCounts> = {};
    for (const q of queues) {
      const k = c.row('flowCountKeys', q);
      const g = c.row('flowCountGroups', q);
      const h = (num(k?.keys) ?? 0) > 0 ? c.row('flowHeldRuns', q) : undefined;
      out[q] = {
        queued: num(k?.queued) ?? 0,
        keys: num(k?.keys) ?? 0,
        rateLimitedKeys: num(k?.waiting) ?? 0,
        rateLimitedGroups: num(g?.waiting) ?? 0,
        heldRuns: {
          group_rate: num(h?.group_rate) ?? 0,
          group_concurrency: num(h?.group_concurrency) ?? 0,
          key_rate: num(h?.key_rate) ?? 0,
          key_concurrency: num(h?.key_concurrency) ?? 0,
        },
      };
    }
    return out;
  });
}

export function stats(c: SqliteCore, queues: readonly string[], since: number): Record<string, MinuteStats[]> {
  c.open();
  const from = Math.floor(since / MINUTE) * MINUTE;
  const out: Record<string, MinuteStats[]> = {};
  for (const q of queues) {
    out[q] = c
      .read(() => c.rows('stats', q, from))
      .map((r) => ({
        minute: num(r.minute) ?? 0,
        enqueued: num(r.enqueued) ?? 0,
        succeeded: num(r.succeeded) ?? 0,
        failed: num(r.failed) ?? 0,
        retried: num(r.retried) ?? 0,
        wait: histogram(r.wait),
        run: histogram(r.run),
      }));
  }
  return out;
}

/** How the file is set up on this connection (for `errand inspect`, diagnostics and tests). */
export function storageInfo(c: SqliteCore): {
  path: string;
  journalMode: string;
  synchronous: string;
  busyTimeoutMs: number;
  schemaVersion: number;
} {
  c.open();
  const get = (sql: string): SQLOutputValue | undefined => {
    const row = c.db.prepare(sql).get();
    return row ? Object.values(row)[0] : undefined;
  };
  const sync = ['off', 'normal', 'full', 'extra'][num(get('PRAGMA synchronous')) ?? -1] ?? 'unknown';
  return {
    path: c.path,
    journalMode: String(get('PRAGMA journal_mode')),
    synchronous: sync,
    busyTimeoutMs: num(get('PRAGMA busy_timeout')) ?? 0,
    schemaVersion: num(get('SELECT max(version) FROM errand_schema')) ?? 0,
  };
}

export function flowKeys(c: SqliteCore, queue: string, query: Required<FlowKeyQuery>): FlowKeyPage {
  c.open();
  return c.read(() => {
    const total = num(c.row('flowKeysTotal', queue)?.n) ?? 0;
    const keys = c.rows('flowKeysPage', { queue, ...query }).map((r): FlowKeyInfo => {
      const k: FlowKeyInfo = {
        group: String(r.grp),
        key: String(r.key),
        queued: Math.max(0, num(r.queued) ?? 0),
        active: Math.max(0, num(r.active) ?? 0),
        concurrency: num(r.conc) ?? 0,
      };
      const rate = parseRate(r.rate);
      if (rate) k.rate = rate;
      const wait = num(r.wait);
      if (wait !== undefined) k.waitUntil = wait;
      return k;
    });
    return { keys, total };
  });
}
