/**
 * Users in the embedded SQLite file: the same file as the embedded broker (`DATA_DIR/errand.db`),
 * in a table of its own, through a connection of its own. WAL lets the API and worker processes
 * read while one writes; `busy_timeout` makes a writer wait for the other's lock instead of failing.
 *
 * Group commit: the writes asked for in one turn of the event loop (an API under load: the inserts
 * of every request read in that turn, the welcome marks of every enqueue answered in it) go into one
 * transaction, committed once; each promise settles after that commit, with its own result or error.
 * A statement refused by a constraint (a taken email) is undone alone by SQLite, the transaction
 * going on, so one bad row fails only its own caller; an error that ends the transaction (disk full,
 * I/O) fails every write of the batch, none of which was stored.
 */
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { retryWhileBusy } from '../../src/broker/sqlite/busy.ts';
import { ulid } from '../../src/core/ids.ts';
import {
  decodeCursor,
  EmailTakenError,
  emailKey,
  encodeCursor,
  type ListQuery,
  newUserId,
  type ScheduledWelcome,
  type User,
  type UserPage,
  type UserStore,
  type WelcomeState,
  type WelcomeStatus,
  TurnBatch,
} from './store.ts';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS users (
  id TEXT PRIMARY KEY,
  username TEXT NOT NULL,
  email TEXT NOT NULL,
  email_key TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,
  welcome_status TEXT NOT NULL DEFAULT 'pending' CHECK (welcome_status IN ('pending', 'scheduled', 'sent', 'failed')),
  welcome_run_id TEXT,
  welcome_message_id TEXT,
  welcome_sent_at INTEGER,
  welcome_error TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS users_welcome_pending ON users (created_at) WHERE welcome_status = 'pending';
CREATE INDEX IF NOT EXISTS users_welcome_scheduled ON users (created_at) WHERE welcome_status = 'scheduled';
-- The store's identity (see UserStore.identity): written once, by whoever creates the table first.
CREATE TABLE IF NOT EXISTS users_store (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
`;

interface Row {
  id: string;
  username: string;
  email: string;
  created_at: number;
}

interface WelcomeRow {
  welcome_status: WelcomeState;
  welcome_run_id: string | null;
  welcome_message_id: string | null;
  welcome_sent_at: number | null;
  welcome_error: string | null;
}

const SQLITE_CONSTRAINT_UNIQUE = 2067;
const SQLITE_CONSTRAINT_PRIMARYKEY = 1555;

export interface SqliteUserStoreOptions {
  /** Path of the SQLite file (created if missing; its folder must exist). */
  path: string;
  /** How long a write waits for another connection's lock, in ms. Default 5000. */
  busyTimeoutMs?: number;
}

export class SqliteUserStore implements UserStore {
  readonly kind = 'sqlite' as const;
  readonly path: string;
  #identity: string | undefined;
  readonly #busyTimeoutMs: number;
  #db: DatabaseSync | undefined;
  #stmts: Record<string, StatementSync> = {};
  /** Writes waiting for the next group commit (see `#write`). */
  readonly #writes = new TurnBatch<() => unknown, unknown>((ops) => Promise.resolve(this.#commit(ops)));

  constructor(options: SqliteUserStoreOptions) {
    this.path = options.path;
    this.#busyTimeoutMs = options.busyTimeoutMs ?? 5000;
  }

  async init(): Promise<void> {
    if (this.#db) return;
    const db = new DatabaseSync(this.path);
    try {
      db.exec(`PRAGMA busy_timeout = ${Math.floor(this.#busyTimeoutMs)}`);
      // Processes opening a new file together (the API and its workers): the switch to WAL can answer
      // SQLITE_BUSY without waiting on the busy handler, so these steps are retried (see busy.ts).
      const retry = { path: this.path, budgetMs: this.#busyTimeoutMs };
      retryWhileBusy(() => db.exec('PRAGMA journal_mode = WAL'), { ...retry, step: 'switch to WAL mode' });
      // As the embedded broker: a commit survives a crash of the process; power loss may take the last moments.
      db.exec('PRAGMA synchronous = NORMAL');
      retryWhileBusy(
        () => {
          db.exec(SCHEMA);
          db.prepare("INSERT INTO users_store (key, value) VALUES ('id', ?) ON CONFLICT (key) DO NOTHING").run(ulid());
        },
        { ...retry, step: 'create the users table' },
      );
      const row = db.prepare("SELECT value FROM users_store WHERE key = 'id'").get() as { value: string } | undefined;
      this.#identity = `sqlite:${row?.value ?? ''}`;
    } catch (err) {
      db.close();
      throw err;
    }
    this.#db = db;
  }

  get identity(): string {
    if (!this.#identity) throw new Error('SqliteUserStore is not open: call init() first');
    return this.#identity;
  }

  get location(): string {
    return this.path;
  }

  #stmt(sql: string): StatementSync {
    const db = this.#db;
    if (!db) throw new Error('SqliteUserStore is not open: call init() first');
    let s = this.#stmts[sql];
    if (!s) s = this.#stmts[sql] = db.prepare(sql);
    return s;
  }

  /**
   * Runs `op` (synchronous statements) in the next group commit, at the end of this turn of the
   * event loop; settles once the transaction is committed (or has failed).
   */
  #write<T>(op: () => T): Promise<T> {
    if (!this.#db) return Promise.reject(new Error('SqliteUserStore is not open: call init() first'));
    return this.#writes.add(op) as Promise<T>;
  }

  /**
   * Commits waiting writes in one transaction (a lone write in its own, implicit one): the value
   * or error of each, or a throw when the transaction failed as a whole (none of them is stored).
   */
  #commit(ops: (() => unknown)[]): unknown[] {
    const db = this.#db;
    if (!db) throw new Error('SqliteUserStore was closed before this write');
    if (ops.length === 1) {
      try {
        return [ops[0]!()];
      } catch (err) {
        return [asError(err)];
      }
    }
    const out: unknown[] = new Array(ops.length);
    try {
      db.exec('BEGIN IMMEDIATE');
      for (let i = 0; i < ops.length; i++) {
        try {
          out[i] = ops[i]!();
        } catch (err) {
          // SQLite undid this statement alone and the transaction goes on: the error is this write's.
          // A transaction that ended with it (I/O error, disk full) took the earlier writes along.
          if (!db.isTransaction) throw err;
          out[i] = asError(err);
        }
      }
      db.exec('COMMIT');
    } catch (err) {
      if (db.isTransaction) {
        try {
          db.exec('ROLLBACK');
        } catch {
          // The connection is unusable; every caller gets the error.
        }
      }
      throw err;
    }
    return out;
  }

  create(input: { username: string; email: string }): Promise<User> {
    const now = Date.now();
    const user: User = { id: newUserId(now), username: input.username, email: input.email, createdAt: new Date(now) };
    const key = emailKey(user.email);
    return this.#write(() => {
      try {
        this.#stmt('INSERT INTO users (id, username, email, email_key, created_at) VALUES (?, ?, ?, ?, ?)').run(
          user.id,
          user.username,
          user.email,
          key,
          now,
        );
      } catch (err) {
        const code = (err as { errcode?: number }).errcode;
        if (code === SQLITE_CONSTRAINT_UNIQUE && /email_key/.test((err as Error).message)) throw new EmailTakenError();
        if (code === SQLITE_CONSTRAINT_PRIMARYKEY) throw new Error(`User id collision on ${user.id}; try again`, { cause: err });
        throw err;
      }
      return user;
    });
  }

  async get(id: string): Promise<User | null> {
    const row = this.#stmt('SELECT id, username, email, created_at FROM users WHERE id = ?').get(id) as Row | undefined;
    return row ? toUser(row) : null;
  }

  async list(query: ListQuery): Promise<UserPage> {
    const fetch = query.limit + 1;
    let rows: Row[];
    if (query.cursor !== undefined) {
      const after = decodeCursor(query.cursor);
      rows = this.#stmt('SELECT id, username, email, created_at FROM users WHERE id > ? ORDER BY id LIMIT ?').all(
        after,
        fetch,
      ) as unknown as Row[];
    } else {
      rows = this.#stmt('SELECT id, username, email, created_at FROM users ORDER BY id LIMIT ? OFFSET ?').all(
        fetch,
        query.offset ?? 0,
      ) as unknown as Row[];
    }
    const items = rows.slice(0, query.limit).map(toUser);
    const last = items.at(-1);
    return { items, next: rows.length > query.limit && last ? encodeCursor(last.id) : null };
  }

  async welcomeStatus(id: string): Promise<WelcomeStatus | null> {
    const row = this.#stmt(
      'SELECT welcome_status, welcome_run_id, welcome_message_id, welcome_sent_at, welcome_error FROM users WHERE id = ?',
    ).get(id) as WelcomeRow | undefined;
    if (!row) return null;
    const status: WelcomeStatus = { state: row.welcome_status };
    if (row.welcome_run_id !== null) status.runId = row.welcome_run_id;
    if (row.welcome_message_id !== null) status.messageId = row.welcome_message_id;
    if (row.welcome_sent_at !== null) status.sentAt = new Date(row.welcome_sent_at);
    if (row.welcome_error !== null) status.error = row.welcome_error;
    return status;
  }

  markWelcomeScheduled(id: string, runId: string): Promise<void> {
    return this.#write(() => {
      this.#stmt("UPDATE users SET welcome_status = 'scheduled', welcome_run_id = ? WHERE id = ? AND welcome_status = 'pending'").run(
        runId,
        id,
      );
    });
  }

  markWelcomeSent(id: string, messageId: string, runId?: string): Promise<void> {
    const now = Date.now();
    return this.#write(() => {
      this.#stmt(
        "UPDATE users SET welcome_status = 'sent', welcome_message_id = ?, welcome_sent_at = ?, welcome_error = NULL, welcome_run_id = COALESCE(?, welcome_run_id) WHERE id = ?",
      ).run(messageId, now, runId ?? null, id);
    });
  }

  markWelcomeFailed(id: string, error: string): Promise<void> {
    return this.#write(() => {
      this.#stmt("UPDATE users SET welcome_status = 'failed', welcome_error = ? WHERE id = ? AND welcome_status <> 'sent'").run(
        error.slice(0, 2000),
        id,
      );
    });
  }

  async pendingWelcomes(createdBefore: Date, limit: number): Promise<User[]> {
    const rows = this.#stmt(
      "SELECT id, username, email, created_at FROM users WHERE welcome_status = 'pending' AND created_at < ? ORDER BY created_at LIMIT ?",
    ).all(createdBefore.getTime(), limit) as unknown as Row[];
    return rows.map(toUser);
  }

  async scheduledWelcomes(createdBefore: Date, limit: number): Promise<ScheduledWelcome[]> {
    const rows = this.#stmt(
      "SELECT id, welcome_run_id FROM users WHERE welcome_status = 'scheduled' AND welcome_run_id IS NOT NULL AND created_at < ? ORDER BY created_at LIMIT ?",
    ).all(createdBefore.getTime(), limit) as unknown as { id: string; welcome_run_id: string }[];
    return rows.map((r) => ({ id: r.id, runId: r.welcome_run_id }));
  }

  markWelcomeLost(id: string, runId: string): Promise<void> {
    return this.#write(() => {
      this.#stmt(
        "UPDATE users SET welcome_status = 'pending', welcome_run_id = NULL WHERE id = ? AND welcome_status = 'scheduled' AND welcome_run_id = ?",
      ).run(id, runId);
    });
  }

  async ping(): Promise<void> {
    this.#stmt('SELECT 1').get();
  }

  async close(): Promise<void> {
    void this.#writes.flush(); // writes already asked for are committed (at once: SQLite is synchronous), not dropped
    const db = this.#db;
    this.#db = undefined;
    this.#stmts = {};
    db?.close();
  }
}

function toUser(row: Row): User {
  return { id: row.id, username: row.username, email: row.email, createdAt: new Date(row.created_at) };
}

/** A thrown value as an Error (a write's outcome that is an Error rejects that write alone). */
function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
