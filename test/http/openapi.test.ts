// The OpenAPI 3.1 document and the interactive docs.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { createErrand, type Errand } from '../../src/errand.ts';
import { createServer } from '../../src/http/index.ts';
import { defineTasks, downBroker, quiet } from './setup.ts';

describe('OpenAPI document and /docs', () => {
  let errand: Errand;
  let app: FastifyInstance;
  let doc: {
    openapi: string;
    info: { title: string; version: string };
    // biome-ignore lint/suspicious/noExplicitAny: a JSON document, explored by the assertions
    paths: Record<string, Record<string, any>>;
    components?: { securitySchemes?: Record<string, unknown> };
  };

  before(async () => {
    errand = createErrand({ broker: downBroker(), logger: quiet });
    defineTasks(errand);
    errand.task('reports.build:v2', { input: z.object({ month: z.string().regex(/^\d{4}-\d{2}$/), at: z.date().optional() }) }, () => 1);
    app = await createServer({ errand, logger: false, title: 'Users service', version: '2.3.4', auth: { admin: ['a'.repeat(32)] } });
    app.withTypeProvider<ZodTypeProvider>().post(
      '/users',
      {
        schema: {
          summary: 'Create a user',
          body: z.object({ email: z.email(), name: z.string().min(1) }),
          response: { 201: z.object({ id: z.string() }) },
        },
      },
      async (_req, reply) => reply.code(201).send({ id: 'u1' }),
    );
    await app.ready();
    const res = await app.inject({ method: 'GET', url: '/openapi.json' });
    assert.equal(res.statusCode, 200);
    doc = res.json();
  });

  after(async () => {
    await app.close();
  });

  it('is OpenAPI 3.1 with the given title and version', () => {
    assert.equal(doc.openapi, '3.1.0');
    assert.equal(doc.info.title, 'Users service');
    assert.equal(doc.info.version, '2.3.4');
  });

  it("has one POST route per task whose body is the task's input schema", () => {
    for (const task of errand.tasks.values()) {
      const op = doc.paths[`/tasks/${task.name}`]?.post;
      assert.ok(op, `POST /tasks/${task.name} documented`);
      const schema = op.requestBody.content['application/json'].schema;
      const expected = z.toJSONSchema(task.schema, { io: 'input', target: 'draft-2020-12', unrepresentable: 'any' }) as Record<
        string,
        unknown
      >;
      assert.deepEqual(schema.properties, expected.properties, task.name);
      assert.deepEqual(schema.required, expected.required, task.name);
      assert.ok(op.responses['202'], '202 documented');
      assert.ok(op.responses['422'], '422 documented');
    }
    const email = doc.paths['/tasks/send_email']!.post;
    assert.equal(email.requestBody.content['application/json'].schema.properties.email.format, 'email');
    assert.match(email.description, /^Sends the welcome email/);
    const params = email.parameters.map((p: { in: string; name: string }) => `${p.in}:${p.name}`);
    for (const p of ['query:delay', 'query:run_at', 'query:priority', 'header:idempotency-key']) assert.ok(params.includes(p), p);
  });

  it('documents the run, health and task-list routes, hiding the catch-all and the docs routes', () => {
    for (const [path, method] of [
      ['/runs/{id}', 'get'],
      ['/runs/{id}/events', 'get'],
      ['/runs/{id}/cancel', 'post'],
      ['/runs/{id}/retry', 'post'],
      ['/tasks', 'get'],
      ['/healthz', 'get'],
      ['/readyz', 'get'],
    ] as const) {
      assert.ok(doc.paths[path]?.[method], `${method.toUpperCase()} ${path}`);
    }
    const run = doc.paths['/runs/{id}']!.get.responses['200'].content['application/json'].schema;
    for (const field of ['id', 'task', 'state', 'input', 'result', 'error', 'progress', 'attempts', 'enqueued_at', 'history']) {
      assert.ok(run.properties[field], field);
    }
    assert.ok(doc.paths['/runs/{id}/events']!.get.responses['200'].content['text/event-stream']);
    assert.equal(doc.paths['/tasks/{name}'], undefined);
    assert.ok(!Object.keys(doc.paths).some((p) => p.startsWith('/docs') || p === '/openapi.json'));
  });

  it("includes the app's own routes with their zod schemas", () => {
    const op = doc.paths['/users']?.post;
    assert.ok(op);
    assert.equal(op.summary, 'Create a user');
    assert.deepEqual(op.requestBody.content['application/json'].schema.required, ['email', 'name']);
    assert.ok(op.responses['201']);
  });

  it('declares bearer auth when tokens are configured', () => {
    assert.deepEqual(Object.keys(doc.components?.securitySchemes ?? {}), ['bearerAuth']);
    assert.deepEqual(doc.paths['/runs/{id}']!.get.security, [{ bearerAuth: [] }]);
    assert.deepEqual(doc.paths['/healthz']!.get.security, [], 'the probes say they are open');
  });

  it('serves the interactive docs as HTML at /docs, without a token', async () => {
    const res = await app.inject({ method: 'GET', url: '/docs' });
    assert.equal(res.statusCode, 200);
    assert.match(res.headers['content-type'] as string, /^text\/html/);
    assert.match(res.body, /<html/i);
    assert.match(res.body, /swagger/i);
    const css = await app.inject({ method: 'GET', url: '/docs/static/swagger-ui.css' });
    assert.equal(css.statusCode, 200, 'assets come from the package, not a CDN');
    assert.match(css.headers['content-type'] as string, /^text\/css/);
    const missing = await app.inject({ method: 'GET', url: '/docs/static/nope.css' });
    assert.equal(missing.statusCode, 404);
    assert.deepEqual(missing.json(), { detail: 'Not Found' });
    const json = await app.inject({ method: 'GET', url: '/docs/json' });
    assert.equal(json.statusCode, 200);
    assert.equal(json.json().openapi, '3.1.0');
  });

  it('can be turned off with docs: false', async () => {
    const s = await createServer({ errand, logger: false, docs: false });
    try {
      for (const url of ['/docs', '/openapi.json']) {
        const res = await s.inject({ method: 'GET', url });
        assert.equal(res.statusCode, 404, url);
      }
    } finally {
      await s.close();
    }
  });
});
