/**
 * A periodic task of the users service: the sign-up digest. Declared as a schedule beside its task
 * (`DIGEST_CRON`, default every day at 08:00, in `DIGEST_TIMEZONE`, default UTC), it emails
 * `DIGEST_TO` the number and names of the users who signed up in the day before its fire time.
 *
 * Every worker may fire the schedule, and each fire time gets exactly one run (the brokers'
 * compare-and-set, see docs/schedules.md). The run's nominal fire time (`ctx.schedule.at`) fixes the
 * day it reports on, so a retried or redelivered run, or one created late by the missed-fire
 * policy (`latest`: after an outage, one digest for the latest missed day), reports the same users;
 * its Message-ID is a function of that time, so a duplicate that slips through is recognisably the
 * same message. A run enqueued by hand (no schedule) reports the day before now.
 */
import { z } from 'zod';
import type { Errand, Task } from '../src/index.ts';
import { mailFromAddress } from './config.ts';
import { classifySendError, escapeHtml, type Mailer } from './email.ts';
import type { User, UserStore } from './users/store.ts';
import { PermanentError } from '../src/index.ts';

export const DIGEST_TASK = 'send_signup_digest';
export const DIGEST_SCHEDULE = 'signup-digest';
const DAY = 86_400_000;

export interface DigestResult {
  day: { from: string; to: string };
  signups: number;
  messageId: string;
}

export type DigestTask = Task<z.ZodObject<Record<string, never>>, DigestResult>;

export interface DigestDeps {
  users: UserStore;
  mailer: Mailer;
  mailFrom: string;
  to: string;
  cron: string;
  timezone: string;
}

/** Users created in [from, to), oldest first, and how many (names listed up to `max`). */
async function signupsBetween(users: UserStore, from: number, to: number, max = 200): Promise<{ count: number; listed: User[] }> {
  let cursor: string | undefined;
  let count = 0;
  const listed: User[] = [];
  for (;;) {
    const page = await users.list(cursor ? { limit: 100, cursor } : { limit: 100 });
    for (const u of page.items) {
      const t = u.createdAt.getTime();
      if (t >= to) return { count, listed };
      if (t < from) continue;
      count++;
      if (listed.length < max) listed.push(u);
    }
    if (!page.next) return { count, listed };
    cursor = page.next;
  }
}

export function defineDigest(errand: Errand, deps: DigestDeps): DigestTask {
  const task = errand.task(
    DIGEST_TASK,
    {
      input: z.object({}).strict() as z.ZodObject<Record<string, never>>,
      queue: 'emails',
      retries: { maxAttempts: 5, backoff: 'exponential', base: 30_000, cap: 15 * 60_000, jitter: 0.2 },
      description: 'Emails the daily digest of sign-ups (a schedule: DIGEST_CRON in DIGEST_TIMEZONE)',
    },
    async (_input, ctx): Promise<DigestResult> => {
      const to = ctx.schedule?.at.getTime() ?? Date.now();
      const from = to - DAY;
      const { count, listed } = await signupsBetween(deps.users, from, to);
      const domain = mailFromAddress(deps.mailFrom).split('@')[1] ?? 'localhost';
      const messageId = `<digest.${to}@${domain}>`;
      const day = { from: new Date(from).toISOString(), to: new Date(to).toISOString() };
      const lines = listed.map((u) => `- ${u.username} <${u.email}> at ${u.createdAt.toISOString()}`);
      const more = count > listed.length ? [`... and ${count - listed.length} more`] : [];
      try {
        await deps.mailer.send(
          {
            from: deps.mailFrom,
            to: deps.to,
            subject: `Sign-ups: ${count} from ${day.from} to ${day.to}`,
            text: `${count} user(s) signed up from ${day.from} to ${day.to}.\n\n${[...lines, ...more].join('\n')}\n`,
            html: `<!doctype html><html><body><p>${count} user(s) signed up from ${day.from} to ${day.to}.</p><ul>${listed
              .map((u) => `<li>${escapeHtml(u.username)} &lt;${escapeHtml(u.email)}&gt;</li>`)
              .join('')}</ul>${more.length ? `<p>${escapeHtml(more[0]!)}</p>` : ''}</body></html>`,
            messageId,
          },
          ctx.signal,
        );
      } catch (err) {
        const { permanent, reason } = classifySendError(err);
        if (permanent) throw new PermanentError(`The SMTP server refused the digest to ${deps.to}: ${reason}`, { cause: err });
        throw err;
      }
      ctx.logger.info({ signups: count, day, messageId }, 'sign-up digest sent');
      return { day, signups: count, messageId };
    },
  ) as unknown as DigestTask;
  errand.schedule(DIGEST_SCHEDULE, task, { cron: deps.cron, timezone: deps.timezone, input: {}, missed: 'latest' });
  return task;
}
