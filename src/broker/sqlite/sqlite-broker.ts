/**
 * The embedded broker: one SQLite file (WAL mode) shared by an API process and its workers on one
 * machine, through `node:sqlite`. Errand's default when no Redis URL is given.
 *
 * - Every state transition is one `BEGIN IMMEDIATE` transaction: writers are serialised by SQLite's
 *   write lock, so a run is never leased to two workers, across processes too. Statements are
 *   prepared once; batch methods run one transaction for the whole batch.
 * - Reserve leases with one `UPDATE ... WHERE rid IN (SELECT ... ORDER BY priority DESC, seq LIMIT ?)
 *   RETURNING ...` per queue, over a partial index of queued runs.
 * - Wake-ups (see `wake-hub.ts`): in-process events, and a watch on the database folder for writes
 *   from other processes; a few-second safety timer only guards against lost events.
 * - Rows are validated as they are read: a run stored corrupt (edited by hand, say) is failed with
 *   reason `corrupt` by reserve, and never makes a whole batch throw.
 *
 * Schema and migrations: `schema.ts`.
 */
import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import type { DatabaseSync, SQLOutputValue, StatementSync } from 'node:sqlite';
import type { Logger } from 'pino';
import { ConfigError } from '../../core/errors.ts';
import type {
  AttemptRecord,
  Broker,
  BrokerOptions,
  CancelOutcome,
  EnqueueResult,
  Lease,
  NewRun,
  QueueCounts,
  Reservation,
  ReserveRequest,
  ReserveResult,
  RetryOutcome,
  RunRecord,
  RunState,
  Settlement,
  SettleStatus,
} from '../types.ts';
import { RUN_STATES } from '../types.ts';
import { loadSqlite } from './load-sqlite.ts';
import { migrate } from './schema.ts';
import { acquireHub, releaseHub, type WakeHub } from './wake-hub.ts';

const sqlite = loadSqlite();

const DAY = 86_400_000;

export interface SqliteBrokerOptions extends BrokerOptions {
  /** The database file (created if missing; its folder must exist), or `:memory:` (one process, nothing kept). */
  path: string;
  logger?: Logger;
  /** `normal` (default): a commit survives a process crash, the last commits may be lost on power loss. `full`: fsync on every commit. */
  synchronous?: 'normal' | 'full';
  /** How long a transaction waits for another process's write lock before failing, in ms. Default 5000. */
  busyTimeoutMs?: number;
  /** Retention of cancelled runs (the contract's `cancel` carries none), in ms. Default 1 day. */
  cancelledRetentionMs?: number;
  /** How long a waiter sleeps at most without any event, guarding against a lost file event, in ms. Default 2000. */
  safetyWakeMs?: number;
}

type Row = Record<string, SQLOutputValue>;

interface Waiter {
  queues: readonly string[];
  wake: () => void;
}

interface Watched {
  listeners: Set<() => void>;
  rev: number | null;
}

/** Query fragment: sets fields of the last history entry, if the history is a JSON array ending with an object. */
function historySet(finishedAt: string, outcome: string, error?: string): string {
  const err = error ? `, '$[#-1].error', ${error}` : '';
  return `CASE WHEN json_valid(history) THEN CASE WHEN json_type(history, '$[#-1]') = 'object'
    THEN json_set(history, '$[#-1].finishedAt', ${finishedAt}, '$[#-1].outcome', ${outcome}${err})
    ELSE history END ELSE history END`;
}

const HELD = `id = :id AND state = 'active' AND attempts = :attempt AND worker = :worker`;

const SQL = {
  begin: 'BEGIN IMMEDIATE',
  commit: 'COMMIT',
  seqGet: `SELECT value FROM errand_meta WHERE key = 'seq'`,
  seqSet: `UPDATE errand_meta SET value = ? WHERE key = 'seq'`,
  signalBump: 'INSERT INTO queue_signals (queue, rev) VALUES (?, 1) ON CONFLICT (queue) DO UPDATE SET rev = rev + 1 RETURNING rev',
  signalGet: 'SELECT rev FROM queue_signals WHERE queue = ?',
  signalAll: 'SELECT queue, rev FROM queue_signals',

  idemGet: 'SELECT run_id, expires_at FROM idempotency WHERE task = ? AND key = ?',
  idemPut: `INSERT INTO idempotency (task, key, run_id, expires_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (task, key) DO UPDATE SET run_id = excluded.run_id, expires_at = excluded.expires_at`,
  stateOf: 'SELECT state, queue FROM runs WHERE id = ?',
  insert: `INSERT INTO runs (id, queue, state, task, priority, seq, input, enqueued_at, run_at, idempotency_key, traceparent, attempts, lease_losses, history, rev)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, '[]', 0) ON CONFLICT (id) DO NOTHING`,

  promote: `UPDATE runs SET state = 'queued', seq = :base + p.n, rev = rev + 1
    FROM (SELECT rid AS prid, row_number() OVER (ORDER BY run_at, seq, rid) AS n
          FROM runs WHERE queue = :queue AND state = 'scheduled' AND run_at <= :now) AS p
    WHERE runs.rid = p.prid`,
  recoverFail: `UPDATE runs SET state = 'failed', lease_losses = coalesce(lease_losses, 0) + 1, error = :error,
      finished_at = :now, expires_at = :expires, lease_until = NULL, rev = rev + 1, history = ${historySet(':now', "'lost'")}
    WHERE queue = :queue AND state = 'active' AND lease_until <= :now AND coalesce(lease_losses, 0) + 1 >= :max`,
  recoverRequeue: `UPDATE runs SET state = 'queued', lease_losses = coalesce(lease_losses, 0) + 1, lease_until = NULL, rev = rev + 1,
      history = ${historySet(':now', "'lost'")}
    WHERE queue = :queue AND state = 'active' AND lease_until <= :now`,
  lease: `UPDATE runs SET state = 'active', attempts = attempts + 1, worker = :worker, started_at = :now, lease_until = :until, rev = rev + 1,
      history = CASE WHEN json_valid(history) THEN CASE WHEN json_type(history) = 'array'
        THEN json_insert(history, '$[#]', json_object('attempt', attempts + 1, 'worker', :worker, 'startedAt', :now))
        ELSE json_array(json_object('attempt', attempts + 1, 'worker', :worker, 'startedAt', :now)) END
        ELSE json_array(json_object('attempt', attempts + 1, 'worker', :worker, 'startedAt', :now)) END
    WHERE rid IN (SELECT rid FROM runs WHERE queue = :queue AND state = 'queued' ORDER BY priority DESC, seq LIMIT :max)
    RETURNING rid, id, task, queue, input, attempts, priority, seq, enqueued_at, traceparent`,
  failCorrupt: `UPDATE runs SET state = 'failed', error = :error, finished_at = :now, expires_at = :expires, lease_until = NULL, rev = rev + 1,
      history = ${historySet(':now', "'failed'", ':error')}
    WHERE rid = :rid`,
  nextScheduled: `SELECT run_at FROM runs WHERE queue = ? AND state = 'scheduled' AND run_at IS NOT NULL ORDER BY run_at LIMIT 1`,
  nextLease: `SELECT lease_until FROM runs WHERE queue = ? AND state = 'active' AND lease_until IS NOT NULL ORDER BY lease_until LIMIT 1`,

  succeed: `UPDATE runs SET state = 'succeeded', result = :result, error = NULL, finished_at = :now, expires_at = :expires, lease_until = NULL,
      rev = rev + 1, history = ${historySet(':now', "'succeeded'")}
    WHERE ${HELD}`,
  fail: `UPDATE runs SET state = 'failed', error = :error, finished_at = :now, expires_at = :expires, lease_until = NULL,
      rev = rev + 1, history = ${historySet(':now', "'failed'", ':error')}
    WHERE ${HELD}`,
  deleteHeld: `DELETE FROM runs WHERE ${HELD}`,
  retryLater: `UPDATE runs SET state = CASE WHEN :runAt <= :now THEN 'queued' ELSE 'scheduled' END, run_at = :runAt, seq = :seq,
      error = :error, lease_until = NULL, rev = rev + 1, history = ${historySet(':now', "'retry'", ':error')}
    WHERE ${HELD} RETURNING queue`,
  renew: `UPDATE runs SET lease_until = :until WHERE ${HELD}`,
  release: `UPDATE runs SET state = 'queued', attempts = attempts - 1, lease_until = NULL, rev = rev + 1,
      history = ${historySet(':now', "'released'")}
    WHERE ${HELD} RETURNING queue`,
  progress: `UPDATE runs SET progress = :progress, rev = rev + 1 WHERE ${HELD}`,

  get: 'SELECT * FROM runs WHERE id = ?',
  cancel: `UPDATE runs SET state = 'cancelled', finished_at = :now, expires_at = :expires, lease_until = NULL, rev = rev + 1,
      history = CASE WHEN state = 'active' THEN ${historySet(':now', "'cancelled'")} ELSE history END
    WHERE id = :id`,
  retry: `UPDATE runs SET state = 'queued', attempts = 0, lease_losses = 0, seq = :seq, run_at = :now, result = NULL, error = NULL,
      progress = NULL, finished_at = NULL, expires_at = NULL, lease_until = NULL, rev = rev + 1
    WHERE id = :id AND state = 'failed' RETURNING queue`,
  countsAll: 'SELECT queue, state, count(*) AS n FROM runs GROUP BY queue, state',
  countsSome: 'SELECT queue, state, count(*) AS n FROM runs WHERE queue IN (SELECT value FROM json_each(?)) GROUP BY queue, state',
  pruneRuns: 'DELETE FROM runs WHERE rid IN (SELECT rid FROM runs WHERE expires_at <= ? LIMIT ?)',
  pruneKeys: 'DELETE FROM idempotency WHERE (task, key) IN (SELECT task, key FROM idempotency WHERE expires_at <= ? LIMIT ?)',
  revs: 'SELECT id, rev FROM runs WHERE id IN (SELECT value FROM json_each(?))',
  ping: 'SELECT 1 AS ok',
} as const;

type StatementName = keyof typeof SQL;

/** Statements whose integers are read as BigInt, so that a huge number written by hand cannot throw. */
const READ_BIGINTS: ReadonlySet<StatementName> = new Set(['lease', 'get', 'nextScheduled', 'nextLease', 'seqGet', 'revs', 'signalAll']);

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const MIN_SAFE = -MAX_SAFE;

/** A finite number from a column, or undefined (NULL, text, blob, out of range). */
function num(v: SQLOutputValue | undefined): number | undefined {
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

const STATES: ReadonlySet<string> = new Set(RUN_STATES);

function emptyCounts(): QueueCounts {
  return { queued: 0, scheduled: 0, active: 0, succeeded: 0, failed: 0, cancelled: 0 };
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

export class SqliteBroker implements Broker {
  readonly kind = 'sqlite' as const;
  /** The file (absolute) or `:memory:`. */
  readonly path: string;
  readonly #db: DatabaseSync;
  readonly #s: Record<StatementName, StatementSync>;
  readonly #logger: Logger | undefined;
  readonly #maxLeaseLosses: number;
  readonly #failedRetentionMs: number;
  readonly #cancelledRetentionMs: number;
  readonly #safetyWakeMs: number;
  readonly #hub: WakeHub;
  #closed = false;

  /** The `seq` counter within the current transaction (undefined outside one). */
  #seqNext: number | undefined;
  #seqDirty = false;

  readonly #waiters = new Set<Waiter>();
  /** Queue signal revisions as of this broker's last reserve (see `queue_signals` in schema.ts). */
  readonly #seen = new Map<string, number>();
  readonly #watched = new Map<string, Watched>();
  #watchTimer: NodeJS.Timeout | undefined;
  readonly #cancelListeners = new Set<(ids: string[]) => void>();

  constructor(options: SqliteBrokerOptions) {
    if (!options || typeof options.path !== 'string' || options.path === '') {
      throw new ConfigError('SqliteBroker needs a path: a database file, or ":memory:"');
    }
    const memory = options.path === ':memory:';
    this.path = memory ? ':memory:' : resolve(options.path);
    this.#logger = options.logger;
    this.#maxLeaseLosses = positiveInt(options.maxLeaseLosses, 3, 'maxLeaseLosses');
    this.#failedRetentionMs = nonNegative(options.failedRetentionMs, 7 * DAY, 'failedRetentionMs');
    this.#cancelledRetentionMs = nonNegative(options.cancelledRetentionMs, DAY, 'cancelledRetentionMs');
    this.#safetyWakeMs = positiveInt(options.safetyWakeMs, 2000, 'safetyWakeMs');
    const busyTimeoutMs = nonNegative(options.busyTimeoutMs, 5000, 'busyTimeoutMs');
    const synchronous = (options.synchronous ?? 'normal').toLowerCase();
    if (synchronous !== 'normal' && synchronous !== 'full') {
      throw new ConfigError(`SqliteBroker: synchronous must be "normal" or "full", got ${JSON.stringify(options.synchronous)}`);
    }

    let db: DatabaseSync;
    try {
      db = new sqlite.DatabaseSync(this.path, { timeout: busyTimeoutMs, enableForeignKeyConstraints: false });
    } catch (err) {
      throw new ConfigError(`Cannot open the SQLite file ${this.path}: ${(err as Error).message}`);
    }
    try {
      if (!memory) {
        const mode = db.prepare('PRAGMA journal_mode = WAL').get() as { journal_mode?: string } | undefined;
        if (mode?.journal_mode !== 'wal') {
          this.#logger?.warn({ path: this.path, mode: mode?.journal_mode }, 'SQLite broker: WAL mode is not available for this file');
        }
      }
      db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
      db.exec(`PRAGMA synchronous = ${synchronous.toUpperCase()}`);
      db.exec('PRAGMA temp_store = MEMORY');
      db.exec('PRAGMA cache_size = -16000');
      db.exec('PRAGMA journal_size_limit = 67108864');
      migrate(db, this.path);
      const statements = {} as Record<StatementName, StatementSync>;
      for (const name of Object.keys(SQL) as StatementName[]) {
        const st = db.prepare(SQL[name]);
        if (READ_BIGINTS.has(name)) st.setReadBigInts(true);
        statements[name] = st;
      }
      this.#s = statements;
    } catch (err) {
      db.close();
      throw err;
    }
    this.#db = db;
    let file: string | null = null;
    if (!memory) {
      try {
        file = realpathSync(this.path);
      } catch {
        file = this.path;
      }
    }
    this.#hub = acquireHub(file, this.#logger);
    this.#hub.on('work', this.#onWork);
    this.#hub.on('runs', this.#onRuns);
    this.#hub.on('cancel', this.#onCancelled);
    this.#hub.on('change', this.#onChange);
  }

  // ---------------------------------------------------------------------------------------------
  // Transactions and counters

  #open(): void {
    if (this.#closed) throw new Error(`SqliteBroker (${this.path}) is closed`);
  }

  /** Runs `fn` in one BEGIN IMMEDIATE transaction (this process holds SQLite's write lock throughout). */
  #tx<T>(fn: () => T): T {
    this.#open();
    this.#s.begin.run();
    try {
      const out = fn();
      if (this.#seqDirty) this.#s.seqSet.run(this.#seqNext ?? 0);
      this.#s.commit.run();
      return out;
    } catch (err) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      throw err;
    } finally {
      this.#seqNext = undefined;
      this.#seqDirty = false;
    }
  }

  /** Takes `n` FIFO positions; returns the one before the first (positions are base+1 .. base+n). */
  #takeSeq(n: number): number {
    if (this.#seqNext === undefined) this.#seqNext = num((this.#s.seqGet.get() as Row | undefined)?.value) ?? 0;
    const base = this.#seqNext;
    this.#seqNext = base + n;
    if (n > 0) this.#seqDirty = true;
    return base;
  }

  #bump(queue: string): number {
    return num((this.#s.signalBump.get(queue) as Row | undefined)?.rev) ?? 0;
  }

  // ---------------------------------------------------------------------------------------------
  // Enqueue

  async enqueue(runs: readonly NewRun[], now: number): Promise<EnqueueResult[]> {
    this.#open();
    if (runs.length === 0) return [];
    const queues = new Set<string>();
    const results = this.#tx(() => {
      const out: EnqueueResult[] = [];
      const base = this.#takeSeq(runs.length);
      for (let i = 0; i < runs.length; i++) {
        const run = runs[i] as NewRun;
        const key = run.idempotencyKey;
        if (key !== undefined) {
          const hit = this.#s.idemGet.get(run.task, key) as Row | undefined;
          if (hit && (num(hit.expires_at) ?? 0) > now) {
            const id = String(hit.run_id);
            const existing = this.#s.stateOf.get(id) as Row | undefined;
            out.push({ id, created: false, state: existing ? (existing.state as RunState) : 'queued' });
            continue;
          }
        }
        const state: RunState = run.runAt <= now ? 'queued' : 'scheduled';
        const inserted = this.#s.insert.run(
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
        );
        if (inserted.changes === 0) {
          // Same id enqueued again: the first one stands.
          const existing = this.#s.stateOf.get(run.id) as Row | undefined;
          out.push({ id: run.id, created: false, state: (existing?.state as RunState) ?? 'queued' });
          continue;
        }
        if (key !== undefined) this.#s.idemPut.run(run.task, key, run.id, now + (run.idempotencyTtl ?? DAY));
        queues.add(run.queue);
        out.push({ id: run.id, created: true, state });
      }
      for (const q of queues) this.#bump(q);
      return out;
    });
    if (queues.size) this.#hub.emit('work', [...queues]);
    return results;
  }

  // ---------------------------------------------------------------------------------------------
  // Reserve

  async reserve(req: ReserveRequest): Promise<ReserveResult> {
    this.#open();
    const { workerId, now, leaseMs } = req;
    const queues = [...new Set(req.queues)];
    let remaining = Math.max(0, Math.floor(req.max));
    const reserved: Reservation[] = [];
    const changed: string[] = [];
    const woken: string[] = [];
    const corrupt: { id: string; problems: string[] }[] = [];
    let nextAt: number | null = null;
    const seen: [string, number][] = [];

    this.#tx(() => {
      for (const queue of queues) {
        let signal = false;
        // 1. Due scheduled runs become queued, in the order they became due.
        const base = this.#takeSeq(0);
        const promoted = Number(this.#s.promote.run({ base, queue, now }).changes);
        if (promoted > 0) {
          this.#takeSeq(promoted);
          signal = true;
        }
        // 2. Expired leases: failed after maxLeaseLosses, requeued (at the head of their priority) before.
        const lost = Number(
          this.#s.recoverFail.run({
            queue,
            now,
            max: this.#maxLeaseLosses,
            expires: now + this.#failedRetentionMs,
            error: LEASE_LOST_ERROR,
          }).changes,
        );
        const requeued = Number(this.#s.recoverRequeue.run({ queue, now }).changes);
        if (lost + requeued > 0) signal = true;
        // 3. Lease up to `remaining` queued runs. Corrupt rows are failed and do not take a slot.
        while (remaining > 0) {
          const rows = this.#s.lease.all({ queue, now, worker: workerId, until: now + leaseMs, max: remaining }) as Row[];
          if (rows.length === 0) break;
          signal = true;
          rows.sort(byPriorityThenSeq);
          let valid = 0;
          for (const row of rows) {
            const r = toReservation(row, now);
            if (Array.isArray(r)) {
              const id = typeof row.id === 'string' ? row.id : `rowid ${String(row.rid)}`;
              const error = corruptError(id, r);
              this.#s.failCorrupt.run({ rid: row.rid ?? null, now, expires: now + this.#failedRetentionMs, error });
              corrupt.push({ id, problems: r });
              if (typeof row.id === 'string') changed.push(row.id);
              continue;
            }
            reserved.push(r);
            changed.push(r.id);
            valid++;
          }
          remaining -= valid;
          if (valid === rows.length) break;
        }
        // 4. When something here becomes due without an enqueue.
        for (const t of [
          num((this.#s.nextScheduled.get(queue) as Row | undefined)?.run_at),
          num((this.#s.nextLease.get(queue) as Row | undefined)?.lease_until),
        ]) {
          if (t !== undefined && (nextAt === null || t < nextAt)) nextAt = t;
        }
        if (signal) {
          seen.push([queue, this.#bump(queue)]);
          if (promoted + requeued > 0) woken.push(queue);
        } else {
          seen.push([queue, num((this.#s.signalGet.get(queue) as Row | undefined)?.rev) ?? 0]);
        }
      }
    });

    for (const [q, rev] of seen) this.#seen.set(q, rev);
    for (const c of corrupt) {
      this.#logger?.warn({ runId: c.id, problems: c.problems }, 'SQLite broker: a stored run is corrupt; failed it with reason "corrupt"');
    }
    if (changed.length) this.#hub.emit('runs', changed);
    // Runs put back in a queue may be more than this worker took: let other waiters look.
    if (woken.length) this.#hub.emit('work', woken);
    return { runs: reserved, nextAt };
  }

  // ---------------------------------------------------------------------------------------------
  // Settle, renew, release, progress

  async settle(workerId: string, settlements: readonly Settlement[], now: number): Promise<SettleStatus[]> {
    this.#open();
    if (settlements.length === 0) return [];
    const changed: string[] = [];
    const queues = new Set<string>();
    const statuses = this.#tx(() => {
      const out = settlements.map((s): SettleStatus => {
        const held = { id: s.id, attempt: s.attempt, worker: workerId };
        let ok: boolean;
        if (s.outcome === 'retry') {
          const seq = this.#takeSeq(1) + 1;
          const row = this.#s.retryLater.get({ ...held, now, runAt: s.runAt, seq, error: s.error }) as Row | undefined;
          ok = row !== undefined;
          if (ok) queues.add(String(row?.queue));
        } else if (s.retentionMs <= 0) {
          ok = this.#s.deleteHeld.run(held).changes > 0;
        } else if (s.outcome === 'succeeded') {
          ok = this.#s.succeed.run({ ...held, now, expires: now + s.retentionMs, result: s.result ?? null }).changes > 0;
        } else {
          ok = this.#s.fail.run({ ...held, now, expires: now + s.retentionMs, error: s.error }).changes > 0;
        }
        if (ok) changed.push(s.id);
        return ok ? 'ok' : 'lost';
      });
      // A retried run is work again now or later (its runAt moves the queue's next due time).
      for (const q of queues) this.#bump(q);
      return out;
    });
    if (changed.length) this.#hub.emit('runs', changed);
    if (queues.size) this.#hub.emit('work', [...queues]);
    return statuses;
  }

  async renew(workerId: string, leases: readonly Lease[], leaseMs: number, now: number): Promise<string[]> {
    this.#open();
    if (leases.length === 0) return [];
    return this.#tx(() => {
      const lost: string[] = [];
      for (const l of leases) {
        if (this.#s.renew.run({ id: l.id, attempt: l.attempt, worker: workerId, until: now + leaseMs }).changes === 0) lost.push(l.id);
      }
      return lost;
    });
  }

  async release(workerId: string, leases: readonly Lease[], now: number): Promise<void> {
    this.#open();
    if (leases.length === 0) return;
    const changed: string[] = [];
    const queues = new Set<string>();
    this.#tx(() => {
      for (const l of leases) {
        const row = this.#s.release.get({ id: l.id, attempt: l.attempt, worker: workerId, now }) as Row | undefined;
        if (row) {
          changed.push(l.id);
          queues.add(String(row.queue));
        }
      }
      for (const q of queues) this.#bump(q);
    });
    if (changed.length) this.#hub.emit('runs', changed);
    if (queues.size) this.#hub.emit('work', [...queues]);
  }

  async progress(workerId: string, lease: Lease, progress: string): Promise<SettleStatus> {
    this.#open();
    const ok = this.#s.progress.run({ id: lease.id, attempt: lease.attempt, worker: workerId, progress }).changes > 0;
    if (ok) this.#hub.emit('runs', [lease.id]);
    return ok ? 'ok' : 'lost';
  }

  // ---------------------------------------------------------------------------------------------
  // Reading and managing runs

  async getRun(id: string): Promise<RunRecord | null> {
    this.#open();
    const row = this.#s.get.get(id) as Row | undefined;
    return row ? toRecord(row) : null;
  }

  async cancel(id: string, now: number): Promise<CancelOutcome> {
    this.#open();
    const out = this.#tx((): CancelOutcome => {
      const row = this.#s.stateOf.get(id) as Row | undefined;
      if (!row) return { outcome: 'not_found' };
      const state = row.state as RunState;
      if (state !== 'queued' && state !== 'scheduled' && state !== 'active') return { outcome: 'finished', state };
      this.#s.cancel.run({ id, now, expires: now + this.#cancelledRetentionMs });
      return { outcome: 'cancelled', previous: state };
    });
    if (out.outcome === 'cancelled') {
      this.#hub.emit('runs', [id]);
      if (out.previous === 'active') this.#hub.emit('cancel', [id]);
    }
    return out;
  }

  async retry(id: string, now: number): Promise<RetryOutcome> {
    this.#open();
    let queue: string | undefined;
    const out = this.#tx((): RetryOutcome => {
      const row = this.#s.retry.get({ id, now, seq: this.#takeSeq(1) + 1 }) as Row | undefined;
      if (row) {
        queue = String(row.queue);
        this.#bump(queue);
        return { outcome: 'queued' };
      }
      const existing = this.#s.stateOf.get(id) as Row | undefined;
      return existing ? { outcome: 'not_failed', state: existing.state as RunState } : { outcome: 'not_found' };
    });
    if (queue !== undefined) {
      this.#hub.emit('runs', [id]);
      this.#hub.emit('work', [queue]);
    }
    return out;
  }

  async counts(queues?: readonly string[]): Promise<Record<string, QueueCounts>> {
    this.#open();
    const out: Record<string, QueueCounts> = {};
    let rows: Row[];
    if (queues) {
      for (const q of queues) out[q] = emptyCounts();
      rows = this.#s.countsSome.all(JSON.stringify(queues)) as Row[];
    } else {
      for (const r of this.#s.signalAll.all() as Row[]) if (typeof r.queue === 'string') out[r.queue] = emptyCounts();
      rows = this.#s.countsAll.all() as Row[];
    }
    for (const r of rows) {
      const q = String(r.queue);
      const state = String(r.state);
      if (!STATES.has(state)) continue;
      const c = (out[q] ??= emptyCounts());
      c[state as RunState] += Number(r.n);
    }
    return out;
  }

  async prune(now: number): Promise<number> {
    this.#open();
    const BATCH = 1000;
    let removed = 0;
    // Small transactions: the write lock is never held for long, whatever the backlog.
    for (;;) {
      const n = Number(this.#tx(() => this.#s.pruneRuns.run(now, BATCH).changes));
      removed += n;
      if (n < BATCH) break;
    }
    for (;;) {
      const n = Number(this.#tx(() => this.#s.pruneKeys.run(now, BATCH).changes));
      if (n < BATCH) break;
    }
    return removed;
  }

  // ---------------------------------------------------------------------------------------------
  // Wake-ups

  waitForWork(queues: readonly string[], until: number | null, signal: AbortSignal): Promise<void> {
    if (this.#closed || signal.aborted) return Promise.resolve();
    const delay = until === null ? this.#safetyWakeMs : Math.min(until - Date.now(), this.#safetyWakeMs);
    if (delay <= 0) return Promise.resolve();
    // Work that appeared since this broker's last reserve (another process's enqueue between that
    // reserve and this call, whose file event found no waiter).
    if (this.#signalsMoved(queues, this.#readSignals())) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const waiter: Waiter = {
        queues,
        wake: () => {
          clearTimeout(timer);
          signal.removeEventListener('abort', waiter.wake);
          this.#waiters.delete(waiter);
          resolve();
        },
      };
      const timer = setTimeout(waiter.wake, delay);
      signal.addEventListener('abort', waiter.wake, { once: true });
      this.#waiters.add(waiter);
    });
  }

  async watch(id: string, listener: () => void): Promise<() => void> {
    this.#open();
    let w = this.#watched.get(id);
    if (!w) {
      const rows = this.#s.revs.all(JSON.stringify([id])) as Row[];
      w = { listeners: new Set(), rev: rows[0] ? (num(rows[0].rev) ?? -1) : null };
      this.#watched.set(id, w);
    }
    const entry = w;
    entry.listeners.add(listener);
    if (!this.#watchTimer) {
      // Guards against a lost file event; also keeps the process alive while someone waits on a run.
      this.#watchTimer = setInterval(() => this.#checkRevs(null), this.#safetyWakeMs);
    }
    return () => {
      entry.listeners.delete(listener);
      if (entry.listeners.size === 0 && this.#watched.get(id) === entry) this.#watched.delete(id);
      if (this.#watched.size === 0 && this.#watchTimer) {
        clearInterval(this.#watchTimer);
        this.#watchTimer = undefined;
      }
    };
  }

  onCancel(listener: (ids: string[]) => void): () => void {
    this.#cancelListeners.add(listener);
    return () => {
      this.#cancelListeners.delete(listener);
    };
  }

  #readSignals(): Map<string, number> {
    const map = new Map<string, number>();
    for (const r of this.#s.signalAll.all() as Row[]) map.set(String(r.queue), num(r.rev) ?? 0);
    return map;
  }

  #signalsMoved(queues: readonly string[], current: Map<string, number>): boolean {
    for (const q of queues) {
      const cur = current.get(q) ?? 0;
      const seen = this.#seen.get(q);
      if (seen === undefined) this.#seen.set(q, cur);
      else if (cur !== seen) return true;
    }
    return false;
  }

  #wakeAll(): void {
    for (const w of [...this.#waiters]) w.wake();
  }

  readonly #onWork = (queues: string[]): void => {
    if (this.#waiters.size === 0) return;
    for (const w of [...this.#waiters]) if (w.queues.some((q) => queues.includes(q))) w.wake();
  };

  readonly #onRuns = (ids: string[]): void => {
    if (this.#watched.size === 0) return;
    const mine = ids.filter((id) => this.#watched.has(id));
    if (mine.length) this.#checkRevs(mine);
  };

  readonly #onCancelled = (ids: string[]): void => {
    for (const l of [...this.#cancelListeners]) {
      try {
        l(ids);
      } catch (err) {
        this.#logger?.error({ err }, 'SQLite broker: an onCancel listener threw');
      }
    }
  };

  /** Another process (or this one) wrote the file: wake the waiters whose queues moved, tell the watchers whose runs changed. */
  readonly #onChange = (): void => {
    if (this.#closed) return;
    try {
      if (this.#waiters.size) {
        const current = this.#readSignals();
        for (const w of [...this.#waiters]) if (this.#signalsMoved(w.queues, current)) w.wake();
      }
      if (this.#watched.size) this.#checkRevs(null);
    } catch (err) {
      // The file is busy or gone: wake everyone, they will see for themselves.
      this.#logger?.warn({ err }, 'SQLite broker: reading wake-up state failed');
      this.#wakeAll();
    }
  };

  /** Calls the listeners of watched runs (all, or `ids`) whose revision changed since last seen. */
  #checkRevs(ids: string[] | null): void {
    if (this.#closed || this.#watched.size === 0) return;
    const list = ids ?? [...this.#watched.keys()];
    let rows: Row[];
    try {
      rows = this.#s.revs.all(JSON.stringify(list)) as Row[];
    } catch (err) {
      this.#logger?.warn({ err }, 'SQLite broker: reading watched runs failed');
      return;
    }
    const revs = new Map<string, number>();
    for (const r of rows) revs.set(String(r.id), num(r.rev) ?? -1);
    for (const id of list) {
      const w = this.#watched.get(id);
      if (!w) continue;
      const rev = revs.get(id) ?? null;
      if (rev === w.rev) continue;
      w.rev = rev;
      for (const l of [...w.listeners]) {
        try {
          l();
        } catch (err) {
          this.#logger?.error({ err, runId: id }, 'SQLite broker: a watch listener threw');
        }
      }
    }
  }

  // ---------------------------------------------------------------------------------------------

  async ping(): Promise<void> {
    this.#open();
    this.#s.ping.get();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#wakeAll();
    this.#watched.clear();
    if (this.#watchTimer) clearInterval(this.#watchTimer);
    this.#watchTimer = undefined;
    this.#cancelListeners.clear();
    this.#hub.off('work', this.#onWork);
    this.#hub.off('runs', this.#onRuns);
    this.#hub.off('cancel', this.#onCancelled);
    this.#hub.off('change', this.#onChange);
    releaseHub(this.#hub);
    this.#db.close();
  }
}

const LEASE_LOST_ERROR = JSON.stringify({
  name: 'LeaseLostError',
  message: 'The run lost its lease too many times (its worker died or stalled each time); failed instead of requeued',
  reason: 'lease_lost',
});

function corruptError(id: string, problems: string[]): string {
  return JSON.stringify({ name: 'CorruptRunError', message: `Run ${id} is stored corrupt: ${problems.join('; ')}`, reason: 'corrupt' });
}

function byPriorityThenSeq(a: Row, b: Row): number {
  const pa = num(a.priority) ?? Number.POSITIVE_INFINITY;
  const pb = num(b.priority) ?? Number.POSITIVE_INFINITY;
  if (pa !== pb) return pb - pa;
  return (num(a.seq) ?? Number.POSITIVE_INFINITY) - (num(b.seq) ?? Number.POSITIVE_INFINITY) || 0;
}

/** A leased row as a Reservation, or the list of its problems. */
function toReservation(row: Row, now: number): Reservation | string[] {
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
  return r;
}

/** A row as a RunRecord; never throws (a corrupt field reads as absent, or as text the caller will flag). */
function toRecord(row: Row): RunRecord {
  const rec: RunRecord = {
    id: String(row.id),
    task: text(row.task) ?? '',
    queue: String(row.queue),
    state: String(row.state) as RunState,
    priority: num(row.priority) ?? 0,
    input: text(row.input) ?? '',
    attempts: num(row.attempts) ?? 0,
    leaseLosses: num(row.lease_losses) ?? 0,
    enqueuedAt: num(row.enqueued_at) ?? 0,
    history: parseHistory(row.history),
  };
  const result = text(row.result);
  if (result !== undefined) rec.result = result;
  const error = text(row.error);
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
  return rec;
}

function positiveInt(v: number | undefined, fallback: number, name: string): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1)
    throw new ConfigError(`SqliteBroker: ${name} must be a positive integer, got ${String(v)}`);
  return v;
}

function nonNegative(v: number | undefined, fallback: number, name: string): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0)
    throw new ConfigError(`SqliteBroker: ${name} must be a non-negative number of ms, got ${String(v)}`);
  return Math.floor(v);
}
