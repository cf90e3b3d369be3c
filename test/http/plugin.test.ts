// errandRoutes on an app's own Fastify instance, under a prefix: same answers as with createServer.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Errand } from '../../src/errand.ts';
import { errandRoutes, httpErrorHandler } from '../../src/http/index.ts';
import { defineTasks } from './setup.ts';
import { sqliteSetup } from '../fixtures/brokers.ts';

describe('errandRoutes on your own Fastify instance', () => {
  let errand: Errand;
  let app: FastifyInstance;

  before(async () => {
    errand = sqliteSetup('errand-http').app();
    defineTasks(errand);
    app = Fastify({ logger: false });
    app.setErrorHandler(httpErrorHandler);
    await app.register(errandRoutes, { prefix: '/api', errand, auth: { admin: ['admin-token'] }, bodyLimit: 2048 });
    app.get('/own', async () => ({ own: true }));
  });

  after(async () => {
    await app.close();
    await errand.close();
  });

  const admin = { authorization: 'Bearer admin-token' };

  it('serves the routes under the prefix, with prefixed URLs in answers', async () => {
    const res = await app.inject({ method: 'POST', url: '/api/tasks/echo', headers: admin, payload: { text: 'hi' } });
    assert.equal(res.statusCode, 202);
    assert.equal(res.json().status_url, `/api/runs/${res.json().id}`);
    assert.equal(res.json().events_url, `/api/runs/${res.json().id}/events`);
    const run = await app.inject({ method: 'GET', url: res.json().status_url, headers: admin });
    assert.equal(run.statusCode, 200);
    const tasks = await app.inject({ method: 'GET', url: '/api/tasks', headers: admin });
    assert.equal(tasks.json().tasks[0].enqueue_url, '/api/tasks/send_email');
  });

  it('answers in the same shapes: 422, 400 for __proto__, 413 with its own limit, 415, 401', async () => {
    const bad = await app.inject({ method: 'POST', url: '/api/tasks/send_email', headers: admin, payload: { email: 'x', name: 'A' } });
    assert.equal(bad.statusCode, 422);
    assert.deepEqual(bad.json().detail[0].loc, ['body', 'email']);
    const proto = await app.inject({
      method: 'POST',
      url: '/api/tasks/echo',
      headers: { ...admin, 'content-type': 'application/json' },
      payload: '{"text":"x","__proto__":{"a":1}}',
    });
    assert.equal(proto.statusCode, 400);
    const big = await app.inject({ method: 'POST', url: '/api/tasks/echo', headers: admin, payload: { text: 'x'.repeat(3000) } });
    assert.equal(big.statusCode, 413);
    assert.equal(big.json().detail, 'Request body is too large: the limit is 2048 bytes');
    const text = await app.inject({
      method: 'POST',
      url: '/api/tasks/echo',
      headers: { ...admin, 'content-type': 'text/plain' },
      payload: 'hi',
    });
    assert.equal(text.statusCode, 415);
    const anon = await app.inject({ method: 'GET', url: '/api/tasks' });
    assert.equal(anon.statusCode, 401);
    const health = await app.inject({ method: 'GET', url: '/api/healthz' });
    assert.equal(health.statusCode, 200);
  });

  it("leaves the app's own routes alone", async () => {
    const own = await app.inject({ method: 'GET', url: '/own' });
    assert.deepEqual(own.json(), { own: true });
  });
});
