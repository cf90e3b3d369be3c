/**
 * Sending email: SMTP through nodemailer when `SMTP_URL` is set, otherwise a development transport
 * that writes each message as an `.eml` file under `DATA_DIR/outbox/` (open it with any mail client,
 * or read it as text) and logs its path.
 */
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import nodemailer, { type SendMailOptions } from 'nodemailer';
import type { Logger } from 'pino';
import { redactUrl } from '../src/core/urls.ts';
import { mailFromAddress } from './config.ts';
import { makeDirs } from '../src/core/fs.ts';

export interface SentInfo {
  messageId: string;
  /** The SMTP server's final answer (`250 ...`), or `written to <path>` for the outbox. */
  response: string;
  accepted: string[];
  /** The `.eml` file, for the development transport. */
  path?: string;
}

export interface Mailer {
  readonly kind: 'smtp' | 'outbox';
  /** Sends one message. Rejects with nodemailer's error (its `code`, `responseCode`, `response`) on failure. */
  send(message: SendMailOptions, signal?: AbortSignal): Promise<SentInfo>;
  close(): Promise<void>;
}

export interface MailerOptions {
  /** `smtp://` or `smtps://` URL; absent, the outbox transport. */
  smtpUrl?: string | undefined;
  /** Where the outbox transport writes. */
  outboxDir: string;
  logger: Logger;
  /** SMTP connections kept open for reuse. Default 5. */
  maxConnections?: number;
}

export function createMailer(options: MailerOptions): Mailer {
  return options.smtpUrl ? smtpMailer(options.smtpUrl, options) : outboxMailer(options.outboxDir, options.logger);
}

function smtpMailer(url: string, options: MailerOptions): Mailer {
  const transport = nodemailer.createTransport({
    url,
    // Pooled connections: one TCP + SMTP handshake serves many messages, as Celery's workers would not.
    pool: true,
    maxConnections: options.maxConnections ?? 5,
    // Fail fast enough for a retry to be useful; the task's own timeout (and ctx.signal) bounds the rest.
    connectionTimeout: 10_000,
    greetingTimeout: 10_000,
    socketTimeout: 60_000,
  });
  options.logger.info({ smtp: redactUrl(url) }, 'welcome emails go to the SMTP server');
  return {
    kind: 'smtp',
    async send(message, signal) {
      const info = await transport.sendMail(signal ? { ...message, signal } : message);
      return {
        messageId: info.messageId,
        response: info.response,
        accepted: info.accepted,
      };
    },
    async close() {
      transport.close();
    },
  };
}

function outboxMailer(dir: string, logger: Logger): Mailer {
  const transport = nodemailer.createTransport({ streamTransport: true, buffer: true, newline: 'windows' });
  logger.info({ outbox: dir }, 'SMTP_URL is not set: welcome emails are written as .eml files to the outbox folder');
  let made = false;
  return {
    kind: 'outbox',
    async send(message, signal) {
      signal?.throwIfAborted();
      const info = await transport.sendMail(message);
      if (!made) {
        makeDirs(dir); // once; one level at a time (Node's recursive mkdir can loop forever, see core/fs.ts)
        made = true;
      }
      const stamp = new Date().toISOString().replace(/[-:.]/g, '');
      const name = `${stamp}-${info.messageId.replace(/[^A-Za-z0-9@._-]/g, '')}.eml`;
      const path = join(dir, name);
      // Written under a temporary name then renamed: a reader never sees half a message.
      const tmp = `${path}.tmp`;
      await writeFile(tmp, info.message as Buffer);
      await rename(tmp, path);
      logger.info({ path, to: info.envelope.to, messageId: info.messageId }, 'email written to the outbox');
      return { messageId: info.messageId, response: `written to ${path}`, accepted: info.envelope.to, path };
    },
    async close() {},
  };
}

/**
 * How a failed send should be treated. `permanent`: the server refused the message for good (a 5xx
 * reply other than 503, which only means the session was out of step), or the message itself is
 * unusable; another attempt would get the same answer. Everything else (connection refused or
 * reset, timeouts, DNS, TLS hiccups, 4xx replies such as 421 or 451) is `transient` and retried.
 */
export function classifySendError(err: unknown): { permanent: boolean; reason: string } {
  const e = (err ?? {}) as { code?: string; responseCode?: number; response?: string; message?: string };
  const reason = (e.response ?? e.message ?? String(err)).trim();
  const code = typeof e.responseCode === 'number' ? e.responseCode : undefined;
  if (code !== undefined && code >= 500 && code < 600 && code !== 503) return { permanent: true, reason };
  if (code === undefined && (e.code === 'EENVELOPE' || e.code === 'ECONFIG')) return { permanent: true, reason };
  return { permanent: false, reason };
}

/**
 * The welcome email's Message-ID: a function of the user alone, so that every attempt of the run
 * (and any duplicate that slipped through, see `tasks.ts`) carries the same id and receiving systems
 * can tell they are one message.
 */
export function welcomeMessageId(userId: string, mailFrom: string): string {
  const domain = mailFromAddress(mailFrom).split('@')[1] ?? 'localhost';
  return `<welcome.${userId}@${domain}>`;
}

export interface WelcomeInput {
  userId: string;
  email: string;
  username: string;
}

export function welcomeMessage(input: WelcomeInput, mailFrom: string): SendMailOptions {
  return {
    from: mailFrom,
    // An address object, not a string: nodemailer parses no list or display name out of it.
    to: { name: '', address: input.email },
    subject: `Welcome, ${input.username}!`,
    text: `Hello ${input.username}, welcome aboard.\n\nYour account was created. You are receiving this email because someone signed up with this address.\n`,
    html: `<!doctype html><html><body><p>Hello ${escapeHtml(input.username)}, welcome aboard.</p><p>Your account was created. You are receiving this email because someone signed up with this address.</p></body></html>`,
    messageId: welcomeMessageId(input.userId, mailFrom),
  };
}

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
