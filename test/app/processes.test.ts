// The service as it is deployed: `node app/main.ts` processes, stopped with SIGTERM.
// - `all` on the embedded default (nothing but a DATA_DIR): the email lands in DATA_DIR/outbox;
// - `api` + two `worker` processes on Redis and PostgreSQL, sending through a real SMTP server;
// - bad configuration: exit code 2 and one line naming the variable.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { freePort } from '../fixtures/redis-servers.ts';
import { tempDir, uniquePrefix, waitFor } from '../helpers.ts';
import { createPgDatabase, dropRedisPrefix, parseMail, REDIS_URL, startSmtp } from './support.ts';

const NODE = process.execPath;
const MAIN = new URL('../../app/main.ts', import.meta.url).pathname;
const LONG = { timeoutMs: 90_000 }; // a safety net for a loaded machine, not a timing assertion

// Variables of the service that must not leak in from the environment running the tests.
const CLEAN = [
  'PORT',
  'HOST',
  'DATA_DIR',
  'REDIS_URL',
  'DATABASE_URL',
  'SMTP_URL',
  'MAIL_FROM',
  'ERRAND_PREFIX',
  'ERRAND_BROKER_URL',
  'ERRAND_ADMIN_TOKENS',
  'ERRAND_READ_TOKENS',
  'WORKER_CONCURRENCY',
];

function envWith(vars: Record<string, string>): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of CLEAN) delete env[k];
  return { ...env, LOG_LEVEL: 'warn', ...vars };
}

interface Proc {
  child: ChildProcess;
  stderr: () => string;
}

function start(mode: string, vars: Record<string, string>): Proc {
  const child = spawn(NODE, [MAIN, mode], { env: envWith(vars), stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (c: Buffer) => {
    err += c.toString();
  });
  return { child, stderr: () => err };
}

async function stop(p: Proc): Promise<number | null> {
  if (p.child.exitCode !== null) return p.child.exitCode;
  const exited = once(p.child, 'exit');
  p.child.kill('SIGTERM');
  const [code] = (await exited) as [number | null];
  return code;
}

async function waitHealthy(base: string, p: Proc): Promise<void> {
  await waitFor(
    async () => {
      if (p.child.exitCode !== null) throw new Error(`the process exited with ${p.child.exitCode}: ${p.stderr()}`);
      const res = await fetch(`${base}/healthz`);
      return res.ok;
    },
    { ...LONG, message: `${base}/healthz` },
  );
}

async function postUser(base: string, username: string, email: string) {
  const res = await fetch(`${base}/users/`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, email }),
  });
  assert.equal(res.status, 201);
  return (await res.json()) as { user: { id: string }; task: { id: string } };
}

describe('node app/main.ts', () => {
  it('all: runs API and worker on the embedded default and writes the email to the outbox; SIGTERM exits 0', async () => {
    const dataDir = tempDir('errand-app');
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const p = start('all', { PORT: String(port), DATA_DIR: dataDir });
    try {
      await waitHealthy(base, p);
      const created = await postUser(base, 'jane', 'jane@example.com');
      const outbox = join(dataDir, 'outbox');
      const file = await waitFor(() => {
        try {
          return readdirSync(outbox).find((f) => f.endsWith('.eml'));
        } catch {
          return undefined;
        }
      }, LONG);
      const mail = parseMail(readFileSync(join(outbox, file), 'utf8'));
      assert.equal(mail.headers.to, 'jane@example.com');
      assert.equal(mail.subject, 'Welcome, jane!');
      const run = await waitFor(async () => {
        const r = (await (await fetch(`${base}/runs/${created.task.id}`)).json()) as { state: string };
        return r.state === 'succeeded' ? r : undefined;
      }, LONG);
      assert.equal(run.state, 'succeeded');
      assert.equal((await fetch(`${base}/docs`)).ok, true);
    } finally {
      assert.equal(await stop(p), 0, p.stderr());
    }
  });

  it('api + two workers on Redis and PostgreSQL: every user gets exactly one email', async () => {
    const smtp = await startSmtp();
    const db = await createPgDatabase();
    const prefix = uniquePrefix('errand-app-test');
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const vars = {
      REDIS_URL,
      ERRAND_PREFIX: prefix,
      DATABASE_URL: db.url,
      SMTP_URL: smtp.url,
      PORT: String(port),
      DATA_DIR: tempDir('errand-app'),
    };
    const procs = [start('api', vars), start('worker', vars), start('worker', { ...vars, WORKER_CONCURRENCY: '3' })];
    try {
      await waitHealthy(base, procs[0]!);
      const n = 30;
      const emails = Array.from({ length: n }, (_, i) => `multi.${i}@example.com`);
      await Promise.all(emails.map((email, i) => postUser(base, `multi ${i}`, email)));
      await waitFor(() => smtp.received.length >= n, { ...LONG, message: `${n} emails` }).catch((err: Error) => {
        throw new Error(`${err.message}; ${smtp.received.length} received; stderr:\n${procs.map((p) => p.stderr()).join('\n')}`);
      });
      const to = smtp.received.map((m) => m.to[0]).sort();
      assert.deepEqual(to, [...emails].sort());
    } finally {
      const codes = await Promise.all(procs.map(stop));
      await smtp.close();
      await db.drop();
      await dropRedisPrefix(prefix);
      assert.deepEqual(codes, [0, 0, 0], procs.map((p) => p.stderr()).join('\n'));
    }
  });

  const bad: [string, Record<string, string>, RegExp][] = [
    ['PORT', { PORT: 'abc' }, /^Configuration error: PORT must be an integer from 1 to 65535, got "abc"\n$/],
    ['PORT', { PORT: '70000' }, /^Configuration error: PORT must be an integer from 1 to 65535, got "70000"\n$/],
    [
      'WORKER_CONCURRENCY',
      { WORKER_CONCURRENCY: '0' },
      /^Configuration error: WORKER_CONCURRENCY must be an integer from 1 to 1000, got "0"\n$/,
    ],
    ['REDIS_URL', { REDIS_URL: 'localhost:6379' }, /^Configuration error: REDIS_URL must start with redis:\/\/ /],
    ['DATABASE_URL', { DATABASE_URL: 'mysql://x/y' }, /^Configuration error: DATABASE_URL must start with postgres:\/\/ /],
    ['SMTP_URL', { SMTP_URL: 'http://mail' }, /^Configuration error: SMTP_URL must start with smtp:\/\/ /],
    ['MAIL_FROM', { MAIL_FROM: 'nobody' }, /^Configuration error: MAIL_FROM must be an email address/],
    ['ERRAND_ADMIN_TOKENS', { ERRAND_ADMIN_TOKENS: 'a,,b' }, /^Configuration error: ERRAND_ADMIN_TOKENS has an empty entry/],
    [
      'ERRAND_REDIS_CA',
      { ERRAND_REDIS_CA: '/nonexistent.pem', REDIS_URL: 'rediss://127.0.0.1:6379' },
      /^Configuration error: ERRAND_REDIS_CA must be a readable PEM file/,
    ],
    // Node's recursive mkdir never returns for a path under /proc (it spun at 100% CPU, printing nothing).
    ['DATA_DIR', { DATA_DIR: '/proc/nope' }, /^Configuration error: DATA_DIR "\/proc\/nope" cannot be created: ENOENT/],
    // A syntactically fine URL that the server refuses: the worker (and the API) must not start and retry forever.
    [
      'REDIS_URL',
      { REDIS_URL: `${REDIS_URL.replace(/\/\d*$/, '')}/99`, ERRAND_PREFIX: 'errand-app-db99' },
      /^Configuration error: REDIS_URL: Redis at redis:\/\/.*\/99 has no database 99 \(ERR DB index is out of range\)/,
    ],
    ['ERRAND_BROKER_URL', { ERRAND_BROKER_URL: 'amqp://rabbit' }, /^Configuration error: ERRAND_BROKER_URL must start with redis:\/\//],
  ];
  for (const [name, vars, expected] of bad) {
    it(`exits 2 with one line naming ${name} for ${JSON.stringify(Object.values(vars)[0])}`, async () => {
      const p = start('all', { DATA_DIR: tempDir('errand-app'), ...vars });
      // A bound on the wait, so that a process that never exits fails the test (not a timing assertion).
      const timer = setTimeout(() => p.child.kill('SIGKILL'), LONG.timeoutMs);
      const [code] = (await once(p.child, 'exit')) as [number | null];
      clearTimeout(timer);
      assert.equal(code, 2);
      assert.match(p.stderr(), expected);
      assert.equal(p.stderr().trim().split('\n').length, 1, 'one line, no stack trace');
    });
  }

  it('exits 2 for an unknown mode', async () => {
    const p = start('celery', { DATA_DIR: tempDir('errand-app') });
    const [code] = (await once(p.child, 'exit')) as [number | null];
    assert.equal(code, 2);
    assert.match(p.stderr(), /Unknown mode "celery": use all, api or worker/);
  });
});
