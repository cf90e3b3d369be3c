/**
 * Every SQL statement of the SQLite broker, prepared once per connection, and the helpers that turn
 * rows into contract types without ever throwing on a corrupt row.
 *
 * States appear as literals (never bound) so that SQLite picks the partial indexes of `schema.ts`.
 * A statement that checks a lease uses `HELD`: the run is active, on that attempt, for that worker.
 */
import type { SQLOutputValue } from 'node:sqlite';
import type { AttemptRecord, QueueCounts, Reservation, RunRecord, RunState } from '../types.ts';
import { LATENCY_BUCKETS_MS, RUN_STATES } from '../types.ts';
import { readMark } from '../../core/run.ts';
import { runErrorText } from '../shared/run-errors.ts';
import { FLOW_SQL } from './flow-sql.ts';
import { SCHEDULE_SQL } from './schedule-sql.ts';
import { SPAWN_SQL } from './spawn-sql.ts';
import { WORKFLOW_SQL } from './workflow-sql.ts';

export type Row = Record<string, SQLOutputValue>;

/**
 * The latest attempt as a history entry (JSON text). Its error is the run's error when it failed or
 * asked for a retry (the run's error is always that attempt's then).
 */
const LAST_ATTEMPT = `json(CASE WHEN a_outcome IN ('failed', 'retry') AND error IS NOT NULL
  THEN json_object('attempt', a_no, 'worker', worker, 'startedAt', started_at, 'finishedAt', a_ended, 'outcome', a_outcome, 'error', error)
  ELSE json_object('attempt', a_no, 'worker', worker, 'startedAt', started_at, 'finishedAt', a_ended, 'outcome', a_outcome) END)`;

/** Query fragment: the history with the latest attempt appended, if it ended (a garbled history restarts from it). */
const HISTORY_WITH_LAST = `CASE WHEN a_outcome IS NULL OR a_no IS NULL THEN history
  WHEN json_valid(history) THEN CASE WHEN json_type(history) = 'array'
    THEN json_insert(history, '$[#]', ${LAST_ATTEMPT}) ELSE json_array(${LAST_ATTEMPT}) END
  ELSE json_array(${LAST_ATTEMPT}) END`;

/** Query fragment: ends the latest attempt at `at` with `outcome`. */
function endAttempt(at: string, outcome: string): string {
  return `a_ended = ${at}, a_outcome = ${outcome}`;
}

/** The lease is held: run `?1` is active, on attempt `?2`, for worker `?3` (hot statements bind by position). */
const HELD = `id = ?1 AND state = 'active' AND attempts = ?2 AND worker = ?3`;

/** A failed (or cancelled) run back to queued, its attempts reset; its last attempt moves into the history. */
const REPLAY = `state = 'queued', start_by = NULL, attempts = 0, lease_losses = 0, run_at = :now, result = NULL, error = NULL, progress = NULL,
  finished_at = NULL, expires_at = NULL, lease_until = NULL, rev = rev + 1,
  history = ${HISTORY_WITH_LAST}, a_no = NULL, a_ended = NULL, a_outcome = NULL`;

export const SQL = {
  begin: 'BEGIN IMMEDIATE',
  commit: 'COMMIT',
  seqGet: `SELECT value FROM errand_meta WHERE key = 'seq'`,
  seqSet: `UPDATE errand_meta SET value = ? WHERE key = 'seq'`,
  signalBump: 'INSERT INTO queue_signals (queue, rev) VALUES (?, 1) ON CONFLICT (queue) DO UPDATE SET rev = rev + 1 RETURNING rev',
  signalGet: 'SELECT rev FROM queue_signals WHERE queue = ?',
  signalAll: 'SELECT queue, rev FROM queue_signals',
  paused: 'SELECT queue FROM paused_queues',
  statGet: 'SELECT enqueued, succeeded, failed, retried, wait, run FROM queue_stats WHERE queue = ? AND minute = ?',
  statPut: `INSERT INTO queue_stats (queue, minute, enqueued, succeeded, failed, retried, wait, run) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (queue, minute) DO UPDATE SET enqueued = excluded.enqueued, succeeded = excluded.succeeded, failed = excluded.failed,
      retried = excluded.retried, wait = excluded.wait, run = excluded.run`,

  // enqueue
  idemGet: 'SELECT run_id, expires_at FROM idempotency WHERE queue = ? AND task = ? AND key = ?',
  idemPut: `INSERT INTO idempotency (queue, task, key, run_id, expires_at) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (queue, task, key) DO UPDATE SET run_id = excluded.run_id, expires_at = excluded.expires_at`,
  /** Releases a key, only while it still names that run (a key is never left naming a deleted run). */
  idemDel: 'DELETE FROM idempotency WHERE queue = ? AND task = ? AND key = ? AND run_id = ?',
  stateOf: 'SELECT state, queue, origin, flow_group, flow_key, workflow FROM runs WHERE id = ?',
  /**
   * A new run, the one statement that creates runs (insertRun in create.ts: enqueue, the schedule
   * fire step, workflows). The flow spec (flow_group .. flow_grate) and the workflow's columns are
   * NULL for a run without them.
   */
  insert: `INSERT INTO runs (id, queue, state, task, priority, seq, input, enqueued_at, run_at, idempotency_key, traceparent,
      cancel_retention, schedule, start_by, flow_group, flow_key, flow_kc, flow_gc, flow_krate, flow_grate, flow_kw, workflow,
      input_from, attempts, lease_losses, history, rev)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, '[]', 0) ON CONFLICT (id) DO NOTHING`,

  /** A run that ran elsewhere, recorded finished (recordFinished); its last attempt in the a_* columns. */
  insertFinished: `INSERT INTO runs (id, queue, state, task, priority, seq, input, result, error, attempts, lease_losses, enqueued_at,
      run_at, started_at, finished_at, expires_at, worker, idempotency_key, origin, history, rev, a_no, a_ended, a_outcome)
    VALUES (:id, :queue, :state, :task, 0, :seq, :input, :result, :error, :attempts, 0, :enqueued, :enqueued, :started, :now, :expires,
      :worker, :key, :origin, '[]', 0, :attempts, :now, :state) ON CONFLICT (id) DO NOTHING`,

  // reserve
  promote: `UPDATE runs SET state = 'queued', seq = :base + p.n, rev = rev + 1
    FROM (SELECT rid AS prid, row_number() OVER (ORDER BY run_at, seq, rid) AS n
          FROM runs WHERE queue = :queue AND state = 'scheduled' AND run_at <= :now) AS p
    WHERE runs.rid = p.prid RETURNING flow_group, flow_key, flow_kc, flow_gc, flow_krate, flow_grate, flow_kw`,
  recoverFail: `UPDATE runs SET state = 'failed', lease_losses = coalesce(lease_losses, 0) + 1, error = :error,
      finished_at = :now, expires_at = :expires, lease_until = NULL, rev = rev + 1, ${endAttempt(':now', "'lost'")}
    WHERE queue = :queue AND state = 'active' AND lease_until <= :now AND coalesce(lease_losses, 0) + 1 >= :max
    RETURNING id, workflow, flow_group, flow_key, flow_kc, flow_gc, flow_krate, flow_grate, flow_kw`,
  recoverRequeue: `UPDATE runs SET state = 'queued', lease_losses = coalesce(lease_losses, 0) + 1, lease_until = NULL, rev = rev + 1,
      ${endAttempt(':now', "'lost'")}
    WHERE queue = :queue AND state = 'active' AND lease_until <= :now RETURNING flow_group, flow_key, flow_kc, flow_gc, flow_krate, flow_grate, flow_kw`,
  // debounce (NewRun.debounce)
  debGet: `SELECT d.run_id, d.max_at, r.rid FROM debounce d JOIN runs r ON r.id = d.run_id AND r.state = 'scheduled' AND r.attempts = 0
    WHERE d.queue = ? AND d.task = ? AND d.key = ?`,
  debMove: 'UPDATE runs SET input = :input, run_at = :runAt, rev = rev + 1 WHERE rid = :rid',
  debPut: `INSERT INTO debounce (queue, task, key, run_id, max_at) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (queue, task, key) DO UPDATE SET run_id = excluded.run_id, max_at = excluded.max_at`,
  /** prune: a page of debounce rows after a cursor, each with whether it still matters (`live`: its run scheduled, never started). */
  debPage: `SELECT d.queue, d.task, d.key, r.rid AS live FROM debounce d
    LEFT JOIN runs r ON r.id = d.run_id AND r.state = 'scheduled' AND r.attempts = 0
    WHERE (d.queue, d.task, d.key) > (?, ?, ?) ORDER BY d.queue, d.task, d.key LIMIT ?`,
  debDrop: 'DELETE FROM debounce WHERE queue = ? AND task = ? AND key = ?',
  /** Queued runs past their deadline to start (expiry): failed by reserve, never started. */
  expiredDue: `SELECT rid, id, start_by, workflow, flow_group, flow_key, flow_kc, flow_gc, flow_krate, flow_grate, flow_kw FROM runs
    WHERE queue = ? AND state = 'queued' AND start_by IS NOT NULL AND start_by < ? AND attempts = 0 ORDER BY start_by LIMIT ?`,
  /** The earliest such deadline (reserve's nextAt: idle workers wake to fail them). */
  nextStartBy: `SELECT start_by FROM runs WHERE queue = ? AND state = 'queued' AND start_by IS NOT NULL AND attempts = 0 ORDER BY start_by LIMIT 1`,
  failExpired: `UPDATE runs SET state = 'failed', error = :error, finished_at = :now, expires_at = :expires, rev = rev + 1 WHERE rid = :rid`,
  lease: `UPDATE runs SET state = 'active', attempts = attempts + 1, worker = :worker, started_at = :now, lease_until = :until,
      rev = rev + 1, history = ${HISTORY_WITH_LAST}, a_no = attempts + 1, a_ended = NULL, a_outcome = NULL
    WHERE rid IN (SELECT rid FROM runs WHERE queue = :queue AND state = 'queued' AND flow_key IS NULL ORDER BY priority DESC, seq LIMIT :max)
    RETURNING rid, id, task, queue, input, attempts, priority, seq, enqueued_at, run_at, traceparent, schedule, lease_losses`,
  // flow control (docs/flow-control.md): the rings are index ranges of the ready groups and keys.
  // Flow control's leases (its other statements: flow-sql.ts).
  /** The first `:n` queued runs of one key, leased (in any order: `seq` says theirs). */
  flowLeaseKey: `UPDATE runs SET state = 'active', attempts = attempts + 1, worker = :worker, started_at = :now, lease_until = :until,
      rev = rev + 1, history = ${HISTORY_WITH_LAST}, a_no = attempts + 1, a_ended = NULL, a_outcome = NULL
    WHERE rid IN (SELECT rid FROM runs WHERE queue = :queue AND flow_group = :grp AND flow_key = :key AND state = 'queued'
      AND flow_key IS NOT NULL ORDER BY seq LIMIT :n)
    RETURNING rid, id, task, queue, input, attempts, priority, seq, enqueued_at, run_at, traceparent, schedule, lease_losses`,
  /** The first queued run of each key of `:keys` (a JSON array), leased; `flow_key` says whose. */
  flowLeaseMany: `UPDATE runs SET state = 'active', attempts = attempts + 1, worker = :worker, started_at = :now, lease_until = :until,
      rev = rev + 1, history = ${HISTORY_WITH_LAST}, a_no = attempts + 1, a_ended = NULL, a_outcome = NULL
    WHERE rid IN (SELECT (SELECT rid FROM runs WHERE queue = :queue AND flow_group = :grp AND flow_key = j.value AND state = 'queued'
      AND flow_key IS NOT NULL ORDER BY seq LIMIT 1) FROM json_each(:keys) AS j)
    RETURNING rid, id, task, queue, input, attempts, priority, seq, enqueued_at, run_at, traceparent, schedule, lease_losses, flow_key`,
  /**
   * The first `n` queued runs of each `[key, n]` of `:keys` (a JSON array; fewer if the key has fewer),
   * leased; `flow_key` and `seq` say whose and in which order. Each key's runs are walked in `seq, rid`
   * order, one index probe per run (`w`), whatever the key's queue holds.
   */
  flowLeaseKeys: `UPDATE runs SET state = 'active', attempts = attempts + 1, worker = :worker, started_at = :now, lease_until = :until,
      rev = rev + 1, history = ${HISTORY_WITH_LAST}, a_no = attempts + 1, a_ended = NULL, a_outcome = NULL
    WHERE rid IN (WITH RECURSIVE w(key, n, seq, rid) AS (
        SELECT j.value ->> 0, j.value ->> 1, -9223372036854775808, 0 FROM json_each(:keys) AS j
        UNION ALL
        SELECT w.key, w.n - 1, r.seq, r.rid FROM w JOIN runs AS r ON r.rid = (SELECT rid FROM runs
          WHERE queue = :queue AND flow_group = :grp AND flow_key = w.key AND state = 'queued' AND flow_key IS NOT NULL
            AND seq >= w.seq AND (seq > w.seq OR rid > w.rid) ORDER BY seq, rid LIMIT 1)
        WHERE w.n > 0)
      SELECT rid FROM w WHERE rid > 0)
    RETURNING rid, id, task, queue, input, attempts, priority, seq, enqueued_at, run_at, traceparent, schedule, lease_losses, flow_key`,
  failCorrupt: `UPDATE runs SET state = 'failed', error = :error, finished_at = :now, expires_at = :expires, lease_until = NULL,
      rev = rev + 1, ${endAttempt(':now', "'failed'")}
    WHERE rid = :rid`,
  nextScheduled: `SELECT run_at FROM runs WHERE queue = ? AND state = 'scheduled' AND run_at IS NOT NULL ORDER BY run_at LIMIT 1`,
  nextLease: `SELECT lease_until FROM runs WHERE queue = ? AND state = 'active' AND lease_until IS NOT NULL ORDER BY lease_until LIMIT 1`,

  // settle, renew, release, progress (flow_kc: whether a freed slot may bring its key back to its ring)
  /** ?4 now, ?5 expires, ?6 result */
  succeed: `UPDATE runs SET state = 'succeeded', result = ?6, error = NULL, finished_at = ?4, expires_at = ?5,
      lease_until = NULL, rev = rev + 1, ${endAttempt('?4', "'succeeded'")}
    WHERE ${HELD} RETURNING queue, started_at, flow_group, flow_key, flow_kc, workflow`,
  /** ?4 now, ?5 expires, ?6 error */
  fail: `UPDATE runs SET state = 'failed', error = ?6, finished_at = ?4, expires_at = ?5, lease_until = NULL,
      rev = rev + 1, ${endAttempt('?4', "'failed'")}
    WHERE ${HELD} RETURNING queue, started_at, flow_group, flow_key, flow_kc, workflow`,
  deleteHeld: `DELETE FROM runs WHERE ${HELD} RETURNING queue, started_at, task, idempotency_key, flow_group, flow_key, flow_kc, workflow`,
  /** ?4 now, ?5 runAt, ?6 seq, ?7 error */
  retryLater: `UPDATE runs SET state = CASE WHEN ?5 <= ?4 THEN 'queued' ELSE 'scheduled' END, run_at = ?5, seq = ?6,
      error = ?7, lease_until = NULL, rev = rev + 1, ${endAttempt('?4', "'retry'")}
    WHERE ${HELD} RETURNING queue, started_at, state, flow_group, flow_key, flow_kc, flow_gc, flow_krate, flow_grate, flow_kw`,
  /** ?4 lease expiry */
  renew: `UPDATE runs SET lease_until = ?4 WHERE ${HELD}`,
  /** ?4 now */
  release: `UPDATE runs SET state = 'queued', attempts = attempts - 1, lease_until = NULL, rev = rev + 1,
      ${endAttempt('?4', "'released'")}
    WHERE ${HELD} RETURNING queue, flow_group, flow_key, flow_kc, flow_gc, flow_krate, flow_grate, flow_kw`,
  /** ?4 now, ?5 until: a handler backed off; a run without a flow spec waits until ?5 itself. */
  backOff: `UPDATE runs SET state = CASE WHEN flow_key IS NOT NULL OR ?5 <= ?4 THEN 'queued' ELSE 'scheduled' END,
      run_at = CASE WHEN flow_key IS NULL THEN ?5 ELSE run_at END, attempts = attempts - 1, lease_until = NULL, rev = rev + 1,
      ${endAttempt('?4', "'backoff'")}
    WHERE ${HELD} RETURNING queue, state, flow_group, flow_key, flow_kc, flow_gc, flow_krate, flow_grate, flow_kw`,
  /** ?4 progress */
  progress: `UPDATE runs SET progress = ?4, rev = rev + 1 WHERE ${HELD}`,

  // reading and managing runs
  get: 'SELECT * FROM runs WHERE id = ?',
  /** :retention the broker's default, for runs stored without their own (cancel_retention). */
  cancel: `UPDATE runs SET state = 'cancelled', finished_at = :now, expires_at = :now + coalesce(cancel_retention, :retention),
      lease_until = NULL, rev = rev + 1,
      a_ended = CASE WHEN state = 'active' THEN :now ELSE a_ended END,
      a_outcome = CASE WHEN state = 'active' THEN 'cancelled' ELSE a_outcome END
    WHERE id = :id`,
  cancelLog: 'INSERT INTO cancel_log (run_id, at) VALUES (?, ?)',
  cancelsSince: 'SELECT seq, run_id FROM cancel_log WHERE seq > ? ORDER BY seq',
  cancelsLast: 'SELECT coalesce(max(seq), 0) AS seq FROM cancel_log',
  // Failed and cancelled runs are replayed. A row whose state is none of the six (edited by hand)
  // reads as failed (toRecord): it is replayed as one.
  retry: `UPDATE runs SET ${REPLAY}, seq = :seq
    WHERE id = :id AND state NOT IN ('waiting', 'queued', 'scheduled', 'active', 'succeeded') AND origin IS NULL
    RETURNING queue, workflow, flow_group, flow_key, flow_kc, flow_gc, flow_krate, flow_grate, flow_kw`,
  countsAll: 'SELECT queue, state, count(*) AS n FROM runs GROUP BY queue, state',
  countsSome: 'SELECT queue, state, count(*) AS n FROM runs WHERE queue IN (SELECT value FROM json_each(?)) GROUP BY queue, state',
  pruneRuns:
    'DELETE FROM runs WHERE rid IN (SELECT rid FROM runs WHERE expires_at <= ? LIMIT ?) RETURNING id, queue, task, idempotency_key, workflow',
  pruneEdges: 'DELETE FROM workflow_edges WHERE dependent = ?',
  pruneWorkflow: 'DELETE FROM workflows WHERE id = ? AND NOT EXISTS (SELECT 1 FROM runs WHERE workflow = ?)',
  pruneKeys: `DELETE FROM idempotency
    WHERE (queue, task, key) IN (SELECT queue, task, key FROM idempotency WHERE expires_at <= ? LIMIT ?)`,
  pruneCancels: 'DELETE FROM cancel_log WHERE at < ?',

  pruneStats: 'DELETE FROM queue_stats WHERE minute < ?',
  pruneWorkers: 'DELETE FROM workers WHERE last_seen < ?',
  revs: 'SELECT id, rev FROM runs WHERE id IN (SELECT value FROM json_each(?))',
  ping: 'SELECT 1 AS ok',

  // inspection and administration
  queues: 'SELECT queue FROM queue_signals UNION SELECT queue FROM paused_queues ORDER BY queue',
  heartbeat: `INSERT INTO workers (id, info, last_seen, ttl_ms) VALUES (?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET info = excluded.info, last_seen = excluded.last_seen, ttl_ms = excluded.ttl_ms`,
  removeWorker: 'DELETE FROM workers WHERE id = ?',
  workers: 'SELECT info, last_seen, ttl_ms FROM workers WHERE last_seen >= ? ORDER BY id',
  pause: 'INSERT INTO paused_queues (queue, paused_at) VALUES (?, ?) ON CONFLICT (queue) DO NOTHING',
  resume: 'DELETE FROM paused_queues WHERE queue = ?',
  purge: `DELETE FROM runs WHERE rid IN (SELECT rid FROM runs WHERE queue = ? AND state IN ('queued', 'scheduled') LIMIT ?)
    RETURNING id, queue, task, idempotency_key, state, flow_group, flow_key, workflow`,
  retryFailedAll: `UPDATE runs SET ${REPLAY}, seq = :base + p.n
    FROM (SELECT rid AS prid, row_number() OVER (ORDER BY rid) AS n FROM runs
          WHERE queue = :queue AND state = 'failed' AND origin IS NULL ORDER BY rid LIMIT :limit) AS p
    WHERE runs.rid = p.prid RETURNING id, workflow, flow_group, flow_key, flow_kc, flow_gc, flow_krate, flow_grate, flow_kw`,
  retryFailedTask: `UPDATE runs SET ${REPLAY}, seq = :base + p.n
    FROM (SELECT rid AS prid, row_number() OVER (ORDER BY rid) AS n FROM runs
          WHERE queue = :queue AND task = :task AND state = 'failed' AND origin IS NULL ORDER BY rid LIMIT :limit) AS p
    WHERE runs.rid = p.prid RETURNING id, workflow, flow_group, flow_key, flow_kc, flow_gc, flow_krate, flow_grate, flow_kw`,
  stats: 'SELECT minute, enqueued, succeeded, failed, retried, wait, run FROM queue_stats WHERE queue = ? AND minute >= ? ORDER BY minute',
  // Listing (see listRuns): newest first is rid DESC, which every index carries; each range below is
  // one index range read backwards from the cursor, `limit` entries at most.
  ridsAll: 'SELECT rid FROM runs WHERE rid < ? ORDER BY rid DESC LIMIT ?',
  ridsQueueState: 'SELECT rid FROM runs WHERE queue = ? AND state = ? AND rid < ? ORDER BY rid DESC LIMIT ?',
  ridsTaskState: 'SELECT rid FROM runs WHERE task = ? AND state = ? AND rid < ? ORDER BY rid DESC LIMIT ?',
  ridsTaskStateQueue: 'SELECT rid FROM runs WHERE task = ? AND state = ? AND +queue = ? AND rid < ? ORDER BY rid DESC LIMIT ?',
  rowsByRid: 'SELECT * FROM runs WHERE rid IN (SELECT value FROM json_each(?)) ORDER BY rid DESC',
  ...SCHEDULE_SQL,
  ...WORKFLOW_SQL,
  ...SPAWN_SQL,
  ...FLOW_SQL,
} as const;

export type StatementName = keyof typeof SQL;

/** Statements whose integers are read as BigInt, so that a huge number written by hand cannot throw. */
export const READ_BIGINTS: ReadonlySet<StatementName> = new Set([
  'lease',
  'flowLeaseMany',
  'flowLeaseKey',
  'flowLeaseKeys',
  'get',
  'nextScheduled',
  'nextLease',
  'nextStartBy',
  'seqGet',
  'revs',
  'signalAll',
  'succeed',
  'fail',
  'deleteHeld',
  'retryLater',
  'rowsByRid',
  'wfRuns',
  'ridsAll',
  'ridsQueueState',
  'ridsTaskState',
  'ridsTaskStateQueue',
]);

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const MIN_SAFE = -MAX_SAFE;

/** A finite number from a column, or undefined (NULL, text, blob, out of range). */
export function num(v: SQLOutputValue | undefined): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) ? v : undefined;
  if (typeof v === 'bigint') return v >= MIN_SAFE && v <= MAX_SAFE ? Number(v) : undefined;
  return undefined;
}

function text(v: SQLOutputValue | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function describeValue(v: SQLOutputValue | undefined): string {
  if (v === null || v === undefined) return 'NULL';
  if (typeof v === 'string') return `text ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v)}`;
  if (typeof v === 'bigint' || typeof v === 'number') return `the number ${String(v)}`;
  return `a blob of ${v.byteLength} bytes`;
}

export const STATES: ReadonlySet<string> = new Set(RUN_STATES);

export function emptyCounts(): QueueCounts {
  return { waiting: 0, queued: 0, scheduled: 0, active: 0, succeeded: 0, failed: 0, cancelled: 0 };
}

function parseHistory(v: SQLOutputValue | undefined): AttemptRecord[] {
  if (typeof v !== 'string') return [];
  try {
    const parsed: unknown = JSON.parse(v);
    return Array.isArray(parsed) ? parsed.filter((e): e is AttemptRecord => !!e && typeof e === 'object' && !Array.isArray(e)) : [];
  } catch {
    return [];
  }
}

export const LEASE_LOST_ERROR = runErrorText('leaseLost', {});

export function corruptError(id: string, problems: string[]): string {
  return runErrorText('corrupt', { id, why: problems.join('; ') });
}

export function byPriorityThenSeq(a: Row, b: Row): number {
  const pa = num(a.priority) ?? Number.POSITIVE_INFINITY;
  const pb = num(b.priority) ?? Number.POSITIVE_INFINITY;
  if (pa !== pb) return pb - pa;
  return (num(a.seq) ?? Number.POSITIVE_INFINITY) - (num(b.seq) ?? Number.POSITIVE_INFINITY) || 0;
}

/** A leased row as a Reservation, or the list of what is wrong with it. */
export function toReservation(row: Row, now: number): Reservation | string[] {
  const problems: string[] = [];
  const id = row.id;
  if (typeof id !== 'string' || id === '') problems.push(`id is ${describeValue(id)}`);
  const task = row.task;
  if (typeof task !== 'string' || task === '') problems.push(`task is ${describeValue(task)}`);
  const input = row.input;
  if (typeof input !== 'string') problems.push(`input is ${describeValue(input)}`);
  const attempt = num(row.attempts);
  if (attempt === undefined || !Number.isInteger(attempt) || attempt < 1) problems.push(`attempts is ${describeValue(row.attempts)}`);
  const priority = num(row.priority);
  if (priority === undefined) problems.push(`priority is ${describeValue(row.priority)}`);
  const enqueuedAt = num(row.enqueued_at);
  if (enqueuedAt === undefined) problems.push(`enqueued_at is ${describeValue(row.enqueued_at)}`);
  const traceparent = row.traceparent;
  if (traceparent !== null && traceparent !== undefined && typeof traceparent !== 'string') {
    problems.push(`traceparent is ${describeValue(traceparent)}`);
  }
  if (problems.length) return problems;
  const r: Reservation = {
    id: id as string,
    task: task as string,
    queue: String(row.queue),
    input: input as string,
    attempt: attempt as number,
    priority: priority as number,
    enqueuedAt: enqueuedAt as number,
    startedAt: now,
  };
  if (typeof traceparent === 'string') r.traceparent = traceparent;
  const mark = readMark(row.schedule);
  if (mark) r.schedule = mark;
  const losses = num(row.lease_losses);
  if (losses !== undefined && losses > 0) r.leaseLosses = losses;
  return r;
}

/** A row as a RunRecord; never throws (a corrupt field reads as absent, or as text the caller will flag). */
export function toRecord(row: Row): RunRecord {
  // A state that is none of the six (edited by hand) reads as failed, its error saying why.
  const known = STATES.has(String(row.state));
  const rec: RunRecord = {
    id: String(row.id),
    task: text(row.task) ?? '',
    queue: String(row.queue),
    state: known ? (String(row.state) as RunState) : 'failed',
    priority: num(row.priority) ?? 0,
    input: text(row.input) ?? '',
    attempts: num(row.attempts) ?? 0,
    leaseLosses: num(row.lease_losses) ?? 0,
    enqueuedAt: num(row.enqueued_at) ?? 0,
    history: parseHistory(row.history),
  };
  const attempt = num(row.a_no);
  if (attempt !== undefined) {
    // The latest attempt (see LAST_ATTEMPT): absent fields stay absent.
    const last: AttemptRecord = { attempt, worker: text(row.worker) ?? '', startedAt: num(row.started_at) ?? 0 };
    const ended = num(row.a_ended);
    if (ended !== undefined) last.finishedAt = ended;
    const outcome = text(row.a_outcome);
    if (outcome !== undefined) last.outcome = outcome;
    const error = text(row.error);
    if (error !== undefined && (outcome === 'failed' || outcome === 'retry')) last.error = error;
    rec.history.push(last);
  }
  const result = text(row.result);
  if (result !== undefined) rec.result = result;
  const error = known ? text(row.error) : corruptError(String(row.id), [`state is ${describeValue(row.state)}`]);
  if (error !== undefined) rec.error = error;
  const progress = text(row.progress);
  if (progress !== undefined) rec.progress = progress;
  const runAt = num(row.run_at);
  if (runAt !== undefined) rec.runAt = runAt;
  const startedAt = num(row.started_at);
  if (startedAt !== undefined) rec.startedAt = startedAt;
  const finishedAt = num(row.finished_at);
  if (finishedAt !== undefined) rec.finishedAt = finishedAt;
  const expiresAt = num(row.expires_at);
  if (expiresAt !== undefined) rec.expiresAt = expiresAt;
  const worker = text(row.worker);
  if (worker !== undefined) rec.worker = worker;
  const key = text(row.idempotency_key);
  if (key !== undefined) rec.idempotencyKey = key;
  const traceparent = text(row.traceparent);
  if (traceparent !== undefined) rec.traceparent = traceparent;
  const workflow = text(row.workflow);
  if (workflow !== undefined) rec.workflow = workflow;
  const startBy = num(row.start_by);
  if (startBy !== undefined) rec.startBy = startBy;
  const origin = text(row.origin);
  if (origin !== undefined) rec.origin = origin;
  const group = text(row.flow_group);
  if (group !== undefined) rec.flow = { group, key: text(row.flow_key) ?? '' };
  const mark = readMark(row.schedule);
  if (mark) rec.schedule = mark;
  return rec;
}

/** Index of the latency bucket of `ms` (the last one holds everything above the last bound). */
export function bucketOf(ms: number): number {
  for (let i = 0; i < LATENCY_BUCKETS_MS.length; i++) if (ms <= (LATENCY_BUCKETS_MS[i] as number)) return i;
  return LATENCY_BUCKETS_MS.length;
}

/** A histogram read from its JSON column, always of the right length. */
export function histogram(v: SQLOutputValue | undefined): number[] {
  const out = new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0);
  if (typeof v !== 'string') return out;
  try {
    const parsed: unknown = JSON.parse(v);
    if (Array.isArray(parsed)) for (let i = 0; i < out.length; i++) out[i] = Number(parsed[i]) || 0;
  } catch {
    // a corrupt histogram restarts from zero
  }
  return out;
}
