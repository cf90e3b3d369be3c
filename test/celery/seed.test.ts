// The seed's own FastAPI + Celery service, run unmodified from ../shared/anchors/celery-seed (its API
// calls send_welcome_email.delay()), with the Python worker off and the users service's
// `npm run worker:celery` (app/celery-worker.ts) in its place: the email is delivered over SMTP as
// the seed's task sends it, and Celery's result backend holds the task's `True`.
// Needs Debian's python3-celery, python3-redis, python3-fastapi, python3-uvicorn, and the anchors
// folder, which is outside the project: BENCH_ANCHORS, else a `shared/anchors` above the checkout or
// above the checkout it was cloned from (bench/lib/anchors.ts). Without one the test is skipped,
// naming what is missing; in CI (CI=true) that fails the run instead (test/fixtures/prereq.ts).
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { anchorsMissing, findAnchors } from '../../bench/lib/anchors.ts';
import { requires } from '../fixtures/prereq.ts';
import { freePort, type OwnRedis } from '../fixtures/redis-servers.ts';
import { startSmtp, type SmtpPeer } from '../app/support.ts';
import { tempDir, waitFor } from '../helpers.ts';
import { celerySkip, ownRedis, PYTHON } from './support.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ANCHORS = findAnchors(ROOT);
const SEED = join(ANCHORS.dir ?? resolve(ROOT, '../shared/anchors'), 'celery-seed');

function fastapiMissing(): string | undefined {
  const r = spawnSync(PYTHON, ['-c', 'import fastapi, uvicorn'], { encoding: 'utf8', timeout: 30_000 });
  return r.status === 0 ? undefined : 'python3 cannot import fastapi and uvicorn (apt-get install -y python3-fastapi python3-uvicorn)';
}

const skip =
  requires('the anchors folder', anchorsMissing(ANCHORS)) ||
  requires("the seed's service", existsSync(join(SEED, 'api.sh')) ? undefined : `${join(SEED, 'api.sh')} not found (set BENCH_ANCHORS)`) ||
  celerySkip() ||
  requires('python3-fastapi', fastapiMissing());

describe("the seed's FastAPI + Celery service with an Errand worker in place of Celery's", { skip }, () => {
  let server: OwnRedis;
  let url: string;
  let smtp: SmtpPeer;
  let port: number;
  const children: ChildProcess[] = [];
  let output = '';

  const start = (cmd: string, args: string[], env: Record<string, string>, cwd: string) => {
    const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (c: Buffer) => {
      output = (output + c.toString()).slice(-20_000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    children.push(child);
    return child;
  };

  before(async () => {
    ({ server, url } = await ownRedis('errand-celery-seed'));
    smtp = await startSmtp();
    port = await freePort();
    start(join(SEED, 'api.sh'), [], { PORT: String(port), REDIS_URL: url, SMTP_URL: smtp.url }, SEED);
    start(
      process.execPath,
      ['app/celery-worker.ts'],
      { REDIS_URL: url, SMTP_URL: smtp.url, DATA_DIR: tempDir('errand-celery-seed-data'), LOG_FORMAT: 'json' },
      ROOT,
    );
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/healthz`)).ok, {
      timeoutMs: 60_000,
      intervalMs: 200,
      message: `the seed's API on port ${port}`,
    }).catch((err) => {
      throw new Error(`${(err as Error).message}\n${output}`);
    });
  });

  after(async () => {
    for (const c of children) c.kill('SIGTERM');
    await smtp?.close();
    await server?.stop();
  });

  test('POST /users/ -> send_welcome_email.delay() -> the Errand worker delivers the email', async () => {
    const res = await fetch(`http://127.0.0.1:${port}/users/`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'john.doe', email: 'john.doe@example.com' }),
    });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { message: 'User created and welcome email scheduled!' });
    const mail = await waitFor(() => smtp.received[0], {
      timeoutMs: 60_000,
      intervalMs: 50,
      message: `the email (output: ${output.slice(-2000)})`,
    });
    assert.equal(mail.from, 'welcome@example.com');
    assert.deepEqual(mail.to, ['john.doe@example.com']);
    assert.equal(mail.message.subject, 'Welcome, john.doe!');
    assert.match(mail.message.text, /^Hello john\.doe, welcome aboard\.\s*$/);
    const redis = new Redis(url);
    try {
      const keys = await waitFor(async () => {
        const k = await redis.keys('celery-task-meta-*');
        return k.length ? k : undefined;
      });
      const meta = JSON.parse((await redis.get(keys[0] as string)) as string);
      assert.equal(meta.status, 'SUCCESS');
      assert.equal(meta.result, true);
      assert.equal(await redis.hlen('unacked'), 0);
    } finally {
      redis.disconnect();
    }
  });
});
