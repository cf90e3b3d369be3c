/**
 * Users in the embedded SQLite file: the same file as the embedded broker (`DATA_DIR/errand.db`),
 * in a table of its own, through connections of its own. WAL lets the API and worker processes
 * read while one writes; `busy_timeout` makes a writer wait for the other's lock instead of failing.
 *
 * Reads run on the calling thread. Writes run in a worker thread (`sqlite-writer.ts`), so that the
 * statements, commits and lock waits of node:sqlite (synchronous) do not hold up the event loop.
 *
 * Group commit: the writes asked for in one turn of the event loop (an API under load: the inserts
 * of every request read in that turn, the welcome marks of every enqueue answered in it) go to the
 * writer as one batch and into one transaction, committed once; each promise settles after that
 * commit, with its own result or error. A statement refused by a constraint (a taken email) fails
 * its own write only; an error that ends the transaction (disk full, I/O) fails every write of the
 * batch, none of which was stored.
 */
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { Worker } from 'node:worker_threads';
import type { WriteFailure, WriteOp, WriterData, WriterReply, WriterRequest } from './sqlite-writer.ts';
import {
  decodeCursor,
  EmailTakenError,
  emailKey,
  encodeCursor,
  type ListQuery,
  newUserId,
  type User,
  type UserPage,
  type UserStore,
  type WelcomeState,
  type WelcomeStatus,
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

interface PendingWrite {
  op: WriteOp;
  /** What the promise resolves to once the write is committed. */
  value: unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

export interface SqliteUserStoreOptions {
  /** Path of the SQLite file (created if missing; its folder must exist). */
  path: string;
  /** How long a write waits for another connection's lock, in ms. Default 5000. */
  busyTimeoutMs?: number;
}

export class SqliteUserStore implements UserStore {
  readonly kind = 'sqlite' as const;
  readonly path: string;
  readonly #busyTimeoutMs: number;
  #db: DatabaseSync | undefined;
  #stmts: Record<string, StatementSync> = {};
  /** Writes waiting for the next group commit (see `#write`). */
  #writes: PendingWrite[] = [];
  /** The writer thread, started by `init()`: while starting, and once ready. */
  #writer: Promise<Worker> | undefined;
  #worker: Worker | undefined;
  /** Batches sent to the writer, by number, until it answers. */
  readonly #inFlight = new Map<number, PendingWrite[]>();
  #seq = 0;
  #closing = false;

  constructor(options: SqliteUserStoreOptions) {
    this.path = options.path;
    this.#busyTimeoutMs = options.busyTimeoutMs ?? 5000;
  }

  async init(): Promise<void> {
    if (this.#db) return;
    const db = new DatabaseSync(this.path);
    try {
      db.exec(`PRAGMA busy_timeout = ${Math.floor(this.#busyTimeoutMs)}`);
      db.exec('PRAGMA journal_mode = WAL');
      // As the embedded broker: a commit survives a crash of the process; power loss may take the last moments.
      db.exec('PRAGMA synchronous = NORMAL');
      db.exec(SCHEMA);
    } catch (err) {
      db.close();
      throw err;
    }
    const writer = this.#startWriter();
    try {
      await writer;
    } catch (err) {
      db.close();
      throw err;
    }
    this.#writer = writer;
    this.#db = db;
  }

  #stmt(sql: string): StatementSync {
    const db = this.#db;
    if (!db) throw new Error('SqliteUserStore is not open: call init() first');
    let s = this.#stmts[sql];
    if (!s) s = this.#stmts[sql] = db.prepare(sql);
    return s;
  }

  /** Starts the writer thread; resolves once it has opened the file. */
  #startWriter(): Promise<Worker> {
    const data: WriterData = { path: this.path, busyTimeoutMs: this.#busyTimeoutMs };
    const writer = new Worker(new URL('./sqlite-writer.ts', import.meta.url), { workerData: data });
    writer.unref(); // referenced only while writes are on their way (#send)
    return new Promise<Worker>((resolve, reject) => {
      const onExit = (code: number) => reject(new Error(`The users database writer stopped at start (exit code ${code})`));
      writer.once('error', reject);
      writer.once('exit', onExit);
      writer.once('message', (reply: WriterReply) => {
        writer.off('error', reject);
        writer.off('exit', onExit);
        if ('ready' in reply && reply.ready) {
          writer.on('message', (r: WriterReply) => this.#settle(r));
          writer.on('error', (err) => this.#lost(writer, err));
          writer.on('exit', (code) => this.#lost(writer, new Error(`The users database writer stopped (exit code ${code})`)));
          this.#worker = writer;
          resolve(writer);
        } else {
          void writer.terminate();
          reject(toError('error' in reply ? reply.error : { message: 'the users database writer did not start' }));
        }
      });
    });
  }

  /**
   * Queues a write for the next group commit, sent to the writer at the end of this turn of the
   * event loop; settles with `value` once it is committed, or with its error.
   */
  #write<T>(op: WriteOp, value: T): Promise<T> {
    if (!this.#db || this.#closing) return Promise.reject(new Error('SqliteUserStore is not open: call init() first'));
    return new Promise<T>((resolve, reject) => {
      if (this.#writes.push({ op, value, resolve: resolve as (value: unknown) => void, reject }) === 1) setImmediate(this.#flush);
    });
  }

  /**
   * Sends the waiting writes to the writer as one batch, unless a batch is still on its way: then
   * they wait for its answer and go together (the busier the store, the larger the batches).
   */
  readonly #flush = (): void => {
    if (this.#inFlight.size > 0 && !this.#closing) return;
    const batch = this.#writes;
    if (batch.length === 0) return;
    this.#writes = [];
    this.#send(batch);
  };

  #send(batch: PendingWrite[]): void {
    const writer = this.#worker;
    if (!writer) {
      // The writer died (see #lost): start another one, then send.
      this.#writer ??= this.#startWriter();
      this.#writer.then(
        () => this.#send(batch),
        (err) => {
          this.#writer = undefined; // the next batch tries again
          for (const w of batch) w.reject(err);
        },
      );
      return;
    }
    const n = ++this.#seq;
    if (this.#inFlight.size === 0) writer.ref();
    this.#inFlight.set(n, batch);
    writer.postMessage({ n, ops: batch.map((w) => w.op) } satisfies WriterRequest);
  }

  #settle(reply: WriterReply): void {
    if (!('n' in reply)) return;
    const batch = this.#inFlight.get(reply.n);
    if (!batch) return;
    this.#inFlight.delete(reply.n);
    if (this.#writes.length > 0) this.#flush();
    else if (this.#inFlight.size === 0) this.#worker?.unref();
    if ('error' in reply) {
      const err = toError(reply.error);
      for (const w of batch) w.reject(err);
      return;
    }
    for (let i = 0; i < batch.length; i++) {
      const w = batch[i]!;
      const failure = reply.results[i];
      if (failure) w.reject(failureError(failure));
      else w.resolve(w.value);
    }
  }

  /** The writer died (it should not): its batches fail, and the next write starts a new one. */
  #lost(writer: Worker, err: unknown): void {
    if (this.#closing || this.#worker !== writer) return;
    this.#worker = undefined;
    this.#writer = undefined;
    const lost = [...this.#inFlight.values()];
    this.#inFlight.clear();
    for (const batch of lost) for (const w of batch) w.reject(err);
    if (this.#writes.length > 0) this.#flush(); // the writes that waited for those batches: to a new writer
  }

  create(input: { username: string; email: string }): Promise<User> {
    const now = Date.now();
    const user: User = { id: newUserId(now), username: input.username, email: input.email, createdAt: new Date(now) };
    return this.#write(['create', user.id, user.username, user.email, emailKey(user.email), now], user);
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
    return this.#write(['scheduled', id, runId], undefined);
  }

  markWelcomeSent(id: string, messageId: string, runId?: string): Promise<void> {
    return this.#write(['sent', id, messageId, Date.now(), runId ?? null], undefined);
  }

  markWelcomeFailed(id: string, error: string): Promise<void> {
    return this.#write(['failed', id, error.slice(0, 2000)], undefined);
  }

  async pendingWelcomes(createdBefore: Date, limit: number): Promise<User[]> {
    const rows = this.#stmt(
      "SELECT id, username, email, created_at FROM users WHERE welcome_status = 'pending' AND created_at < ? ORDER BY created_at LIMIT ?",
    ).all(createdBefore.getTime(), limit) as unknown as Row[];
    return rows.map(toUser);
  }

  async ping(): Promise<void> {
    this.#stmt('SELECT 1').get();
  }

  /** Commits the writes already asked for, then stops the writer and closes the file. */
  async close(): Promise<void> {
    if (!this.#db) return;
    this.#closing = true;
    this.#flush();
    // A writer still starting (after one died) is waited for, with the batches it will send.
    const w = this.#worker ?? (await this.#writer?.catch(() => undefined));
    if (w) {
      // After the batches sent before it: the writer takes its messages in order.
      const exited = new Promise<void>((resolve) => w.once('exit', () => resolve()));
      w.ref();
      w.postMessage({ close: true } satisfies WriterRequest);
      await exited;
    }
    this.#writer = undefined;
    this.#worker = undefined;
    this.#closing = false;
    const db = this.#db;
    this.#db = undefined;
    this.#stmts = {};
    db?.close();
  }
}

function toError(e: { message: string; errcode?: number; code?: string }): Error {
  const err = new Error(e.message) as Error & { errcode?: number; code?: string };
  if (e.errcode !== undefined) err.errcode = e.errcode;
  if (e.code !== undefined) err.code = e.code;
  return err;
}

function failureError(f: WriteFailure): Error {
  if (f.kind === 'taken') return new EmailTakenError();
  if (f.kind === 'collision') return new Error(f.message);
  return toError(f);
}

function toUser(row: Row): User {
  return { id: row.id, username: row.username, email: row.email, createdAt: new Date(row.created_at) };
}
