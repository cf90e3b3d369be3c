/**
 * Real peers for the service's tests: an SMTP server (smtp-server, on port 0) that records what it
 * receives and can answer with chosen failures, a throw-away PostgreSQL database, and a small MIME
 * reader to assert on received messages (to, subject, body) without a mail-parsing dependency.
 */
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { SMTPServer } from 'smtp-server';
import { loadConfig } from '../../app/config.ts';
import { Service, type ServiceOptions } from '../../app/service.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { tempDir } from '../helpers.ts';

// The broker fixture's Redis URL, clean-up (keys holding a prefix, never FLUSHDB) and quiet logger.
export { dropRedisPrefix, quietLogger, REDIS_URL } from '../fixtures/brokers.ts';

/** Usernames that must round-trip byte for byte (HTML, SQL, emoji, invisible and right-to-left characters). */
export const HOSTILE_USERNAMES = [
  '<script>alert("x")</script>',
  "Robert'); DROP TABLE users;--",
  '" OR 1=1 --',
  '👩‍💻 Zoë 日本語 🇫🇷',
  '\u200Bzero\u200Dwidth\uFEFF',
  '  leading and trailing spaces  ',
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a username that looks like a template, on purpose
  '%s %n {{7*7}} ${process.env} $(id) `id`',
  'back\\slash "quotes" \'single\'',
  'ﷺ \u202Eright-to-left',
  'x'.repeat(64),
  '😀'.repeat(64),
];

export const PG_ADMIN_URL = process.env.ERRAND_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface ReceivedMail {
  from: string;
  to: string[];
  raw: string;
  message: ParsedMail;
}

export interface SmtpPeer {
  url: string;
  port: number;
  received: ReceivedMail[];
  /** Every MAIL FROM seen, accepted or not: how many attempts reached the server. */
  attempts: number;
  close(): Promise<void>;
}

export interface SmtpPeerOptions {
  /**
   * Called at the end of DATA for attempt `n` (1-based, counting every message the server saw);
   * return an SMTP reply code and text to refuse that attempt, or nothing to accept it.
   */
  answer?: (n: number) => { code: number; text: string } | undefined;
}

/** A real SMTP server on 127.0.0.1 and a free port, without TLS or auth. */
export async function startSmtp(options: SmtpPeerOptions = {}): Promise<SmtpPeer> {
  const peer = { received: [] as ReceivedMail[], attempts: 0 } as SmtpPeer;
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onMailFrom(_address, _session, callback) {
      peer.attempts++;
      callback();
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const n = peer.received.length + failures + 1;
        const refusal = options.answer?.(n);
        if (refusal) {
          failures++;
          const err = new Error(refusal.text) as Error & { responseCode: number };
          err.responseCode = refusal.code;
          return callback(err);
        }
        const raw = Buffer.concat(chunks).toString('utf8');
        const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
        peer.received.push({ from, to: session.envelope.rcptTo.map((r) => r.address), raw, message: parseMail(raw) });
        callback(null);
      });
    },
  });
  let failures = 0;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.server.address() as AddressInfo).port;
  peer.port = port;
  peer.url = `smtp://127.0.0.1:${port}`;
  peer.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return peer;
}

/** A fresh PostgreSQL database (`errand_test_<random>`) and a function dropping it. */
export async function createPgDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `errand_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name} ENCODING 'UTF8' TEMPLATE template0`);
  } finally {
    await admin.end();
  }
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: PG_ADMIN_URL });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

export interface ParsedMail {
  /** Header names lower-cased; values unfolded, encoded words decoded. */
  headers: Record<string, string>;
  subject: string;
  text: string;
  html: string;
}

/** Reads the headers and the text/plain and text/html parts of a message as nodemailer writes it. */
export function parseMail(raw: string): ParsedMail {
  const { headers, body } = splitEntity(raw);
  const out: ParsedMail = { headers, subject: headers.subject ?? '', text: '', html: '' };
  collectParts(headers, body, out);
  return out;
}

function splitEntity(raw: string): { headers: Record<string, string>; body: string } {
  const text = raw.replace(/\r\n/g, '\n');
  const end = text.indexOf('\n\n');
  const head = end === -1 ? text : text.slice(0, end);
  const body = end === -1 ? '' : text.slice(end + 2);
  const headers: Record<string, string> = {};
  for (const line of head.replace(/\n[ \t]+/g, ' ').split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = decodeWords(line.slice(colon + 1).trim());
  }
  return { headers, body };
}

function collectParts(headers: Record<string, string>, body: string, out: ParsedMail): void {
  const type = headers['content-type'] ?? 'text/plain';
  const boundary = /boundary="?([^";]+)"?/i.exec(type)?.[1];
  if (/^multipart\//i.test(type) && boundary) {
    const parts = body.split(`--${boundary}`).slice(1);
    for (const part of parts) {
      if (part.startsWith('--')) break;
      const entity = splitEntity(part.replace(/^\n/, ''));
      collectParts(entity.headers, entity.body, out);
    }
    return;
  }
  const decoded = decodeBody(body, headers['content-transfer-encoding'] ?? '7bit');
  if (/^text\/html/i.test(type)) out.html += decoded;
  else if (/^text\/plain/i.test(type)) out.text += decoded;
}

function decodeBody(body: string, encoding: string): string {
  switch (encoding.toLowerCase()) {
    case 'base64':
      return Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8');
    case 'quoted-printable':
      return qp(body);
    default:
      return body;
  }
}

function qp(text: string): string {
  return qpBytes(text).toString('utf8');
}

function qpBytes(text: string): Buffer {
  const soft = text.replace(/=\n/g, '');
  const bytes: number[] = [];
  for (let i = 0; i < soft.length; i++) {
    const ch = soft[i]!;
    if (ch === '=' && /^[0-9A-F]{2}$/i.test(soft.slice(i + 1, i + 3))) {
      bytes.push(Number.parseInt(soft.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      for (const b of Buffer.from(ch, 'utf8')) bytes.push(b);
    }
  }
  return Buffer.from(bytes);
}

/** RFC 2047 encoded words (B and Q, UTF-8), adjacent words joined as the RFC says. */
function decodeWords(value: string): string {
  const collapsed = value.replace(/(=\?[^?]+\?[BbQq]\?[^?]*\?=)\s+(?==\?)/g, '$1');
  // Adjacent words may split one multi-byte character: decode the bytes of a run of words together.
  return collapsed.replace(/(?:=\?([^?]+)\?([BbQq])\?([^?]*)\?=)+/g, (run) => {
    const bytes: Buffer[] = [];
    for (const m of run.matchAll(/=\?([^?]+)\?([BbQq])\?([^?]*)\?=/g)) {
      const [, , enc, data] = m;
      if (enc!.toUpperCase() === 'B') bytes.push(Buffer.from(data!, 'base64'));
      else bytes.push(qpBytes(data!.replace(/_/g, ' ')));
    }
    return Buffer.concat(bytes).toString('utf8');
  });
}

/** Fast retries for tests: the behaviour (retry, then deliver) is what is checked, never the delays. */
export const FAST_RETRIES = { maxAttempts: 3, backoff: 'fixed', base: 20, cap: 20, jitter: 0 } as const;

export interface TestService {
  service: Service;
  dataDir: string;
  /** `fastify.inject` on the service's HTTP app. */
  // biome-ignore lint/suspicious/noExplicitAny: answers are JSON whose shape each test asserts
  request(method: 'GET' | 'POST', url: string, body?: unknown): Promise<{ status: number; json: any; headers: Record<string, unknown> }>;
  stop(): Promise<void>;
}

/**
 * The service in this process, configured from `env` (DATA_DIR defaults to a fresh temp dir), with
 * its HTTP app built (not listening) and, unless `worker: false`, a worker running.
 */
export async function startService(
  env: Record<string, string> = {},
  options: Omit<ServiceOptions, 'config'> & { worker?: false | ServiceOptions['worker'] } = {},
): Promise<TestService> {
  const dataDir = env.DATA_DIR ?? tempDir('errand-app');
  const config = loadConfig({ LOG_LEVEL: 'silent', ...env, DATA_DIR: dataDir });
  const { worker, ...rest } = options;
  const service = await Service.create({
    config,
    logger: quietLogger,
    retries: FAST_RETRIES,
    sweepGraceMs: 0,
    ...rest,
    ...(worker ? { worker } : {}),
  });
  const server = await service.buildServer();
  if (worker !== false) await service.startWorker();
  return {
    service,
    dataDir,
    async request(method, url, body) {
      const res = await server.inject({
        method,
        url,
        ...(body === undefined
          ? {}
          : typeof body === 'string'
            ? { payload: body, headers: { 'content-type': 'application/json' } }
            : { payload: body as object }),
      });
      let json: unknown;
      try {
        json = res.json();
      } catch {
        json = res.body;
      }
      return { status: res.statusCode, json, headers: res.headers };
    },
    stop: () => service.stop(),
  };
}
