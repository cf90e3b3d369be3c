/**
 * Set-up steps on a SQLite file that several processes may open at the same moment.
 *
 * SQLite makes most statements wait for another connection's lock through the busy handler
 * (`busy_timeout`), but not every one: switching a new file to WAL (`PRAGMA journal_mode = WAL`)
 * starts a read and then upgrades it to an exclusive lock, and an upgrade that would deadlock answers
 * SQLITE_BUSY at once, without waiting. An API and its workers started together on a fresh
 * `DATA_DIR` (`docker compose up`, a deploy) hit exactly that. `retryWhileBusy` repeats such a step,
 * with a short growing pause, until it goes through or the file's lock budget (`busy_timeout`) is
 * spent; then it throws a `SqliteBusyError` that names the file and the step.
 *
 * The pause blocks the thread, as SQLite's own busy handler does: these steps run while a process
 * opens its file, before it serves anything.
 */

/** SQLite's primary result codes for "another connection holds the lock". */
const SQLITE_BUSY = 5;
const SQLITE_LOCKED = 6;

/** True for a node:sqlite error that means another connection held a lock (SQLITE_BUSY or SQLITE_LOCKED, any extended code). */
export function isBusyError(err: unknown): boolean {
  const e = err as { code?: string; errcode?: number } | undefined;
  if (e?.code !== 'ERR_SQLITE_ERROR' || typeof e.errcode !== 'number') return false;
  const primary = e.errcode & 0xff;
  return primary === SQLITE_BUSY || primary === SQLITE_LOCKED;
}

/** A set-up step found the file locked by other processes for longer than its budget. */
export class SqliteBusyError extends Error {
  override readonly name = 'SqliteBusyError';
}

const pause = new Int32Array(new SharedArrayBuffer(4));

function sleepSync(ms: number): void {
  Atomics.wait(pause, 0, 0, ms);
}

export interface RetryWhileBusyOptions {
  /** The file, for the error message. */
  path: string;
  /** What the step does, for the error message (e.g. "switch to WAL mode"). */
  step: string;
  /** Give up after this many ms of SQLITE_BUSY answers (the file's `busy_timeout`). */
  budgetMs: number;
}

/**
 * Runs `fn`, again after a pause of 1 ms growing to 50 ms (with jitter, so that processes started
 * together spread out) each time it throws SQLITE_BUSY or SQLITE_LOCKED, until it succeeds or
 * `budgetMs` has passed. Any other error is thrown at once. `fn` must be safe to repeat: a statement
 * that failed with SQLITE_BUSY changed nothing.
 */
export function retryWhileBusy<T>(fn: () => T, { path, step, budgetMs }: RetryWhileBusyOptions): T {
  const deadline = Date.now() + budgetMs;
  let delay = 1;
  let tries = 0;
  for (;;) {
    tries++;
    try {
      return fn();
    } catch (err) {
      if (!isBusyError(err)) throw err;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new SqliteBusyError(
          `Cannot ${step} in the SQLite file ${path}: other processes kept it locked for over ${budgetMs} ms (${tries} tries; raise busyTimeoutMs if they are expected to hold it that long)`,
          { cause: err },
        );
      }
      sleepSync(Math.min(left, delay * (0.5 + Math.random())));
      delay = Math.min(delay * 2, 50);
    }
  }
}

/** SQLITE_LOCKED_SHAREDCACHE: another connection to the same shared-cache database holds a table lock. */
const SQLITE_LOCKED_SHAREDCACHE = 262;

/** True for a node:sqlite error that means another connection to the same shared cache held a table lock. */
export function isSharedCacheLock(err: unknown): boolean {
  const e = err as { code?: string; errcode?: number } | undefined;
  return e?.code === 'ERR_SQLITE_ERROR' && e.errcode === SQLITE_LOCKED_SHAREDCACHE;
}

/**
 * Runs one statement `fn` of a connection to a shared-cache memory database, again after a short
 * pause each time it answers SQLITE_LOCKED_SHAREDCACHE, until `budgetMs` has passed (then that
 * error is thrown, for `SqliteCore.unavailable` to name). Connections of other threads of this
 * process share that cache, and SQLite makes them wait on each other's table locks by answering
 * SQLITE_LOCKED at once, never through the busy handler: this is the wait `busy_timeout` gives a file.
 *
 * Safe to repeat: a statement stopped by a table lock did nothing (the locks are taken before it
 * reads or writes a row), and the transaction it is part of stays open. It cannot deadlock: only one
 * connection at a time holds a write transaction on the cache (a second BEGIN IMMEDIATE is itself
 * answered SQLITE_LOCKED, and repeated), and a reader outside a transaction holds its read locks only
 * while its statement runs, never while it waits here.
 */
export function waitWhileSharedCacheLocked<T>(fn: () => T, budgetMs: number): T {
  let deadline: number | undefined;
  let delay = 0.05;
  for (;;) {
    try {
      return fn();
    } catch (err) {
      if (!isSharedCacheLock(err)) throw err;
      deadline ??= Date.now() + budgetMs;
      const left = deadline - Date.now();
      if (left <= 0) throw err;
      sleepSync(Math.min(left, delay));
      delay = Math.min(delay * 2, 2);
    }
  }
}
