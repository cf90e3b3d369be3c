/**
 * Users in PostgreSQL (`DATABASE_URL`), through a `pg` pool. `init()` creates the table if it is
 * missing, under an advisory lock so that API and worker processes starting together do not race.
 *
 * Group commit: the creates asked for in one turn of the event loop go to the server as one
 * statement (one round trip, one commit), and so do the `scheduled` marks. A taken email fails its
 * own create only: `ON CONFLICT (email_key) DO NOTHING` leaves that row out and the others in (the
 * first of two creates with one email in a batch wins); an error of the statement fails the batch.
 */
import pg from 'pg';
import { ulid } from '../../src/core/ids.ts';
import type { Logger } from 'pino';
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

// `COLLATE "C"` on ids: byte order, which is creation order for ULIDs whatever the database's locale.
const SCHEMA = `
CREATE TABLE IF NOT EXISTS users (
  id TEXT COLLATE "C" PRIMARY KEY,
  username TEXT NOT NULL,
  email TEXT NOT NULL,
  email_key TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL,
  welcome_status TEXT NOT NULL DEFAULT 'pending' CHECK (welcome_status IN ('pending', 'scheduled', 'sent', 'failed')),
  welcome_run_id TEXT,
  welcome_message_id TEXT,
  welcome_sent_at TIMESTAMPTZ,
  welcome_error TEXT,
  CONSTRAINT users_email_key_unique UNIQUE (email_key)
)`;
const INDEX = `CREATE INDEX IF NOT EXISTS users_welcome_pending ON users (created_at) WHERE welcome_status = 'pending'`;
const INDEX_SCHEDULED = `CREATE INDEX IF NOT EXISTS users_welcome_scheduled ON users (created_at) WHERE welcome_status = 'scheduled'`;
/** The store's identity (see UserStore.identity): written once, by whoever creates the table first. */
const IDENTITY = 'CREATE TABLE IF NOT EXISTS users_store (key TEXT PRIMARY KEY, value TEXT NOT NULL)';
const COLUMNS = ['id', 'username', 'email', 'email_key', 'created_at', 'welcome_status', 'welcome_run_id', 'welcome_message_id'];
// Any constant: serialises schema creation among processes sharing the database.
const SCHEMA_LOCK = 0x6572726e; // "errn"

interface Row {
  id: string;
  username: string;
  email: string;
  created_at: Date;
}

export interface PgUserStoreOptions {
  /** `postgres://user:password@host:5432/database`. */
  url: string;
  /** Connections in the pool. Default 10. */
  max?: number;
  logger?: Logger;
}

export class PgUserStore implements UserStore {
  readonly kind = 'postgres' as const;
  readonly location: string;
  readonly #pool: pg.Pool;
  #identity: string | undefined;
  readonly #creates = new TurnBatch<{ user: User; key: string }, User>((batch) => this.#insert(batch));
  readonly #schedules = new TurnBatch<{ id: string; runId: string }, void>((batch) => this.#schedule(batch));

  constructor(options: PgUserStoreOptions) {
    this.location = describePg(options.url);
    this.#pool = new pg.Pool({ connectionString: options.url, max: options.max ?? 10, connectionTimeoutMillis: 10_000 });
    // An idle connection dropped by the server must not crash the process; the pool replaces it.
    this.#pool.on('error', (err) => options.logger?.warn({ err }, 'PostgreSQL connection lost; the pool will reconnect'));
  }

  async init(): Promise<void> {
    const client = await this.#pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock($1)', [SCHEMA_LOCK]);
      await client.query(SCHEMA);
      const { rows } = await client.query<{ column_name: string }>(
        'SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1',
        ['users'],
      );
      const have = new Set(rows.map((r) => r.column_name));
      const missing = COLUMNS.filter((c) => !have.has(c));
      if (missing.length) {
        throw new Error(
          `The database already has a "users" table without the columns ${missing.join(', ')}: it belongs to another application; point DATABASE_URL at another database or schema`,
        );
      }
      await client.query(INDEX);
      await client.query(INDEX_SCHEDULED);
      await client.query(IDENTITY);
      await client.query("INSERT INTO users_store (key, value) VALUES ('id', $1) ON CONFLICT (key) DO NOTHING", [ulid()]);
      const id = await client.query<{ value: string }>("SELECT value FROM users_store WHERE key = 'id'");
      await client.query('COMMIT');
      this.#identity = `postgres:${id.rows[0]?.value ?? ''}`;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }

  get identity(): string {
    if (!this.#identity) throw new Error('PgUserStore is not open: call init() first');
    return this.#identity;
  }

  create(input: { username: string; email: string }): Promise<User> {
    const now = new Date();
    const user: User = { id: newUserId(now.getTime()), username: input.username, email: input.email, createdAt: now };
    return this.#creates.add({ user, key: emailKey(user.email) });
  }

  /** One INSERT for the batch; a row left out by the email's uniqueness is that create's `EmailTakenError`. */
  async #insert(batch: { user: User; key: string }[]): Promise<(User | Error)[]> {
    const { rows } = await this.#pool.query<{ id: string }>(
      `INSERT INTO users (id, username, email, email_key, created_at)
       SELECT id, username, email, email_key, created_at
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) WITH ORDINALITY
         AS v(id, username, email, email_key, created_at, n)
       ORDER BY n
       ON CONFLICT (email_key) DO NOTHING
       RETURNING id`,
      [
        batch.map((b) => b.user.id),
        batch.map((b) => b.user.username),
        batch.map((b) => b.user.email),
        batch.map((b) => b.key),
        batch.map((b) => b.user.createdAt),
      ],
    );
    const stored = new Set(rows.map((r) => r.id));
    return batch.map((b) => (stored.has(b.user.id) ? b.user : new EmailTakenError()));
  }

  async get(id: string): Promise<User | null> {
    const { rows } = await this.#pool.query<Row>('SELECT id, username, email, created_at FROM users WHERE id = $1', [id]);
    return rows[0] ? toUser(rows[0]) : null;
  }

  async list(query: ListQuery): Promise<UserPage> {
    const fetch = query.limit + 1;
    const { rows } =
      query.cursor !== undefined
        ? await this.#pool.query<Row>('SELECT id, username, email, created_at FROM users WHERE id > $1 ORDER BY id LIMIT $2', [
            decodeCursor(query.cursor),
            fetch,
          ])
        : await this.#pool.query<Row>('SELECT id, username, email, created_at FROM users ORDER BY id LIMIT $1 OFFSET $2', [
            fetch,
            query.offset ?? 0,
          ]);
    const items = rows.slice(0, query.limit).map(toUser);
    const last = items.at(-1);
    return { items, next: rows.length > query.limit && last ? encodeCursor(last.id) : null };
  }

  async welcomeStatus(id: string): Promise<WelcomeStatus | null> {
    const { rows } = await this.#pool.query<{
      welcome_status: WelcomeState;
      welcome_run_id: string | null;
      welcome_message_id: string | null;
      welcome_sent_at: Date | null;
      welcome_error: string | null;
    }>('SELECT welcome_status, welcome_run_id, welcome_message_id, welcome_sent_at, welcome_error FROM users WHERE id = $1', [id]);
    const row = rows[0];
    if (!row) return null;
    const status: WelcomeStatus = { state: row.welcome_status };
    if (row.welcome_run_id !== null) status.runId = row.welcome_run_id;
    if (row.welcome_message_id !== null) status.messageId = row.welcome_message_id;
    if (row.welcome_sent_at !== null) status.sentAt = row.welcome_sent_at;
    if (row.welcome_error !== null) status.error = row.welcome_error;
    return status;
  }

  markWelcomeScheduled(id: string, runId: string): Promise<void> {
    return this.#schedules.add({ id, runId });
  }

  async #schedule(batch: { id: string; runId: string }[]): Promise<undefined[]> {
    await this.#pool.query(
      `UPDATE users u SET welcome_status = 'scheduled', welcome_run_id = v.run_id
       FROM unnest($1::text[], $2::text[]) AS v(id, run_id)
       WHERE u.id = v.id AND u.welcome_status = 'pending'`,
      [batch.map((b) => b.id), batch.map((b) => b.runId)],
    );
    return batch.map(() => undefined);
  }

  async markWelcomeSent(id: string, messageId: string, runId?: string): Promise<void> {
    await this.#pool.query(
      "UPDATE users SET welcome_status = 'sent', welcome_message_id = $1, welcome_sent_at = now(), welcome_error = NULL, welcome_run_id = COALESCE($3, welcome_run_id) WHERE id = $2",
      [messageId, id, runId ?? null],
    );
  }

  async markWelcomeFailed(id: string, error: string): Promise<void> {
    await this.#pool.query("UPDATE users SET welcome_status = 'failed', welcome_error = $1 WHERE id = $2 AND welcome_status <> 'sent'", [
      error.slice(0, 2000),
      id,
    ]);
  }

  async pendingWelcomes(createdBefore: Date, limit: number): Promise<User[]> {
    const { rows } = await this.#pool.query<Row>(
      "SELECT id, username, email, created_at FROM users WHERE welcome_status = 'pending' AND created_at < $1 ORDER BY created_at LIMIT $2",
      [createdBefore, limit],
    );
    return rows.map(toUser);
  }

  async scheduledWelcomes(createdBefore: Date, limit: number): Promise<ScheduledWelcome[]> {
    const { rows } = await this.#pool.query<{ id: string; welcome_run_id: string }>(
      "SELECT id, welcome_run_id FROM users WHERE welcome_status = 'scheduled' AND welcome_run_id IS NOT NULL AND created_at < $1 ORDER BY created_at LIMIT $2",
      [createdBefore, limit],
    );
    return rows.map((r) => ({ id: r.id, runId: r.welcome_run_id }));
  }

  async markWelcomeLost(id: string, runId: string): Promise<void> {
    await this.#pool.query(
      "UPDATE users SET welcome_status = 'pending', welcome_run_id = NULL WHERE id = $1 AND welcome_status = 'scheduled' AND welcome_run_id = $2",
      [id, runId],
    );
  }

  async ping(): Promise<void> {
    await this.#pool.query('SELECT 1');
  }

  async close(): Promise<void> {
    // Creates and marks already asked for are written, not failed by a pool that has ended.
    await Promise.all([this.#creates.flush(), this.#schedules.flush()]);
    await this.#pool.end();
  }
}

/** `postgres://host:port/database`, without user or password. */
function describePg(url: string): string {
  try {
    const u = new URL(url);
    return `postgres://${u.host}${u.pathname}`;
  } catch {
    return 'postgres (unparsable DATABASE_URL)';
  }
}

function toUser(row: Row): User {
  return { id: row.id, username: row.username, email: row.email, createdAt: new Date(row.created_at) };
}
