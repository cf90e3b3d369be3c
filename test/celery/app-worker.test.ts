// `npm run worker:celery` (app/celery-worker.ts) refuses a bad configuration with one line naming
// the variable and exit code 2, before it connects to anything. (Its work is tested end to end by
// seed.test.ts, with the seed's own FastAPI service.)
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function run(env: Record<string, string | undefined>) {
  const e: NodeJS.ProcessEnv = { ...process.env, LOG_FORMAT: 'json', ...env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete e[k];
  return spawnSync(process.execPath, ['app/celery-worker.ts'], { cwd: ROOT, env: e, encoding: 'utf8', timeout: 60_000 });
}

describe('npm run worker:celery: configuration errors', () => {
  test('no REDIS_URL', () => {
    const r = run({ REDIS_URL: undefined });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /^REDIS_URL: required/);
  });
  test('a bad CELERY_VISIBILITY_TIMEOUT or an empty CELERY_QUEUES', () => {
    const v = run({ REDIS_URL: 'redis://127.0.0.1:1/0', CELERY_VISIBILITY_TIMEOUT: 'soon' });
    assert.equal(v.status, 2, v.stderr);
    assert.match(v.stderr, /^CELERY_VISIBILITY_TIMEOUT: /);
    const q = run({ REDIS_URL: 'redis://127.0.0.1:1/0', CELERY_QUEUES: ' , ' });
    assert.equal(q.status, 2, q.stderr);
    assert.match(q.stderr, /^CELERY_QUEUES: /);
  });
  test('a Redis that cannot be reached: one line, exit code 1', () => {
    const r = run({ REDIS_URL: 'redis://127.0.0.1:1/0' });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /^Could not start: REDIS_URL: cannot connect to Redis: .*ECONNREFUSED/m);
  });
});
