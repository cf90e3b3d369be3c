// The enqueue route's flow options (docs/flow-control.md): expires_in / expires_at give a run a
// deadline to start (shown as start_by); a throttled task refuses an Idempotency-Key, naming it.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { Errand } from '../../src/errand.ts';
import { errandRoutes, httpErrorHandler } from '../../src/http/index.ts';
import { sqliteSetup } from '../fixtures/brokers.ts';

describe('enqueue over HTTP: expiry and throttle', () => {
  let errand: Errand;
  let app: FastifyInstance;
  const admin = { authorization: 'Bearer admin-token' };

  before(async () => {
    errand = sqliteSetup('errand-http-flow').app();
    errand.task('ping', { input: z.object({ user: z.string() }) }, () => 1);
    errand.task('alert', { input: z.object({ user: z.string() }), throttle: { key: (i) => i.user, window: 60_000 } }, () => 1);
    app = Fastify({ logger: false });
    app.setErrorHandler(httpErrorHandler);
    await app.register(errandRoutes, { errand, auth: { admin: ['admin-token'] } });
  });
  after(async () => {
    await app.close();
    await errand.close();
  });

  it('expires_at and expires_in set the deadline; both at once is a 422 naming expires_at', async () => {
    const at = '2099-01-01T00:00:00.000Z';
    const res = await app.inject({ method: 'POST', url: `/tasks/ping?expires_at=${at}`, headers: admin, payload: { user: 'a' } });
    assert.equal(res.statusCode, 202);
    const run = await app.inject({ method: 'GET', url: res.json().status_url, headers: admin });
    assert.equal(run.json().start_by, at);
    const rel = await app.inject({ method: 'POST', url: '/tasks/ping?expires_in=60000', headers: admin, payload: { user: 'a' } });
    const relRun = (await app.inject({ method: 'GET', url: rel.json().status_url, headers: admin })).json();
    assert.equal(Date.parse(relRun.start_by) - Date.parse(relRun.enqueued_at), 60_000);
    const both = await app.inject({
      method: 'POST',
      url: `/tasks/ping?expires_in=5&expires_at=${at}`,
      headers: admin,
      payload: { user: 'a' },
    });
    assert.equal(both.statusCode, 422);
    assert.deepStrictEqual(both.json().detail[0].loc, ['query', 'expires_at']);
    const past = await app.inject({
      method: 'POST',
      url: '/tasks/ping?expires_at=2001-01-01T00:00:00Z',
      headers: admin,
      payload: { user: 'a' },
    });
    assert.equal(past.statusCode, 422);
    assert.deepStrictEqual(past.json().detail[0].loc, ['query', 'expires_at']);
  });

  it('a throttled task returns the first run within the window and refuses an Idempotency-Key', async () => {
    const a = await app.inject({ method: 'POST', url: '/tasks/alert', headers: admin, payload: { user: 'ann' } });
    const b = await app.inject({ method: 'POST', url: '/tasks/alert', headers: admin, payload: { user: 'ann' } });
    assert.equal(b.json().id, a.json().id);
    assert.equal(b.json().created, false);
    const keyed = await app.inject({
      method: 'POST',
      url: '/tasks/alert',
      headers: { ...admin, 'idempotency-key': 'k1' },
      payload: { user: 'bob' },
    });
    assert.equal(keyed.statusCode, 422);
    assert.deepStrictEqual(keyed.json().detail[0].loc, ['header', 'idempotency-key']);
  });
});
