/**
 * The writing side of `SqliteUserStore`, in a worker thread of its own: node:sqlite is synchronous,
 * so the statements, the commits (and their fsyncs at checkpoints) and the waits for another
 * process's lock (`busy_timeout`) happen here, off the event loop that answers requests.
 *
 * It takes batches, `{ n, ops }`, one at a time in the order they were sent, and commits each in one
 * transaction (a lone write in its own, implicit one). It answers `{ n, results }`, one result per op
 * (null when it was stored), or `{ n, error }` when the batch as a whole failed and stored nothing.
 *
 * A statement refused by a constraint (a taken email) is undone alone by SQLite and the transaction
 * goes on, so that write alone fails; an error that ends the transaction (disk full, I/O) fails the
 * batch.
 */
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { parentPort, workerData } from 'node:worker_threads';

/** A write, as sent by the store: plain data. */
export type WriteOp =
  | readonly ['create', id: string, username: string, email: string, emailKey: string, createdAt: number]
  | readonly ['scheduled', id: string, runId: string]
  | readonly ['sent', id: string, messageId: string, sentAt: number, runId: string | null]
  | readonly ['failed', id: string, error: string];

/** Why one write failed. */
export type WriteFailure =
  | { kind: 'taken' }
  | { kind: 'collision'; message: string }
  | { kind: 'error'; message: string; errcode?: number; code?: string };

export type WriterRequest = { n: number; ops: WriteOp[] } | { close: true };
export type WriterReply =
  | { n: number; results: (WriteFailure | null)[] }
  | { n: number; error: { message: string; errcode?: number; code?: string } }
  | { ready: true }
  | { ready: false; error: { message: string; errcode?: number; code?: string } };

export interface WriterData {
  path: string;
  busyTimeoutMs: number;
}

const SQLITE_CONSTRAINT_UNIQUE = 2067;
const SQLITE_CONSTRAINT_PRIMARYKEY = 1555;

const SQL = {
  create: 'INSERT INTO users (id, username, email, email_key, created_at) VALUES (?, ?, ?, ?, ?)',
  scheduled: "UPDATE users SET welcome_status = 'scheduled', welcome_run_id = ? WHERE id = ? AND welcome_status = 'pending'",
  sent: "UPDATE users SET welcome_status = 'sent', welcome_message_id = ?, welcome_sent_at = ?, welcome_error = NULL, welcome_run_id = COALESCE(?, welcome_run_id) WHERE id = ?",
  failed: "UPDATE users SET welcome_status = 'failed', welcome_error = ? WHERE id = ? AND welcome_status <> 'sent'",
} as const;

function describe(err: unknown): { message: string; errcode?: number; code?: string } {
  const e = err as { message?: unknown; errcode?: unknown; code?: unknown };
  const out: { message: string; errcode?: number; code?: string } = { message: typeof e?.message === 'string' ? e.message : String(err) };
  if (typeof e?.errcode === 'number') out.errcode = e.errcode;
  if (typeof e?.code === 'string') out.code = e.code;
  return out;
}

class Writer {
  readonly #db: DatabaseSync;
  readonly #stmts = new Map<string, StatementSync>();

  constructor(data: WriterData) {
    const db = new DatabaseSync(data.path);
    try {
      db.exec(`PRAGMA busy_timeout = ${Math.floor(data.busyTimeoutMs)}`);
      // As the embedded broker: a commit survives a crash of the process; power loss may take the last moments.
      db.exec('PRAGMA synchronous = NORMAL');
    } catch (err) {
      db.close();
      throw err;
    }
    this.#db = db;
  }

  #stmt(sql: string): StatementSync {
    let s = this.#stmts.get(sql);
    if (!s) {
      s = this.#db.prepare(sql);
      this.#stmts.set(sql, s);
    }
    return s;
  }

  /** Runs one write; throws what SQLite throws. */
  #run(op: WriteOp): void {
    switch (op[0]) {
      case 'create':
        this.#stmt(SQL.create).run(op[1], op[2], op[3], op[4], op[5]);
        return;
      case 'scheduled':
        this.#stmt(SQL.scheduled).run(op[2], op[1]);
        return;
      case 'sent':
        this.#stmt(SQL.sent).run(op[2], op[3], op[4], op[1]);
        return;
      case 'failed':
        this.#stmt(SQL.failed).run(op[2], op[1]);
        return;
    }
  }

  /** The failure of one write, as the store reports it. */
  #failure(op: WriteOp, err: unknown): WriteFailure {
    if (op[0] === 'create') {
      const code = (err as { errcode?: number }).errcode;
      if (code === SQLITE_CONSTRAINT_UNIQUE && /email_key/.test((err as Error).message)) return { kind: 'taken' };
      if (code === SQLITE_CONSTRAINT_PRIMARYKEY) return { kind: 'collision', message: `User id collision on ${op[1]}; try again` };
    }
    return { kind: 'error', ...describe(err) };
  }

  batch(n: number, ops: WriteOp[]): WriterReply {
    const db = this.#db;
    const results: (WriteFailure | null)[] = new Array(ops.length).fill(null);
    if (ops.length === 1) {
      try {
        this.#run(ops[0]!);
      } catch (err) {
        results[0] = this.#failure(ops[0]!, err);
      }
      return { n, results };
    }
    try {
      db.exec('BEGIN IMMEDIATE');
      for (let i = 0; i < ops.length; i++) {
        try {
          this.#run(ops[i]!);
        } catch (err) {
          // SQLite undid this statement alone and the transaction goes on: the error is this write's.
          // A transaction that ended with it (I/O error, disk full) took the earlier writes along.
          if (!db.isTransaction) throw err;
          results[i] = this.#failure(ops[i]!, err);
        }
      }
      db.exec('COMMIT');
    } catch (err) {
      if (db.isTransaction) {
        try {
          db.exec('ROLLBACK');
        } catch {
          // The connection is unusable; the batch fails below either way.
        }
      }
      return { n, error: describe(err) };
    }
    return { n, results };
  }

  close(): void {
    this.#db.close();
  }
}

const port = parentPort;
if (port) {
  let writer: Writer | undefined;
  try {
    writer = new Writer(workerData as WriterData);
    port.postMessage({ ready: true } satisfies WriterReply);
  } catch (err) {
    port.postMessage({ ready: false, error: describe(err) } satisfies WriterReply);
  }
  port.on('message', (req: WriterRequest) => {
    if ('close' in req) {
      writer?.close();
      writer = undefined;
      port.close();
      return;
    }
    port.postMessage(
      writer ? writer.batch(req.n, req.ops) : ({ n: req.n, error: { message: 'the users database is not open' } } satisfies WriterReply),
    );
  });
}
