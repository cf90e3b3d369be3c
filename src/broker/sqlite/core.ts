/**
 * The SQLite broker's connection and what every part of it shares (`sqlite-broker.ts` assembles
 * the parts): the file, opened and migrated; the prepared statements; transactions (one
 * `BEGIN IMMEDIATE` each) with the FIFO counter and the per-minute stats they add at commit; the
 * mapping of storage errors to `BrokerUnavailableError`; the in-process wake hub.
 */
import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import type { DatabaseSync, SQLInputValue, StatementSync } from 'node:sqlite';
import type { Logger } from 'pino';
import { BrokerFullError, BrokerUnavailableError, ConfigError } from '../../core/errors.ts';
import { show } from '../../core/show.ts';
import { DEFAULTS, MINUTE, nonNegativeMs, positiveInt } from '../shared/options.ts';
import type { BrokerOptions, RunState } from '../types.ts';
import { retryWhileBusy, waitWhileSharedCacheLocked } from './busy.ts';
import { loadSqlite, requireNumberedParameters } from './load-sqlite.ts';
import { isMemoryUri } from './memory-uri.ts';
import { migrate } from './schema.ts';
import { bucketOf, histogram, num, READ_BIGINTS, type Row, SQL, STATES, type StatementName } from './statements.ts';
import { acquireHub, type WakeHub } from './wake-hub.ts';

const sqlite = loadSqlite();

export interface SqliteBrokerOptions extends BrokerOptions {
  /**
   * The database file (created if missing; its folder must exist); or `:memory:` (this broker only,
   * nothing kept); or a SQLite memory URI, `file:<name>?mode=memory&cache=shared`, whose storage every
   * broker of this process that opens the same URI shares until the last one closes (nothing kept).
   */
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

export interface StatDelta {
  queue: string;
  minute: number;
  enqueued: number;
  succeeded: number;
  failed: number;
  retried: number;
  wait: number[] | null;
  run: number[] | null;
}

/** Parameters of a statement: positional values, or one object of named ones. */
type Params = SQLInputValue[] | [Record<string, SQLInputValue>];

const NAME = 'SqliteBroker';

export class SqliteCore {
  /** The file (absolute), `:memory:` or a memory URI (see SqliteBrokerOptions.path). */
  readonly path: string;
  readonly db: DatabaseSync;
  readonly s: Record<StatementName, StatementSync>;
  readonly logger: Logger | undefined;
  readonly maxLeaseLosses: number;
  readonly failedRetentionMs: number;
  readonly cancelledRetentionMs: number;
  readonly safetyWakeMs: number;
  readonly busyTimeoutMs: number;
  readonly hub: WakeHub;
  closed = false;

  /** Within a transaction: the `seq` counter (undefined until first used) and the stats to add. */
  #seqNext: number | undefined;
  #seqDirty = false;
  readonly #stats = new Map<string, StatDelta>();

  constructor(options: SqliteBrokerOptions) {
    if (!options || typeof options.path !== 'string' || options.path === '') {
      throw new ConfigError('SqliteBroker needs a path: a database file, or ":memory:"');
    }
    const sharedMemory = isMemoryUri(options.path);
    const memory = options.path === ':memory:' || sharedMemory;
    this.path = memory ? options.path : resolve(options.path);
    this.logger = options.logger;
    this.maxLeaseLosses = positiveInt(NAME, 'maxLeaseLosses', options.maxLeaseLosses, DEFAULTS.maxLeaseLosses);
    this.failedRetentionMs = nonNegativeMs(NAME, 'failedRetentionMs', options.failedRetentionMs, DEFAULTS.failedRetentionMs);
    this.cancelledRetentionMs = nonNegativeMs(NAME, 'cancelledRetentionMs', options.cancelledRetentionMs, DEFAULTS.cancelledRetentionMs);
    this.safetyWakeMs = positiveInt(NAME, 'safetyWakeMs', options.safetyWakeMs, 2000);
    const busyTimeoutMs = nonNegativeMs(NAME, 'busyTimeoutMs', options.busyTimeoutMs, 5000);
    this.busyTimeoutMs = busyTimeoutMs;
    const synchronous = typeof options.synchronous === 'string' ? options.synchronous.toLowerCase() : (options.synchronous ?? 'normal');
    if (synchronous !== 'normal' && synchronous !== 'full') {
      throw new ConfigError(`SqliteBroker: synchronous must be "normal" or "full", got ${show(options.synchronous)}`);
    }

    requireNumberedParameters(sqlite);
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
        const mode = retryWhileBusy(() => db.prepare('PRAGMA journal_mode = WAL').get(), { ...retry, step: 'switch to WAL mode' });
        if (mode?.journal_mode !== 'wal') {
          this.logger?.warn({ path: this.path, mode: mode?.journal_mode }, 'SQLite broker: WAL mode is not available for this file');
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
        if (sharedMemory) waitOnTableLocks(st, busyTimeoutMs);
        statements[name] = st;
      }
      this.s = statements;
    } catch (err) {
      db.close();
      throw err;
    }
    this.db = db;
    let file: string | null = null;
    if (!memory) {
      try {
        file = realpathSync(this.path);
      } catch {
        file = this.path;
      }
    }
    // A private memory database has a hub of its own; a shared one, the hub of its URI.
    this.hub = memory ? acquireHub(null, this.logger, this.path === ':memory:' ? undefined : this.path) : acquireHub(file, this.logger);
  }

  // ---------------------------------------------------------------------------------------------
  // Typed statement helpers

  /** The first row of a statement, or undefined. */
  row(name: StatementName, ...params: Params): Row | undefined {
    return (this.s[name].get as (...p: Params) => Row | undefined)(...params);
  }

  /** Every row of a statement. */
  rows(name: StatementName, ...params: Params): Row[] {
    return (this.s[name].all as (...p: Params) => Row[])(...params);
  }

  /** Runs a statement; returns the number of rows it changed. */
  change(name: StatementName, ...params: Params): number {
    return Number((this.s[name].run as (...p: Params) => { changes: number | bigint })(...params).changes);
  }

  // ---------------------------------------------------------------------------------------------
  // Transactions, counters, stats

  open(): void {
    if (this.closed) throw new BrokerUnavailableError(`The SQLite broker (${this.path}) is closed`);
  }

  /** A storage error as BrokerUnavailableError, saying what happened to which file (other errors as they are). */
  unavailable(err: unknown): unknown {
    const e = err as { code?: string; errcode?: number; errstr?: string; message?: string } | undefined;
    if (e?.code !== 'ERR_SQLITE_ERROR') return err;
    const primary = (e.errcode ?? 0) & 0xff;
    if (primary === 13) {
      return new BrokerFullError(
        'disk',
        `The SQLite file ${this.path} cannot grow: the disk that holds it is full (SQLITE_FULL): nothing was done. Free space on that disk`,
        { cause: err },
      );
    }
    const what =
      e.errcode === 262
        ? `stayed locked by another connection of this process (another thread) for over ${this.busyTimeoutMs} ms`
        : primary === 5 || primary === 6
          ? `stayed locked by another process for over ${this.busyTimeoutMs} ms`
          : primary === 8
            ? 'is read-only'
            : `failed: ${e.errstr ?? e.message}`;
    return new BrokerUnavailableError(`The SQLite file ${this.path} ${what}`, { cause: err });
  }

  /**
   * Reads outside a transaction (WAL: a consistent snapshot, never blocked by writers; a shared memory
   * database: each read waits for the table locks of other threads, and is repeated whole if one stops it).
   */
  read<T>(fn: () => T): T {
    this.open();
    try {
      return waitWhileSharedCacheLocked(fn, this.busyTimeoutMs);
    } catch (err) {
      throw this.unavailable(err);
    }
  }

  /** Runs `fn` in one BEGIN IMMEDIATE transaction (this process holds SQLite's write lock throughout). */
  tx<T>(fn: () => T): T {
    this.open();
    try {
      this.s.begin.run();
    } catch (err) {
      throw this.unavailable(err);
    }
    try {
      const out = fn();
      if (this.#seqDirty) this.s.seqSet.run(this.#seqNext ?? 0);
      if (this.#stats.size) this.#flushStats();
      this.s.commit.run();
      return out;
    } catch (err) {
      if (this.db.isTransaction) {
        try {
          this.db.exec('ROLLBACK');
        } catch {
          // the connection rolled back by itself
        }
      }
      throw this.unavailable(err);
    } finally {
      this.#seqNext = undefined;
      this.#seqDirty = false;
      this.#stats.clear();
    }
  }

  /** Takes `n` FIFO positions; returns the one before the first (positions are base+1 .. base+n). */
  takeSeq(n: number): number {
    if (this.#seqNext === undefined) this.#seqNext = num(this.row('seqGet')?.value) ?? 0;
    const base = this.#seqNext;
    this.#seqNext = base + n;
    if (n > 0) this.#seqDirty = true;
    return base;
  }

  /** Moves the queue's signal revision (see `queue_signals` in schema.ts); returns the new one. */
  bump(queue: string): number {
    return num(this.row('signalBump', queue)?.rev) ?? 0;
  }

  /** The queue's signal revision. */
  signal(queue: string): number {
    return num(this.row('signalGet', queue)?.rev) ?? 0;
  }

  /** The stats of `queue` for the minute of `now`, to be added at commit. */
  stat(queue: string, now: number): StatDelta {
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
      const row = this.row('statGet', d.queue, d.minute);
      const wait = histogram(row?.wait);
      const run = histogram(row?.run);
      if (d.wait) for (let i = 0; i < wait.length; i++) wait[i] = (wait[i] ?? 0) + (d.wait[i] ?? 0);
      if (d.run) for (let i = 0; i < run.length; i++) run[i] = (run[i] ?? 0) + (d.run[i] ?? 0);
      this.s.statPut.run(
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

  observe(d: StatDelta, which: 'wait' | 'run', ms: number): void {
    const h = (d[which] ??= histogram(undefined));
    const i = bucketOf(Math.max(0, ms));
    h[i] = (h[i] ?? 0) + 1;
  }

  /**
   * Within a transaction: the run `id` (a deleted row with its queue, task and idempotency_key) is
   * gone, so its idempotency key goes too, if it still names that run.
   */
  releaseKey(id: string, row: Row): void {
    const key = row.idempotency_key;
    if (typeof key !== 'string') return;
    this.s.idemDel.run(String(row.queue), typeof row.task === 'string' ? row.task : '', key, id);
  }
}

/**
 * A statement of a shared-cache memory database waits for the table locks of other threads'
 * connections (see `waitWhileSharedCacheLocked`), as statements of a file wait through `busy_timeout`.
 */
function waitOnTableLocks(st: StatementSync, budgetMs: number): void {
  const methods = st as unknown as Record<'run' | 'get' | 'all', (...args: unknown[]) => unknown>;
  for (const method of ['run', 'get', 'all'] as const) {
    const call = methods[method].bind(st);
    methods[method] = (...args: unknown[]) => waitWhileSharedCacheLocked(() => call(...args), budgetMs);
  }
}

/** The state in a row, a state that is none of the six (edited by hand) reading as failed (see toRecord). */
export function stateOf(row: Row | undefined, fallback: RunState = 'failed'): RunState {
  const s = row?.state;
  return typeof s === 'string' && STATES.has(s) ? (s as RunState) : fallback;
}
