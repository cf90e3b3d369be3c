/**
 * Users: the service's own data, kept apart from the broker's.
 *
 * One interface, two stores: `SqliteUserStore` (the default: a table in the same SQLite file as the
 * embedded broker) and `PgUserStore` (`DATABASE_URL`). The routes and the welcome-email task only
 * see `UserStore`, so the same service code runs on both.
 *
 * Each user carries the state of its welcome email, which is what makes "one user, one email" hold
 * across retries, redeliveries and a broker that was down when the user was created:
 *
 *   pending    the user row is written; no run is known to be enqueued yet (the sweep enqueues it)
 *   scheduled  a `send_welcome_email` run was enqueued (its id is kept)
 *   sent       the SMTP server accepted the message (its Message-ID is kept); never sent again
 *   failed     the run failed for good (a 5xx, or retries exhausted), or was cancelled, as the
 *              handler or the sweep found; a replay (`POST /runs/{id}/retry`) may still send it
 *
 * The run is the truth while it exists: `GET /users/{id}` shows its state (`cancelled` included) for
 * an email not yet sent, and the sweep records on the user what a run that ended unseen did
 * (`reconcileScheduledWelcomes` in `../tasks.ts`).
 */
import { ulid } from '../../src/core/ids.ts';
import { ErrandError } from '../../src/index.ts';

export interface User {
  /** A ULID: 26 characters, sortable by creation time, never reused (also not after a database reset). */
  id: string;
  /** Exactly as given at creation. */
  username: string;
  /** As given at creation; unique without regard to case. */
  email: string;
  createdAt: Date;
}

export type WelcomeState = 'pending' | 'scheduled' | 'sent' | 'failed';

export interface WelcomeStatus {
  state: WelcomeState;
  /** The `send_welcome_email` run, once enqueued. */
  runId?: string;
  /** Message-ID of the accepted message, when `sent`. */
  messageId?: string;
  sentAt?: Date;
  /** Why the email could not be sent, when `failed`. */
  error?: string;
}

export interface ListQuery {
  /** 1 to 100. */
  limit: number;
  /** Skip this many users (in creation order). Not together with `cursor`. */
  offset?: number;
  /** The `next` value of a previous page. Not together with `offset`. */
  cursor?: string;
}

export interface UserPage {
  items: User[];
  /** Cursor of the following page, or null on the last page. */
  next: string | null;
}

/** A user left `scheduled`, with the run that was recorded for it. */
export interface ScheduledWelcome {
  id: string;
  runId: string;
}

export interface UserStore {
  readonly kind: 'sqlite' | 'postgres';
  /**
   * Who this store is, the same for every process that opens the same database whatever URL or path
   * it used: `<kind>:<ulid>`, the random id written once into the database's `users_store` table
   * when the users table is created there. Valid after `init()`. The API puts it in every welcome
   * run it enqueues; a worker whose own store has another identity is not looking at the API's users.
   */
  readonly identity: string;
  /** Where the store is, for messages: the SQLite file, or PostgreSQL's host and database (no password). */
  readonly location: string;
  /** Creates the table and indexes if missing. Idempotent; safe with several processes starting at once. */
  init(): Promise<void>;
  /** Stores a new user (welcome state `pending`). Throws `EmailTakenError` when the email exists in any case. */
  create(input: { username: string; email: string }): Promise<User>;
  get(id: string): Promise<User | null>;
  /** Users in creation order. Throws `InvalidCursorError` for a cursor this API did not make. */
  list(query: ListQuery): Promise<UserPage>;
  /** The welcome email's state, or null when the user does not exist. */
  welcomeStatus(id: string): Promise<WelcomeStatus | null>;
  /** Records the enqueued run: `pending` becomes `scheduled` (a later state is left alone). */
  markWelcomeScheduled(id: string, runId: string): Promise<void>;
  /** Records the accepted message (and the run that sent it): the state becomes `sent`, whatever it was. */
  markWelcomeSent(id: string, messageId: string, runId?: string): Promise<void>;
  /** Records a final failure, unless the email was sent meanwhile. */
  markWelcomeFailed(id: string, error: string): Promise<void>;
  /** Users still `pending` (no run known) created before `createdBefore`, oldest first: what the sweep enqueues. */
  pendingWelcomes(createdBefore: Date, limit: number): Promise<User[]>;
  /** Users `scheduled` with a run id, created before `createdBefore`, oldest first: what the sweep checks against the broker. */
  scheduledWelcomes(createdBefore: Date, limit: number): Promise<ScheduledWelcome[]>;
  /** `scheduled` with this run back to `pending` (the run no longer exists): the sweep then enqueues a new one. */
  markWelcomeLost(id: string, runId: string): Promise<void>;
  /** Throws when the database cannot be reached. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** A user with this email (compared without regard to case) exists. */
export class EmailTakenError extends ErrandError {
  override name = 'EmailTakenError';
  constructor() {
    super('A user with this email already exists');
  }
}

export class InvalidCursorError extends ErrandError {
  override name = 'InvalidCursorError';
  constructor() {
    super('is not a cursor returned by this API');
  }
}

/** The key under which emails are unique: the address without regard to case. */
export function emailKey(email: string): string {
  return email.normalize('NFC').toLowerCase();
}

/** Cursors are opaque to clients: the id of the last user of a page, base64url-encoded with a version tag. */
export function encodeCursor(lastId: string): string {
  return Buffer.from(`u1:${lastId}`).toString('base64url');
}

export function decodeCursor(cursor: string): string {
  if (!/^[A-Za-z0-9_-]{1,128}$/.test(cursor)) throw new InvalidCursorError();
  const text = Buffer.from(cursor, 'base64url').toString('utf8');
  const m = /^u1:([0-9A-HJKMNP-TV-Z]{26})$/.exec(text);
  if (!m) throw new InvalidCursorError();
  return m[1]!;
}

export function isCursor(cursor: string): boolean {
  try {
    decodeCursor(cursor);
    return true;
  } catch {
    return false;
  }
}

/**
 * A new user id: a ULID (48 bits of milliseconds, 80 random bits), as run ids use. Ids sort by
 * creation time. Random ids, unlike a database sequence, are never reused after the users table is
 * reset, so the welcome email's idempotency key (`welcome:<id>`) and Message-ID cannot collide with
 * an old user's (the broker may outlive the users table when they are in different stores).
 */
export function newUserId(now = Date.now()): string {
  return ulid(now);
}

export const USER_ID = /^[0-9A-HJKMNP-TV-Z]{26}$/;

/**
 * Collects the items added in one turn of the event loop and hands them to `run` together; each
 * `add` settles with its own item's outcome (an Error in the outcomes rejects that item alone), or
 * with `run`'s error for the whole batch.
 */
export class TurnBatch<I, O> {
  readonly #run: (batch: I[]) => Promise<(O | Error)[]>;
  #items: { item: I; resolve: (value: O) => void; reject: (err: unknown) => void }[] = [];

  constructor(run: (batch: I[]) => Promise<(O | Error)[]>) {
    this.#run = run;
  }

  add(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      if (this.#items.push({ item, resolve, reject }) === 1) setImmediate(this.flush);
    });
  }

  /**
   * Hands the items added so far to `run` now (also run at the end of the turn they were added in).
   * Resolves once their outcomes are settled (it never rejects: each item's promise carries its own).
   */
  readonly flush = (): Promise<void> => {
    const batch = this.#items;
    if (batch.length === 0) return Promise.resolve();
    this.#items = [];
    let outcomes: Promise<(O | Error)[]>;
    try {
      outcomes = this.#run(batch.map((b) => b.item));
    } catch (err) {
      outcomes = Promise.reject(err); // a `run` that throws at once fails its batch like one that rejects
    }
    return outcomes.then(
      (outcomes) => {
        for (let i = 0; i < batch.length; i++) {
          const o = outcomes[i];
          if (o instanceof Error) batch[i]!.reject(o);
          else batch[i]!.resolve(o as O);
        }
      },
      (err) => {
        for (const b of batch) b.reject(err);
      },
    );
  };
}
