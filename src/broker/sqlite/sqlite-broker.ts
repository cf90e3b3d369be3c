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
 *   from other processes; a few-second safety timer only guards against lost events. `watch` and
 *   `onCancel` cross processes the same way (run revisions, the cancel log).
 * - Rows are validated as they are read: a run stored corrupt (edited by hand, say) is failed with
 *   reason `corrupt` by reserve, and never makes a whole batch throw.
 *
 * node:sqlite is synchronous: a transaction that waits for another process's write lock blocks this
 * process's event loop for that time (at most `busyTimeoutMs`). Transactions are kept short for that
 * reason (prune, purge and bulk replays work in slices of 1000 runs).
 *
 * Schema and migrations: `schema.ts`. SQL: `statements.ts`.
 */
import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import type { DatabaseSync, SQLOutputValue, StatementSync } from 'node:sqlite';
import type { Logger } from 'pino';
import { BrokerUnavailableError, ConfigError } from '../../core/errors.ts';
import type {
  Broker,
  BrokerInspector,
  BrokerOptions,
  CancelOutcome,
  EnqueueResult,
  Lease,
  MinuteStats,
  NewRun,
  QueueCounts,
  Reservation,
  ReserveRequest,
  ReserveResult,
  RetryOutcome,
  RunFilter,
  RunPage,
  RunRecord,
  RunState,
  Settlement,
  SettleStatus,
  WorkerInfo,
  WorkerStatus,
} from '../types.ts';
import { RUN_STATES } from '../types.ts';
import { ownRetention } from '../shared/options.ts';
import { loadSqlite } from './load-sqlite.ts';
import { retryWhileBusy } from './busy.ts';
import { migrate } from './schema.ts';
import {
  bucketOf,
  byPriorityThenSeq,
  corruptError,
  emptyCounts,
  histogram,
  LEASE_LOST_ERROR,
  num,
  READ_BIGINTS,
  type Row,
  SQL,
  STATES,
  type StatementName,
  toRecord,
  toReservation,
} from './statements.ts';
import { acquireHub, releaseHub, type WakeHub } from './wake-hub.ts';

const sqlite = loadSqlite();

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
/** Rows per transaction for bulk deletes and replays. */
const SLICE = 1000;
/** Per-minute stats are kept this long (the contract asks for at least 24 hours). */
const STATS_RETENTION_MS = 2 * DAY;
/** Cancel log entries are kept this long: listeners more than this far behind rely on renew. */
const CANCEL_LOG_RETENTION_MS = HOUR;
/** Workers silent for longer than this are forgotten. */
const WORKER_MEMORY_MS = HOUR;

export interface SqliteBrokerOptions extends BrokerOptions {
  /** The database file (created if missing; its folder must exist), or `:memory:` (one process, nothing kept). */
  path: string;
  logger?: Logger;
  /** `normal` (default): a commit survives a process crash, the last commits may be lost on power loss. `full`: fsync on every commit. */
  synchronous?: 'normal' | 'full';
  /** How long a transaction waits for another process's write lock before failing, in ms. Default 5000. */
  busyTimeoutMs?: number;
  /** Retention of cancelled runs stored without one of their own (`NewRun.cancelledRetentionMs`), in ms. Default 1 day. */
  cancelledRetentionMs?: number;
  /** Longest sleep without any event, guarding against a lost file event, in ms. Default 2000. */
  safetyWakeMs?: number;
}

interface Waiter {
  queues: readonly string[];
  wake: () => void;
}

interface Watched {
  listeners: Set<() => void>;
  rev: number | null;
}

interface StatDelta {
  queue: string;
  minute: number;
  enqueued: number;
  succeeded: number;
  failed: number;
  retried: number;
  wait: number[] | null;
  run: number[] | null;
}

export class SqliteBroker implements Broker, BrokerInspector {
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
  readonly #busyTimeoutMs: number;
  readonly #hub: WakeHub;
  #closed = false;

  /** Within a transaction: the `seq` counter (undefined until first used) and the stats to add. */
  #seqNext: number | undefined;
  #seqDirty = false;
  readonly #stats = new Map<string, StatDelta>();

  readonly #waiters = new Set<Waiter>();
  /** Queue signal revisions as of this broker's last reserve (see `queue_signals` in schema.ts). */
  readonly #seen = new Map<string, number>();
  readonly #watched = new Map<string, Watched>();
  readonly #cancelListeners = new Set<(ids: string[]) => void>();
  /** Last cancel_log entry given to the onCancel listeners. */
  #cancelCursor = 0;
  /** Re-checks watched runs and the cancel log every `safetyWakeMs` while anyone listens. */
  #safetyTimer: NodeJS.Timeout | undefined;

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
    this.#busyTimeoutMs = busyTimeoutMs;
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
      // Processes opening a new file together: the switch to WAL can answer SQLITE_BUSY without
      // waiting on the busy handler (see busy.ts), so it is retried; so is the migration, to be safe.
      const retry = { path: this.path, budgetMs: busyTimeoutMs };
      db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
      if (!memory) {
        const mode = retryWhileBusy(() => db.prepare('PRAGMA journal_mode = WAL').get(), { ...retry, step: 'switch to WAL mode' }) as
          | { journal_mode?: string }
          | undefined;
        if (mode?.journal_mode !== 'wal') {
          this.#logger?.warn({ path: this.path, mode: mode?.journal_mode }, 'SQLite broker: WAL mode is not available for this file');
        }
      }
      db.exec(`PRAGMA synchronous = ${synchronous.toUpperCase()}`);
      db.exec('PRAGMA temp_store = MEMORY');
      db.exec('PRAGMA cache_size = -16000');
      db.exec('PRAGMA journal_size_limit = 67108864');
      retryWhileBusy(() => migrate(db, this.path), { ...retry, step: 'create or migrate the schema' });
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
  // Transactions, counters, stats

  #open(): void {
    if (this.#closed) throw new BrokerUnavailableError(`The SQLite broker (${this.path}) is closed`);
  }

  /** A storage error as BrokerUnavailableError, saying what happened to which file (other errors as they are). */
  #unavailable(err: unknown): unknown {
    const e = err as { code?: string; errcode?: number; errstr?: string; message?: string } | undefined;
    if (e?.code !== 'ERR_SQLITE_ERROR') return err;
    const primary = (e.errcode ?? 0) & 0xff;
    const what =
      primary === 5 || primary === 6
        ? `stayed locked by another process for over ${this.#busyTimeoutMs} ms`
        : primary === 13
          ? 'cannot grow: the disk is full'
          : primary === 8
            ? 'is read-only'
            : `failed: ${e.errstr ?? e.message}`;
    return new BrokerUnavailableError(`The SQLite file ${this.path} ${what}`, { cause: err });
  }

  /** Reads outside a transaction (WAL: a consistent snapshot, never blocked by writers). */
  #read<T>(fn: () => T): T {
    this.#open();
    try {
      return fn();
    } catch (err) {
      throw this.#unavailable(err);
    }
  }

  /** Runs `fn` in one BEGIN IMMEDIATE transaction (this process holds SQLite's write lock throughout). */
  #tx<T>(fn: () => T): T {
    this.#open();
    try {
      this.#s.begin.run();
    } catch (err) {
      throw this.#unavailable(err);
    }
    try {
      const out = fn();
      if (this.#seqDirty) this.#s.seqSet.run(this.#seqNext ?? 0);
      if (this.#stats.size) this.#flushStats();
      this.#s.commit.run();
      return out;
    } catch (err) {
      if (this.#db.isTransaction) {
        try {
          this.#db.exec('ROLLBACK');
        } catch {
          // the connection rolled back by itself
        }
      }
      throw this.#unavailable(err);
    } finally {
      this.#seqNext = undefined;
      this.#seqDirty = false;
      this.#stats.clear();
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

  /** The stats of `queue` for the minute of `now`, to be added at commit. */
  #stat(queue: string, now: number): StatDelta {
    const minute = Math.floor(now / MINUTE) * MINUTE;
    const key = `${minute}\u0000${queue}`;
    let d = this.#stats.get(key);
    if (!d) {
      d = { queue, minute, enqueued: 0, succeeded: 0, failed: 0, retried: 0, wait: null, run: null };
      this.#stats.set(key, d);
    }
    return d;
  }

  #flushStats(): void {
    for (const d of this.#stats.values()) {
      const row = this.#s.statGet.get(d.queue, d.minute) as Row | undefined;
      const wait = histogram(row?.wait);
      const run = histogram(row?.run);
      if (d.wait) for (let i = 0; i < wait.length; i++) wait[i] = (wait[i] ?? 0) + (d.wait[i] ?? 0);
      if (d.run) for (let i = 0; i < run.length; i++) run[i] = (run[i] ?? 0) + (d.run[i] ?? 0);
      this.#s.statPut.run(
        d.queue,
        d.minute,
        (num(row?.enqueued) ?? 0) + d.enqueued,
        (num(row?.succeeded) ?? 0) + d.succeeded,
        (num(row?.failed) ?? 0) + d.failed,
        (num(row?.retried) ?? 0) + d.retried,
        JSON.stringify(wait),
        JSON.stringify(run),
      );
    }
  }

  #observe(d: StatDelta, which: 'wait' | 'run', ms: number): void {
    const h = (d[which] ??= histogram(undefined));
    const i = bucketOf(Math.max(0, ms));
    h[i] = (h[i] ?? 0) + 1;
  }

  /**
   * Within a transaction: the run `id` (a deleted row with its queue, task and idempotency_key) is
   * gone, so its idempotency key goes too, if it still names that run.
   */
  #releaseKey(id: string, row: Row): void {
    const key = row.idempotency_key;
    if (typeof key !== 'string') return;
    this.#s.idemDel.run(String(row.queue), typeof row.task === 'string' ? row.task : '', key, id);
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
          const hit = this.#s.idemGet.get(run.queue, run.task, key) as Row | undefined;
          if (hit && (num(hit.expires_at) ?? 0) > now) {
            // A key never stands for a run that no longer exists: a key left naming a deleted run
            // (by a version that kept keys past their runs, or by hand) is taken by this new run.
            const id = String(hit.run_id);
            const existing = this.#s.stateOf.get(id) as Row | undefined;
            if (existing) {
              out.push({ id, created: false, state: STATES.has(String(existing.state)) ? (existing.state as RunState) : 'failed' });
              continue;
            }
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
          ownRetention(run.cancelledRetentionMs) ?? null,
        );
        if (inserted.changes === 0) {
          // The same id enqueued again: the first one stands.
          const existing = this.#s.stateOf.get(run.id) as Row | undefined;
          out.push({ id: run.id, created: false, state: (existing?.state as RunState) ?? 'queued' });
          continue;
        }
        if (key !== undefined) this.#s.idemPut.run(run.queue, run.task, key, run.id, now + (run.idempotencyTtl ?? DAY));
        queues.add(run.queue);
        this.#stat(run.queue, now).enqueued++;
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
    const requested = [...new Set(req.queues)];
    let remaining = Math.max(0, Math.floor(req.max));
    const reserved: Reservation[] = [];
    const changed: string[] = [];
    const woken: string[] = [];
    const corrupt: { id: string; problems: string[] }[] = [];
    let nextAt: number | null = null;
    const seen: [string, number][] = [];
    const retried = new Set<string>();
    let settled: SettleStatus[] | undefined;

    this.#tx(() => {
      // Outcomes sent along: recorded first, in the same transaction.
      if (req.settle?.length) settled = this.#settleIn(workerId, req.settle, now, changed, retried);
      const paused = new Set((this.#s.paused.all() as Row[]).map((r) => String(r.queue)));
      for (const queue of requested) {
        if (paused.has(queue)) {
          // Untouched until resumed (resume wakes the waiters); its due times do not count either.
          seen.push([queue, num((this.#s.signalGet.get(queue) as Row | undefined)?.rev) ?? 0]);
          continue;
        }
        // 1. Due scheduled runs become queued, in the order they became due.
        const promoted = Number(this.#s.promote.run({ base: this.#takeSeq(0), queue, now }).changes);
        if (promoted > 0) this.#takeSeq(promoted);
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
        if (lost > 0) this.#stat(queue, now).failed += lost;
        const requeued = Number(this.#s.recoverRequeue.run({ queue, now }).changes);
        // 3. Lease up to `remaining` queued runs. Corrupt rows are failed and take no slot.
        while (remaining > 0) {
          const rows = this.#s.lease.all({ queue, now, worker: workerId, until: now + leaseMs, max: remaining }) as Row[];
          if (rows.length === 0) break;
          rows.sort(byPriorityThenSeq);
          const stat = this.#stat(queue, now);
          let valid = 0;
          for (const row of rows) {
            const r = toReservation(row, now);
            if (Array.isArray(r)) {
              const id = typeof row.id === 'string' ? row.id : `rowid ${String(row.rid)}`;
              const error = corruptError(id, r);
              this.#s.failCorrupt.run({ rid: row.rid ?? null, now, expires: now + this.#failedRetentionMs, error });
              corrupt.push({ id, problems: r });
              stat.failed++;
              if (typeof row.id === 'string') changed.push(row.id);
              continue;
            }
            reserved.push(r);
            changed.push(r.id);
            this.#observe(stat, 'wait', now - Math.max(r.enqueuedAt, num(row.run_at) ?? r.enqueuedAt));
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
        // Runs made queued here may be more than this worker takes: other idle workers should look.
        // (New leases need no signal: an idle worker learns of their expiry at its next reserve, within
        // the safety period, which is far shorter than any lease.)
        if (promoted + requeued > 0) {
          seen.push([queue, this.#bump(queue)]);
          woken.push(queue);
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
    for (const q of retried) if (!woken.includes(q)) woken.push(q);
    if (woken.length) this.#hub.emit('work', woken);
    return settled ? { runs: reserved, nextAt, settled } : { runs: reserved, nextAt };
  }

  // ---------------------------------------------------------------------------------------------
  // Settle, renew, release, progress

  async settle(workerId: string, settlements: readonly Settlement[], now: number): Promise<SettleStatus[]> {
    this.#open();
    if (settlements.length === 0) return [];
    const changed: string[] = [];
    const queues = new Set<string>();
    const statuses = this.#tx(() => this.#settleIn(workerId, settlements, now, changed, queues));
    if (changed.length) this.#hub.emit('runs', changed);
    if (queues.size) this.#hub.emit('work', [...queues]);
    return statuses;
  }

  /** Within a transaction: records outcomes; adds the runs changed to `changed` and the queues given work to `queues`. */
  #settleIn(workerId: string, settlements: readonly Settlement[], now: number, changed: string[], queues: Set<string>): SettleStatus[] {
    const out = settlements.map((s): SettleStatus => {
      let row: Row | undefined;
      if (s.outcome === 'retry') {
        const seq = this.#takeSeq(1) + 1;
        row = this.#s.retryLater.get(s.id, s.attempt, workerId, now, s.runAt, seq, s.error) as Row | undefined;
        if (row) queues.add(String(row.queue));
      } else if (s.retentionMs <= 0) {
        row = this.#s.deleteHeld.get(s.id, s.attempt, workerId) as Row | undefined;
        if (row) this.#releaseKey(s.id, row);
      } else if (s.outcome === 'succeeded') {
        row = this.#s.succeed.get(s.id, s.attempt, workerId, now, now + s.retentionMs, s.result ?? null) as Row | undefined;
      } else {
        row = this.#s.fail.get(s.id, s.attempt, workerId, now, now + s.retentionMs, s.error) as Row | undefined;
      }
      if (!row) return 'lost';
      changed.push(s.id);
      const stat = this.#stat(String(row.queue), now);
      if (s.outcome === 'succeeded') stat.succeeded++;
      else if (s.outcome === 'failed') stat.failed++;
      else stat.retried++;
      const startedAt = num(row.started_at);
      if (startedAt !== undefined) this.#observe(stat, 'run', now - startedAt);
      return 'ok';
    });
    // A retried run is work again, now or at its runAt (which may move the queue's next due time).
    for (const q of queues) this.#bump(q);
    return out;
  }

  async renew(workerId: string, leases: readonly Lease[], leaseMs: number, now: number): Promise<string[]> {
    this.#open();
    if (leases.length === 0) return [];
    return this.#tx(() => {
      const lost: string[] = [];
      for (const l of leases) {
        if (this.#s.renew.run(l.id, l.attempt, workerId, now + leaseMs).changes === 0) lost.push(l.id);
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
        const row = this.#s.release.get(l.id, l.attempt, workerId, now) as Row | undefined;
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
    const ok = this.#tx(() => this.#s.progress.run(lease.id, lease.attempt, workerId, progress).changes > 0);
    if (ok) this.#hub.emit('runs', [lease.id]);
    return ok ? 'ok' : 'lost';
  }

  // ---------------------------------------------------------------------------------------------
  // Reading and managing runs

  async getRun(id: string): Promise<RunRecord | null> {
    this.#open();
    const row = this.#read(() => this.#s.get.get(id) as Row | undefined);
    return row ? toRecord(row) : null;
  }

  async cancel(id: string, now: number): Promise<CancelOutcome> {
    this.#open();
    const out = this.#tx((): CancelOutcome => {
      const row = this.#s.stateOf.get(id) as Row | undefined;
      if (!row) return { outcome: 'not_found' };
      // A state that is none of the six (edited by hand) reads as failed (see toRecord).
      const state = STATES.has(String(row.state)) ? (row.state as RunState) : 'failed';
      if (state !== 'queued' && state !== 'scheduled' && state !== 'active') return { outcome: 'finished', state };
      this.#s.cancel.run({ id, now, retention: this.#cancelledRetentionMs });
      if (state === 'active') this.#s.cancelLog.run(id, now);
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
    const rows = this.#read((): Row[] => {
      if (queues) {
        for (const q of queues) out[q] = emptyCounts();
        return this.#s.countsSome.all(JSON.stringify(queues)) as Row[];
      }
      for (const r of this.#s.queues.all() as Row[]) out[String(r.queue)] = emptyCounts();
      return this.#s.countsAll.all() as Row[];
    });
    for (const r of rows) {
      const state = String(r.state);
      if (!STATES.has(state)) continue;
      const c = (out[String(r.queue)] ??= emptyCounts());
      c[state as RunState] += Number(r.n);
    }
    return out;
  }

  async prune(now: number): Promise<number> {
    this.#open();
    let removed = 0;
    // Small transactions: the write lock is never held for long, whatever the backlog.
    for (;;) {
      const ids = this.#tx(() => {
        const rows = this.#s.pruneRuns.all(now, SLICE) as Row[];
        for (const r of rows) this.#releaseKey(String(r.id), r);
        return rows.map((r) => String(r.id));
      });
      removed += ids.length;
      if (ids.length) this.#hub.emit('runs', ids);
      if (ids.length < SLICE) break;
    }
    for (;;) {
      const n = Number(this.#tx(() => this.#s.pruneKeys.run(now, SLICE).changes));
      if (n < SLICE) break;
    }
    this.#tx(() => {
      this.#s.pruneCancels.run(now - CANCEL_LOG_RETENTION_MS);
      this.#s.pruneStats.run(now - STATS_RETENTION_MS);
      this.#s.pruneWorkers.run(now - WORKER_MEMORY_MS);
    });
    return removed;
  }

  // ---------------------------------------------------------------------------------------------
  // Wake-ups

  waitForWork(queues: readonly string[], until: number | null, signal: AbortSignal): Promise<void> {
    if (this.#closed || signal.aborted) return Promise.resolve();
    const delay = until === null ? this.#safetyWakeMs : Math.min(until - Date.now(), this.#safetyWakeMs);
    if (delay <= 0) return Promise.resolve();
    // Work that appeared since this broker's last reserve: e.g. another process's enqueue between
    // that reserve and this call, whose file event found no waiter.
    try {
      if (this.#signalsMoved(queues, this.#readSignals())) return Promise.resolve();
    } catch {
      return Promise.resolve(); // storage trouble: let the caller's reserve meet it
    }
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
      const rows = this.#read(() => this.#s.revs.all(JSON.stringify([id])) as Row[]);
      w = { listeners: new Set(), rev: rows[0] ? (num(rows[0].rev) ?? -1) : null };
      this.#watched.set(id, w);
    }
    const entry = w;
    entry.listeners.add(listener);
    this.#updateSafetyTimer();
    return () => {
      entry.listeners.delete(listener);
      if (entry.listeners.size === 0 && this.#watched.get(id) === entry) this.#watched.delete(id);
      this.#updateSafetyTimer();
    };
  }

  onCancel(listener: (ids: string[]) => void): () => void {
    if (this.#cancelListeners.size === 0 && !this.#closed) {
      // Report cancellations from now on.
      try {
        this.#cancelCursor = num((this.#s.cancelsLast.get() as Row | undefined)?.seq) ?? 0;
      } catch (err) {
        this.#logger?.warn({ err }, 'SQLite broker: reading the cancel log failed');
      }
    }
    this.#cancelListeners.add(listener);
    this.#updateSafetyTimer();
    return () => {
      this.#cancelListeners.delete(listener);
      this.#updateSafetyTimer();
    };
  }

  /**
   * The safety timer runs while anyone watches a run or listens for cancels. It keeps the process
   * alive only for watchers (someone awaits a result); a worker's onCancel does not need to.
   */
  #updateSafetyTimer(): void {
    const needed = !this.#closed && (this.#watched.size > 0 || this.#cancelListeners.size > 0);
    if (!needed) {
      if (this.#safetyTimer) clearInterval(this.#safetyTimer);
      this.#safetyTimer = undefined;
      return;
    }
    this.#safetyTimer ??= setInterval(() => {
      this.#checkRevs(null);
      this.#checkCancels();
    }, this.#safetyWakeMs);
    if (this.#watched.size > 0) this.#safetyTimer.ref();
    else this.#safetyTimer.unref();
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

  readonly #onCancelled = (): void => {
    this.#checkCancels();
  };

  /** Someone (another process, or this one) wrote the file: wake the waiters whose queues moved, tell watchers and cancel listeners. */
  readonly #onChange = (): void => {
    if (this.#closed) return;
    try {
      if (this.#waiters.size) {
        const current = this.#readSignals();
        for (const w of [...this.#waiters]) if (this.#signalsMoved(w.queues, current)) w.wake();
      }
    } catch (err) {
      // The file is busy or gone: wake everyone, they will see for themselves.
      this.#logger?.warn({ err }, 'SQLite broker: reading queue signals failed');
      this.#wakeAll();
    }
    this.#checkRevs(null);
    this.#checkCancels();
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

  /** Gives the onCancel listeners the active runs cancelled (anywhere) since last time. */
  #checkCancels(): void {
    if (this.#closed || this.#cancelListeners.size === 0) return;
    let rows: Row[];
    try {
      rows = this.#s.cancelsSince.all(this.#cancelCursor) as Row[];
    } catch (err) {
      this.#logger?.warn({ err }, 'SQLite broker: reading the cancel log failed');
      return;
    }
    if (rows.length === 0) return;
    this.#cancelCursor = num(rows[rows.length - 1]?.seq) ?? this.#cancelCursor;
    const ids = rows.map((r) => String(r.run_id));
    for (const l of [...this.#cancelListeners]) {
      try {
        l(ids);
      } catch (err) {
        this.#logger?.error({ err }, 'SQLite broker: an onCancel listener threw');
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Inspection and administration (BrokerInspector)

  /**
   * Newest first (rid DESC), keyset-paginated on rid: each page reads at most `limit + 1` entries
   * from each index range it needs, whatever the number of runs. One range when the filter names a
   * state and a queue or task ((queue, state) or (task, state)); otherwise the ranges of every state
   * of the queue or task, or of every queue for a state alone, merged here. No filter: the table
   * itself, backwards.
   */
  async listRuns(filter: RunFilter): Promise<RunPage> {
    this.#open();
    const limit = Math.min(500, Math.max(1, Math.floor(Number(filter.limit)) || 1));
    const { queue, task, state } = filter;
    if (state !== undefined && !STATES.has(state)) return { runs: [], next: null };
    let before = Number.MAX_SAFE_INTEGER;
    if (filter.cursor !== undefined && filter.cursor !== null) {
      const c = decodeCursor(filter.cursor);
      if (c === undefined) throw new ConfigError(`Invalid cursor ${JSON.stringify(filter.cursor)}: pass the "next" of a previous page`);
      before = c;
    }
    const n = limit + 1;
    const ranges: (() => Row[])[] = [];
    const states = state !== undefined ? [state] : RUN_STATES;
    if (task !== undefined) {
      for (const st of states) {
        ranges.push(
          () =>
            (queue !== undefined
              ? this.#s.ridsTaskStateQueue.all(task, st, queue, before, n)
              : this.#s.ridsTaskState.all(task, st, before, n)) as Row[],
        );
      }
    } else if (queue !== undefined) {
      for (const st of states) ranges.push(() => this.#s.ridsQueueState.all(queue, st, before, n) as Row[]);
    } else if (state !== undefined) {
      for (const q of await this.listQueues()) ranges.push(() => this.#s.ridsQueueState.all(q, state, before, n) as Row[]);
    } else {
      ranges.push(() => this.#s.ridsAll.all(before, n) as Row[]);
    }
    const rids: number[] = [];
    const rows = this.#read(() => {
      for (const range of ranges) for (const r of range()) rids.push(num(r.rid) ?? 0);
      rids.sort((a, b) => b - a);
      const page = rids.slice(0, limit);
      return page.length ? (this.#s.rowsByRid.all(JSON.stringify(page)) as Row[]) : [];
    });
    const page = rids.slice(0, limit);
    const last = page[page.length - 1];
    return { runs: rows.map(toRecord), next: rids.length > limit && last !== undefined ? encodeCursor(last) : null };
  }

  async listQueues(): Promise<string[]> {
    this.#open();
    return this.#read(() => this.#s.queues.all() as Row[]).map((r) => String(r.queue));
  }

  async heartbeat(worker: WorkerInfo, ttlMs: number, now: number): Promise<void> {
    this.#open();
    const info: WorkerInfo = {
      id: worker.id,
      host: worker.host,
      pid: worker.pid,
      queues: [...worker.queues],
      concurrency: worker.concurrency,
      active: worker.active,
      startedAt: worker.startedAt,
    };
    this.#tx(() => {
      this.#s.heartbeat.run(worker.id, JSON.stringify(info), now, ttlMs);
    });
  }

  async removeWorker(id: string): Promise<void> {
    this.#open();
    this.#tx(() => {
      this.#s.removeWorker.run(id);
    });
  }

  async listWorkers(now: number): Promise<WorkerStatus[]> {
    this.#open();
    const out: WorkerStatus[] = [];
    for (const r of this.#read(() => this.#s.workers.all(now - WORKER_MEMORY_MS) as Row[])) {
      try {
        const info = JSON.parse(String(r.info)) as WorkerInfo;
        out.push({ ...info, lastSeen: num(r.last_seen) ?? 0, ttlMs: num(r.ttl_ms) ?? 0 });
      } catch {
        // a corrupt registry entry is skipped; the worker rewrites it on its next heartbeat
      }
    }
    return out;
  }

  async pause(queue: string): Promise<void> {
    this.#open();
    this.#tx(() => {
      this.#s.pause.run(queue, Date.now());
    });
  }

  async resume(queue: string): Promise<void> {
    this.#open();
    const resumed = this.#tx(() => {
      const n = this.#s.resume.run(queue).changes;
      if (n) this.#bump(queue);
      return n > 0;
    });
    if (resumed) this.#hub.emit('work', [queue]);
  }

  async pausedQueues(): Promise<string[]> {
    this.#open();
    return this.#read(() => this.#s.paused.all() as Row[])
      .map((r) => String(r.queue))
      .sort();
  }

  async purge(queue: string, _now: number): Promise<number> {
    this.#open();
    let removed = 0;
    for (;;) {
      const ids = this.#tx(() => {
        const rows = this.#s.purge.all(queue, SLICE) as Row[];
        for (const r of rows) this.#releaseKey(String(r.id), r);
        return rows.map((r) => String(r.id));
      });
      removed += ids.length;
      if (ids.length) this.#hub.emit('runs', ids);
      if (ids.length < SLICE) break;
    }
    return removed;
  }

  async retryFailed(queue: string, task: string | undefined, now: number): Promise<number> {
    this.#open();
    let replayed = 0;
    for (;;) {
      const ids = this.#tx(() => {
        const base = this.#takeSeq(0);
        const rows = (
          task === undefined
            ? this.#s.retryFailedAll.all({ queue, now, base, limit: SLICE })
            : this.#s.retryFailedTask.all({ queue, task, now, base, limit: SLICE })
        ) as Row[];
        if (rows.length) {
          this.#takeSeq(rows.length);
          this.#bump(queue);
        }
        return rows.map((r) => String(r.id));
      });
      replayed += ids.length;
      if (ids.length) {
        this.#hub.emit('runs', ids);
        this.#hub.emit('work', [queue]);
      }
      if (ids.length < SLICE) break;
    }
    return replayed;
  }

  async stats(queues: readonly string[], since: number): Promise<Record<string, MinuteStats[]>> {
    this.#open();
    const from = Math.floor(since / MINUTE) * MINUTE;
    const out: Record<string, MinuteStats[]> = {};
    for (const q of queues) {
      out[q] = this.#read(() => this.#s.stats.all(q, from) as Row[]).map((r) => ({
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

  // ---------------------------------------------------------------------------------------------

  /** How the file is set up on this connection (for `errand inspect`, diagnostics and tests). */
  storageInfo(): { path: string; journalMode: string; synchronous: string; busyTimeoutMs: number; schemaVersion: number } {
    this.#open();
    const get = (sql: string): SQLOutputValue | undefined => {
      const row = this.#db.prepare(sql).get() as Row | undefined;
      return row ? Object.values(row)[0] : undefined;
    };
    const sync = ['off', 'normal', 'full', 'extra'][num(get('PRAGMA synchronous')) ?? -1] ?? 'unknown';
    return {
      path: this.path,
      journalMode: String(get('PRAGMA journal_mode')),
      synchronous: sync,
      busyTimeoutMs: num(get('PRAGMA busy_timeout')) ?? 0,
      schemaVersion: num(get('SELECT max(version) FROM errand_schema')) ?? 0,
    };
  }

  async ping(): Promise<void> {
    this.#read(() => this.#s.ping.get());
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#wakeAll();
    this.#watched.clear();
    this.#cancelListeners.clear();
    this.#updateSafetyTimer();
    this.#hub.off('work', this.#onWork);
    this.#hub.off('runs', this.#onRuns);
    this.#hub.off('cancel', this.#onCancelled);
    this.#hub.off('change', this.#onChange);
    releaseHub(this.#hub);
    this.#db.close();
  }
}

function encodeCursor(rid: number): string {
  return Buffer.from(`r${rid}`).toString('base64url');
}

function decodeCursor(cursor: string): number | undefined {
  if (typeof cursor !== 'string') return undefined;
  const m = /^r(\d{1,16})$/.exec(Buffer.from(cursor, 'base64url').toString());
  return m ? Number(m[1]) : undefined;
}

function positiveInt(v: number | undefined, fallback: number, name: string): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1)
    throw new ConfigError(`SqliteBroker: ${name} must be a positive integer, got ${String(v)}`);
  return v;
}

function nonNegative(v: number | undefined, fallback: number, name: string): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
    throw new ConfigError(`SqliteBroker: ${name} must be a non-negative number of ms, got ${String(v)}`);
  }
  return Math.floor(v);
}
