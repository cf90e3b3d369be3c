// Rate limiting: off by default; `createServer({ rateLimit })` answers 429 in FastAPI's shape with
// Retry-After, per client, for every route but the health probes; the service reads it from
// RATE_LIMIT_MAX / RATE_LIMIT_WINDOW_MS.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { loadConfig } from '../../app/config.ts';
import { Service } from '../../app/service.ts';
import { ConfigError } from '../../src/core/errors.ts';
import type { Errand } from '../../src/errand.ts';
import { createServer } from '../../src/http/index.ts';
import { tempDir, waitFor } from '../helpers.ts';
import { defineTasks, quiet } from './setup.ts';
import { sqliteSetup } from '../fixtures/brokers.ts';

describe('HTTP rate limiting', () => {
  const apps: FastifyInstance[] = [];
  const errands: Errand[] = [];
  const server = async (rateLimit?: Parameters<typeof createServer>[0]['rateLimit']) => {
    const errand = sqliteSetup('errand-http').app();
    defineTasks(errand);
    errands.push(errand);
    const app = await createServer({ errand, logger: false, docs: true, ...(rateLimit !== undefined ? { rateLimit } : {}) });
    apps.push(app);
    return { app, errand };
  };
  after(async () => {
    await Promise.all(apps.map((a) => a.close()));
    await Promise.all(errands.map((e) => e.close()));
  });

  it('is off by default: many requests, no 429 and no rate-limit headers', async () => {
    const { app } = await server();
    for (let i = 0; i < 40; i++) {
      const res = await app.inject({ method: 'GET', url: '/tasks' });
      assert.equal(res.statusCode, 200);
      assert.equal(res.headers['x-ratelimit-limit'], undefined);
    }
  });

  it('answers 429 {"detail": "..."} with Retry-After past max, on every route of the client, and enqueues nothing', async () => {
    const { app, errand } = await server({ max: 3, timeWindow: 60_000 });
    for (let i = 0; i < 3; i++) {
      const res = await app.inject({ method: 'GET', url: '/tasks' });
      assert.equal(res.statusCode, 200);
      assert.equal(res.headers['x-ratelimit-limit'], '3');
      assert.equal(res.headers['x-ratelimit-remaining'], String(2 - i));
    }
    for (const [method, url, payload] of [
      ['GET', '/tasks', undefined],
      ['POST', '/tasks/echo', { text: 'x' }],
      ['GET', '/runs/default.01ARZ3NDEKTSV4RRFFQ69G5FAV', undefined],
      ['GET', '/openapi.json', undefined],
    ] as const) {
      const res = await app.inject({ method, url, ...(payload ? { payload } : {}) });
      assert.equal(res.statusCode, 429, `${method} ${url}`);
      assert.match(String(res.headers['content-type']), /^application\/json/);
      const body = res.json() as { detail: unknown };
      assert.deepEqual(Object.keys(body), ['detail']);
      assert.equal(typeof body.detail, 'string');
      assert.match(body.detail as string, /^Too many requests: at most 3 per minute; try again in \d+ s$/);
      const retryAfter = Number(res.headers['retry-after']);
      assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60, `Retry-After ${res.headers['retry-after']}`);
    }
    const broker = await errand.broker();
    assert.equal((await broker.counts(['default'])).default?.queued, 0, 'the refused enqueue left nothing behind');
  });

  it('documents 429 on every route the limit covers when it is on, and on none when it is off', async () => {
    const tooMany = async (app: FastifyInstance) => {
      const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json() as {
        paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
      };
      const out: Record<string, boolean> = {};
      for (const [path, ops] of Object.entries(doc.paths))
        for (const [method, op] of Object.entries(ops)) out[`${method.toUpperCase()} ${path}`] = '429' in op.responses;
      return out;
    };
    const on = await tooMany((await server({ max: 1000, timeWindow: 60_000 })).app);
    assert.equal(on['GET /tasks'], true);
    assert.equal(on['POST /tasks/echo'], true);
    assert.equal(on['GET /healthz'], false, 'the health probes are never limited');
    assert.equal(on['GET /readyz'], false);
    const off = await tooMany((await server()).app);
    assert.deepEqual(
      Object.entries(off).filter(([, has]) => has),
      [],
    );
  });

  it('counts each client apart, never limits the health probes, and lets a client back in after the window', async () => {
    const { app } = await server({ max: 2, timeWindow: 400 });
    const from = (remoteAddress: string) => app.inject({ method: 'GET', url: '/tasks', remoteAddress });
    assert.equal((await from('10.0.0.1')).statusCode, 200);
    assert.equal((await from('10.0.0.1')).statusCode, 200);
    assert.equal((await from('10.0.0.1')).statusCode, 429);
    assert.equal((await from('10.0.0.2')).statusCode, 200, 'another client has its own count');
    for (let i = 0; i < 10; i++) {
      const res = await app.inject({ method: 'GET', url: '/healthz', remoteAddress: '10.0.0.1' });
      assert.equal(res.statusCode, 200, '/healthz is never limited');
    }
    await waitFor(async () => (await from('10.0.0.1')).statusCode === 200, {
      timeoutMs: 10_000,
      intervalMs: 100,
      message: 'the window to pass',
    });
  });

  it('allowList keys are never limited; keyGenerator picks the client', async () => {
    const { app } = await server({
      max: 1,
      timeWindow: 60_000,
      allowList: ['trusted'],
      keyGenerator: (request) => String(request.headers['x-client'] ?? request.ip),
    });
    for (let i = 0; i < 5; i++) {
      assert.equal((await app.inject({ method: 'GET', url: '/tasks', headers: { 'x-client': 'trusted' } })).statusCode, 200);
    }
    assert.equal((await app.inject({ method: 'GET', url: '/tasks', headers: { 'x-client': 'a' } })).statusCode, 200);
    assert.equal((await app.inject({ method: 'GET', url: '/tasks', headers: { 'x-client': 'a' } })).statusCode, 429);
    assert.equal((await app.inject({ method: 'GET', url: '/tasks', headers: { 'x-client': 'b' } })).statusCode, 200);
  });

  it('counts requests refused for their token (401, 403) and for an unknown path, so guessing tokens is throttled', async () => {
    const errand = sqliteSetup('errand-http').app();
    defineTasks(errand);
    errands.push(errand);
    const app = await createServer({
      errand,
      logger: false,
      auth: { admin: ['admin-token'], read: ['read-token'] },
      rateLimit: { max: 8, timeWindow: 60_000 },
    });
    apps.push(app);
    const bad = { authorization: 'Bearer bad' };
    for (let i = 0; i < 4; i++) assert.equal((await app.inject({ method: 'GET', url: '/tasks', headers: bad })).statusCode, 401);
    const forbidden = await app.inject({
      method: 'POST',
      url: '/tasks/echo',
      headers: { authorization: 'Bearer read-token' },
      payload: { text: 'x' },
    });
    assert.equal(forbidden.statusCode, 403);
    assert.equal((await app.inject({ method: 'GET', url: '/no-such-route' })).statusCode, 404);
    const ok = await app.inject({ method: 'GET', url: '/tasks', headers: { authorization: 'Bearer admin-token' } });
    assert.equal(ok.statusCode, 200);
    assert.equal(ok.headers['x-ratelimit-remaining'], '1', 'the 4 bad tokens, the 403 and the 404 were counted');
    assert.equal((await app.inject({ method: 'GET', url: '/tasks', headers: bad })).statusCode, 401);
    const guessed = await app.inject({ method: 'GET', url: '/tasks', headers: bad });
    assert.equal(guessed.statusCode, 429, 'the ninth request is refused before its token is even looked at');
    const valid = await app.inject({ method: 'GET', url: '/tasks', headers: { authorization: 'Bearer admin-token' } });
    assert.equal(valid.statusCode, 429, 'a valid token does not reset the count');
  });

  it('refuses bad options with a ConfigError naming the option', async () => {
    const errand = sqliteSetup('errand-http').app();
    errands.push(errand);
    for (const [rateLimit, name] of [
      [{ max: 0 }, /rateLimit\.max/],
      [{ max: 1.5 }, /rateLimit\.max/],
      [{ max: '10' }, /rateLimit\.max/],
      [{ max: 5, timeWindow: -1 }, /rateLimit\.timeWindow/],
      [{ max: 5, timeWindow: '' }, /rateLimit\.timeWindow/],
      [{ max: 5, keyGenerator: 'ip' }, /rateLimit\.keyGenerator/],
      [{ max: 5, allowList: '127.0.0.1' }, /rateLimit\.allowList/],
      [42, /rateLimit must be an object/],
    ] as const) {
      await assert.rejects(
        createServer({ errand, logger: false, rateLimit: rateLimit as never }),
        (err: unknown) => err instanceof ConfigError && name.test(err.message),
        JSON.stringify(rateLimit),
      );
    }
  });
});

describe('service: RATE_LIMIT_MAX and RATE_LIMIT_WINDOW_MS', () => {
  it('are read and checked by loadConfig', () => {
    assert.equal(loadConfig({}).rateLimit, undefined);
    assert.deepEqual(loadConfig({ RATE_LIMIT_MAX: '100' }).rateLimit, { max: 100, windowMs: 60_000 });
    assert.deepEqual(loadConfig({ RATE_LIMIT_MAX: '5', RATE_LIMIT_WINDOW_MS: '1000' }).rateLimit, { max: 5, windowMs: 1000 });
    assert.throws(() => loadConfig({ RATE_LIMIT_MAX: '0' }), /^ConfigError: RATE_LIMIT_MAX must be an integer from 1/);
    assert.throws(() => loadConfig({ RATE_LIMIT_MAX: 'many' }), /RATE_LIMIT_MAX must be an integer/);
    assert.throws(() => loadConfig({ RATE_LIMIT_MAX: '5', RATE_LIMIT_WINDOW_MS: '1.5' }), /RATE_LIMIT_WINDOW_MS must be an integer/);
    assert.throws(() => loadConfig({ RATE_LIMIT_WINDOW_MS: '1000' }), /RATE_LIMIT_WINDOW_MS is set but RATE_LIMIT_MAX is not/);
  });

  it("limit the service's API", async () => {
    const config = loadConfig({ LOG_LEVEL: 'silent', DATA_DIR: tempDir('errand-rate'), RATE_LIMIT_MAX: '2' });
    const service = await Service.create({ config, logger: quiet });
    try {
      const app = await service.buildServer();
      assert.equal((await app.inject({ method: 'GET', url: '/users/' })).statusCode, 200);
      assert.equal((await app.inject({ method: 'GET', url: '/users/' })).statusCode, 200);
      const res = await app.inject({ method: 'POST', url: '/users/', payload: { username: 'x', email: 'x@example.com' } });
      assert.equal(res.statusCode, 429);
      assert.match((res.json() as { detail: string }).detail, /^Too many requests: at most 2 per minute/);
      assert.ok(Number(res.headers['retry-after']) >= 1);
    } finally {
      await service.stop();
    }
  });
});
