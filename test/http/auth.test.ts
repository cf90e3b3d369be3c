// Bearer-token auth: scopes, the open routes, and reading tokens from the environment.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { ConfigError } from '../../src/core/errors.ts';
import type { Errand } from '../../src/errand.ts';
import { authFromEnv, createServer, requireScope, TokenAuth } from '../../src/http/index.ts';
import { defineTasks } from './setup.ts';
import { sqliteSetup } from '../fixtures/brokers.ts';

const ADMIN = 'admin-token-0123456789abcdef';
const READ = 'read-token-0123456789abcdef';
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

describe('auth', () => {
  let errand: Errand;
  let app: FastifyInstance;
  let runId: string;

  before(async () => {
    errand = sqliteSetup('errand-http').app();
    defineTasks(errand);
    app = await createServer({ errand, logger: false, auth: { admin: [ADMIN, 'second-admin'], read: [READ] } });
    app.get('/private', { onRequest: requireScope({ admin: [ADMIN], read: [READ] }, 'read') }, async () => ({ ok: true }));
    const res = await app.inject({ method: 'POST', url: '/tasks/echo?delay=600000', headers: bearer(ADMIN), payload: { text: 'x' } });
    assert.equal(res.statusCode, 202);
    runId = res.json().id;
  });

  after(async () => {
    await app.close();
    await errand.close();
  });

  it('answers 401 with WWW-Authenticate: Bearer without a token or with a wrong one', async () => {
    for (const headers of [
      {},
      { authorization: 'Basic YWRtaW46YWRtaW4=' },
      { authorization: 'Bearer' },
      bearer('wrong'),
      bearer(`${ADMIN}x`),
      bearer(ADMIN.slice(0, -1)),
    ]) {
      for (const [method, url] of [
        ['GET', `/runs/${runId}`],
        ['GET', '/tasks'],
        ['POST', '/tasks/echo'],
        ['POST', `/runs/${runId}/cancel`],
      ] as const) {
        const res = await app.inject({ method, url, headers, payload: method === 'POST' ? { text: 'y' } : undefined });
        assert.equal(res.statusCode, 401, `${method} ${url} ${JSON.stringify(headers)}`);
        assert.match(res.headers['www-authenticate'] as string, /^Bearer realm="errand"/);
        assert.equal(typeof res.json().detail, 'string');
      }
    }
  });

  it('checks auth before looking at the task name (no task list for strangers)', async () => {
    const res = await app.inject({ method: 'POST', url: '/tasks/unknown', payload: {} });
    assert.equal(res.statusCode, 401);
    assert.ok(!res.body.includes('send_email'));
  });

  it('lets a read token GET runs, events and tasks, and refuses it the admin routes with 403', async () => {
    const run = await app.inject({ method: 'GET', url: `/runs/${runId}`, headers: bearer(READ) });
    assert.equal(run.statusCode, 200);
    assert.equal(run.json().state, 'scheduled');
    const tasks = await app.inject({ method: 'GET', url: '/tasks', headers: bearer(READ) });
    assert.equal(tasks.statusCode, 200);
    for (const [url, payload] of [
      ['/tasks/echo', { text: 'hi' }],
      [`/runs/${runId}/cancel`, undefined],
      [`/runs/${runId}/retry`, undefined],
      ['/tasks/unknown', {}],
      ['/schedules/nightly/pause', undefined],
    ] as const) {
      const res = await app.inject({ method: 'POST', url, headers: bearer(READ), ...(payload ? { payload } : {}) });
      assert.equal(res.statusCode, 403, url);
      assert.deepEqual(res.json(), { detail: `This token may only read: POST ${url} needs an admin token` });
    }
  });

  it('lets every admin token call everything; the scheme is case-insensitive', async () => {
    for (const authorization of [`Bearer ${ADMIN}`, 'bearer second-admin', `BEARER ${ADMIN}`]) {
      const res = await app.inject({ method: 'POST', url: '/tasks/echo', headers: { authorization }, payload: { text: 'hi' } });
      assert.equal(res.statusCode, 202, authorization);
      const run = await app.inject({ method: 'GET', url: res.json().status_url, headers: { authorization } });
      assert.equal(run.statusCode, 200);
    }
    const cancel = await app.inject({ method: 'POST', url: `/runs/${runId}/cancel`, headers: bearer(ADMIN) });
    assert.equal(cancel.statusCode, 200);
  });

  it('keeps /healthz, /readyz, /docs and /openapi.json open', async () => {
    for (const url of ['/healthz', '/readyz', '/docs', '/openapi.json']) {
      const res = await app.inject({ method: 'GET', url });
      assert.equal(res.statusCode, 200, url);
    }
  });

  it("protects the app's own routes with requireScope", async () => {
    assert.equal((await app.inject({ method: 'GET', url: '/private' })).statusCode, 401);
    assert.equal((await app.inject({ method: 'GET', url: '/private', headers: bearer(READ) })).statusCode, 200);
  });

  it('is off when no token is configured', async () => {
    const open = await createServer({ errand, logger: false, docs: false, auth: {} });
    try {
      const res = await open.inject({ method: 'POST', url: '/tasks/echo?delay=600000', payload: { text: 'open' } });
      assert.equal(res.statusCode, 202);
    } finally {
      await open.close();
    }
  });

  it('refuses empty or whitespace tokens in the configuration', async () => {
    await assert.rejects(createServer({ errand, logger: false, auth: { admin: [''] } }), ConfigError);
    await assert.rejects(createServer({ errand, logger: false, auth: { read: ['a b'] } }), ConfigError);
    assert.throws(() => new TokenAuth({ admin: 'token' as unknown as string[] }), /must be an array/);
  });

  it('grants the scope of the matching token', () => {
    const auth = new TokenAuth({ admin: [ADMIN], read: [READ, ADMIN] });
    assert.equal(auth.scopeOf(ADMIN), 'admin');
    assert.equal(auth.scopeOf(READ), 'read');
    assert.equal(auth.scopeOf(''), null);
    assert.equal(auth.scopeOf('x'.repeat(10_000)), null);
  });
});

describe('authFromEnv', () => {
  it('reads comma-separated tokens, trimming spaces', () => {
    assert.deepEqual(authFromEnv({ ERRAND_ADMIN_TOKENS: 'a1, a2', ERRAND_READ_TOKENS: 'r1' }), { admin: ['a1', 'a2'], read: ['r1'] });
  });

  it('treats unset or blank variables as no tokens', () => {
    assert.deepEqual(authFromEnv({}), {});
    assert.deepEqual(authFromEnv({ ERRAND_ADMIN_TOKENS: '', ERRAND_READ_TOKENS: '  ' }), {});
  });

  it('refuses empty entries with a message naming the variable and the position', () => {
    assert.throws(
      () => authFromEnv({ ERRAND_ADMIN_TOKENS: 'a,,b' }),
      (err: Error) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, /^ERRAND_ADMIN_TOKENS has an empty entry at position 2 of 3/);
        return true;
      },
    );
    assert.throws(() => authFromEnv({ ERRAND_READ_TOKENS: 'r1,' }), /ERRAND_READ_TOKENS has an empty entry at position 2 of 2/);
    assert.throws(() => authFromEnv({ ERRAND_READ_TOKENS: 'r 1' }), /ERRAND_READ_TOKENS entry 1 contains whitespace/);
  });
});
