/**
 * The seed's background task, `send_welcome_email`, and the sweep that guarantees every user gets one.
 *
 * ## One user, one email
 *
 * Errand delivers runs at least once: a run is retried after a transient failure and redelivered
 * when its worker dies. The task makes the email's effect idempotent with the user's welcome state
 * (see `users/store.ts`):
 *
 * 1. Only one run exists per user: the idempotency key `welcome:<userId>` (held 7 days) collapses a
 *    second enqueue (the API's, the sweep's) into the first run.
 * 2. Before sending, the handler reads the user's welcome state; `sent` ends the run without sending.
 * 3. After the SMTP server accepts the message (250 to the end of DATA), the handler records `sent`
 *    with the Message-ID.
 * 4. Every attempt sends the same Message-ID (`<welcome.<userId>@<MAIL_FROM domain>>`), so a
 *    duplicate that slips through the window below is recognisably the same message.
 *
 * The remaining window: a crash (process killed, machine lost, database unreachable for the whole
 * recording retry loop) after the SMTP server accepted the message and before step 3 is stored. The
 * run is then redelivered (its lease expires) and, seeing no `sent`, sends again: the user gets a
 * second copy with the same Message-ID. The same holds when an attempt is aborted (task timeout,
 * cancel, forced shutdown) while the server is answering the end of DATA: the abort does not prove
 * that the server did not accept. SMTP has no transaction spanning both systems, so closing the
 * window entirely is not possible without the receiving side deduplicating on Message-ID; it is a
 * window of milliseconds per message, against the certain loss that "at most once" would risk.
 *
 * ## A worker that cannot see the API's users
 *
 * The API and the workers must read the same users store (`DATABASE_URL`, or the same `DATA_DIR`).
 * A worker started without the API's `DATABASE_URL` reads a users table of its own, where the users
 * the API created do not exist. So the API writes the identity of its store (`UserStore.identity`: a
 * random id kept in the database itself, the same whatever URL or path reaches it) into each run's
 * input (`store`), and:
 *
 * - a user not found by a worker whose store is not the run's is a fault of that worker: logged at
 *   error, naming both stores, and thrown as a plain error, so the run is retried (perhaps by a
 *   correctly configured worker) and then fails visibly, with that message; it is never a success;
 * - a user not found in the very store that created it (or by a run enqueued by hand, without
 *   `store`) fails the run at once (`PermanentError`): there is no user to welcome;
 * - at start, a worker compares its store with the `store` of the latest welcome runs, and logs at
 *   error when they differ (`checkUsersStore`).
 *
 * ## Runs that end without the user's state knowing (cancelled, purged, failed by the broker)
 *
 * The sweep (below) also checks users left `scheduled` against their run: a run that no longer
 * exists (purged, or lost by a Redis restart without persistence) puts the user back to `pending`,
 * and the same sweep enqueues a new run (the broker released the idempotency key with the run); a
 * run cancelled or failed (by a timeout, lost leases) marks the user `failed`, so that nothing sends
 * it behind the operator's back; a run that succeeded but whose `sent` mark was not stored records
 * it. An operator sends a cancelled or failed email with `POST /runs/{id}/retry` while the run
 * exists, or with `POST /tasks/send_welcome_email` once it is gone.
 *
 * ## A user created while the broker was down
 *
 * `POST /users/` writes the user (`pending`) and then enqueues the run; if the enqueue fails, the
 * user stays `pending` and the API still answers 201 (with `task: null`). `sweepPendingWelcomes`,
 * run by every worker at start and then every minute, enqueues a run for every user still `pending`,
 * with the same idempotency key, so that a run the API did enqueue (but could not record) is found
 * rather than doubled.
 */
import { z } from 'zod';
import { type Broker, type Errand, PermanentError, type RetryPolicy, type Task } from '../src/index.ts';
import { classifySendError, type Mailer, welcomeMessage } from './email.ts';
import type { UserStore } from './users/store.ts';

export const WelcomeInputSchema = z.object({
  userId: z.string().min(1),
  email: z.string().min(3),
  username: z.string().min(1),
  /** The identity of the users store that holds the user (`UserStore.identity`), set by the API and the sweep. */
  store: z.string().min(1).max(200).optional(),
});

export type WelcomeResult =
  | { status: 'sent'; messageId: string; response: string; path?: string; recorded: boolean }
  | { status: 'skipped'; reason: 'already_sent'; messageId?: string };

export type WelcomeTask = Task<typeof WelcomeInputSchema, WelcomeResult>;

export const WELCOME_TASK = 'send_welcome_email';
export const WELCOME_QUEUE = 'emails';

/**
 * Default retry policy for sends: 10 attempts, exponential from 5 s, capped at 15 minutes (about 40
 * minutes in all), enough to ride out a restarting mail server or greylisting (451).
 */
export const WELCOME_RETRIES: RetryPolicy = { maxAttempts: 10, backoff: 'exponential', base: 5_000, cap: 15 * 60_000, jitter: 0.2 };

export interface WelcomeTaskDeps {
  users: UserStore;
  mailer: Mailer;
  mailFrom: string;
  retries?: RetryPolicy;
  /** Longest one attempt may take, in ms. Default 120000. */
  timeout?: number;
  /** Welcome emails per recipient domain (`WELCOME_DOMAIN_RATE`): enforced by the broker for every worker. */
  domainRate?: { limit: number; period: number; burst: number };
}

/** The domain of an address, lower-cased (the key of the per-domain rate limit); undefined when there is none. */
export function recipientDomain(email: string): string | undefined {
  const at = email.lastIndexOf('@');
  const domain =
    at < 0
      ? ''
      : email
          .slice(at + 1)
          .trim()
          .toLowerCase();
  return domain === '' ? undefined : domain.slice(0, 256);
}

export function defineWelcomeTask(errand: Errand, deps: WelcomeTaskDeps): WelcomeTask {
  const { users, mailer, mailFrom } = deps;
  const task: WelcomeTask = errand.task(
    WELCOME_TASK,
    {
      input: WelcomeInputSchema,
      queue: WELCOME_QUEUE,
      retries: deps.retries ?? WELCOME_RETRIES,
      timeout: deps.timeout ?? 120_000,
      idempotencyKey: (input) => `welcome:${input.userId}`,
      idempotencyTtl: 7 * 86_400_000,
      description: 'Sends the welcome email to a new user, once per user (retried on transient SMTP failures)',
      ...(deps.domainRate ? { limits: { key: (input) => recipientDomain(input.email), rate: deps.domainRate } } : {}),
    },
    async (input, ctx): Promise<WelcomeResult> => {
      // The stored user is what counts, not the input's email and username (they are there to be
      // readable in the run): a run enqueued by hand (POST /tasks/send_welcome_email) can only
      // welcome an existing user, at that user's address, and only once.
      const [user, status] = await Promise.all([users.get(input.userId), users.welcomeStatus(input.userId)]);
      const otherStore = input.store !== undefined && input.store !== users.identity;
      if (!user || !status) {
        if (otherStore) {
          // Not this worker's users: a configuration fault, never a success. Retried (another
          // worker may see the right store), then failed with this message.
          const message =
            `User ${input.userId} is not in this worker's users store (${users.identity} at ${users.location}), ` +
            `and the run was enqueued by an API whose users store is ${input.store}: start the worker with the API's DATABASE_URL (or DATA_DIR)`;
          ctx.logger.error({ userId: input.userId, workerStore: users.identity, apiStore: input.store }, message);
          throw new UsersStoreMismatchError(message);
        }
        throw new PermanentError(
          `User ${input.userId} does not exist in the users store (${users.identity} at ${users.location}); no welcome email sent`,
        );
      }
      if (otherStore) {
        ctx.logger.warn(
          { userId: input.userId, workerStore: users.identity, apiStore: input.store },
          "the run names another users store than this worker's, but the user is here; sending",
        );
      }
      if (status.state === 'sent') {
        ctx.logger.info({ userId: input.userId, messageId: status.messageId }, 'welcome email already sent; not sending again');
        return status.messageId
          ? { status: 'skipped', reason: 'already_sent', messageId: status.messageId }
          : { status: 'skipped', reason: 'already_sent' };
      }

      let info: Awaited<ReturnType<Mailer['send']>>;
      try {
        info = await mailer.send(welcomeMessage({ userId: user.id, email: user.email, username: user.username }, mailFrom), ctx.signal);
      } catch (err) {
        const { permanent, reason } = classifySendError(err);
        const last = permanent || ctx.attempt >= task.retries.maxAttempts;
        if (last)
          await users.markWelcomeFailed(input.userId, reason).catch((e) => ctx.logger.error({ err: e }, 'could not record the failure'));
        if (permanent) throw new PermanentError(`The SMTP server refused the welcome email to ${user.email}: ${reason}`, { cause: err });
        throw err;
      }

      // The server accepted the message: from here on, never report a failure (a retry would send it again).
      const recorded = await recordSent(users, input.userId, info.messageId, ctx.runId, ctx.logger);
      ctx.logger.info({ userId: input.userId, messageId: info.messageId, response: info.response }, 'welcome email sent');
      const result: WelcomeResult = { status: 'sent', messageId: info.messageId, response: info.response, recorded };
      if (info.path) result.path = info.path;
      return result;
    },
  );
  return task;
}

/** Records `sent`, trying a few times: the email is out, so a failure here must not fail the run. */
async function recordSent(
  users: UserStore,
  userId: string,
  messageId: string,
  runId: string,
  logger: { error: (o: object, m: string) => void },
): Promise<boolean> {
  for (let i = 0; ; i++) {
    try {
      await users.markWelcomeSent(userId, messageId, runId);
      return true;
    } catch (err) {
      if (i >= 4) {
        logger.error(
          { err, userId, messageId },
          'the welcome email was sent but could not be recorded; a redelivery of this run would send it again',
        );
        return false;
      }
      await new Promise((r) => setTimeout(r, 200 * 2 ** i));
    }
  }
}

export interface SweepOptions {
  users: UserStore;
  task: WelcomeTask;
  /** Only users created at least this long ago (ms): leaves the API time to enqueue and record its own run. Default 10000. */
  graceMs?: number;
  /** Users per broker call. Default 100. */
  batch?: number;
}

/** A welcome run that did not find its user in the worker's users store, which is not the API's. */
export class UsersStoreMismatchError extends Error {
  override name = 'UsersStoreMismatchError';
}

export interface ReconcileOptions {
  users: UserStore;
  broker: Broker;
  /** Only users scheduled and created at least this long ago (ms). Default 60000. */
  olderThanMs?: number;
  /** Users checked per call, oldest first. Default 500. */
  limit?: number;
}

/**
 * Brings users left `scheduled` in line with their run (see "Runs that end without the user's
 * state knowing" above). Returns what it changed. The pending sweep then enqueues the users put
 * back to `pending`.
 */
export async function reconcileScheduledWelcomes(options: ReconcileOptions): Promise<{ lost: number; failed: number; sent: number }> {
  const { users, broker } = options;
  const out = { lost: 0, failed: 0, sent: 0 };
  const scheduled = await users.scheduledWelcomes(new Date(Date.now() - (options.olderThanMs ?? 60_000)), options.limit ?? 500);
  await Promise.all(
    scheduled.map(async ({ id, runId }) => {
      const run = await broker.getRun(runId);
      if (!run) {
        await users.markWelcomeLost(id, runId);
        out.lost++;
      } else if (run.state === 'cancelled' || run.state === 'failed') {
        const why =
          run.state === 'cancelled'
            ? `the welcome run ${runId} was cancelled`
            : `the welcome run ${runId} failed: ${errorMessage(run.error)}`;
        await users.markWelcomeFailed(id, why);
        out.failed++;
      } else if (run.state === 'succeeded') {
        const result = parseJson(run.result) as WelcomeResult | undefined;
        if (result?.status === 'sent') {
          await users.markWelcomeSent(id, result.messageId, runId);
          out.sent++;
        }
      }
    }),
  );
  return out;
}

function parseJson(text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The message of a stored run error (JSON text). */
export function errorMessage(text: string | undefined): string {
  const e = parseJson(text) as { message?: unknown } | undefined;
  return typeof e?.message === 'string' ? e.message : 'unknown error';
}

/** Enqueues the welcome email of every user still `pending`. Returns how many users it scheduled. */
export async function sweepPendingWelcomes(options: SweepOptions): Promise<number> {
  const { users, task } = options;
  const batch = options.batch ?? 100;
  const before = new Date(Date.now() - (options.graceMs ?? 10_000));
  let total = 0;
  for (;;) {
    const pending = await users.pendingWelcomes(before, batch);
    if (pending.length === 0) return total;
    const handles = await task.enqueueMany(
      pending.map((u) => ({ input: { userId: u.id, email: u.email, username: u.username, store: users.identity } })),
    );
    await Promise.all(pending.map((u, i) => users.markWelcomeScheduled(u.id, handles[i]!.id)));
    total += pending.length;
    if (pending.length < batch) return total;
  }
}
