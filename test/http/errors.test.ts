// Every error answer of the HTTP layer, with its exact shape: FastAPI's {"detail": ...}.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import pino from 'pino';
import { z } from 'zod';
import { createErrand, type Errand } from '../../src/errand.ts';
import { createServer } from '../../src/http/index.ts';
import { tempDir } from '../helpers.ts';
import { defineTasks, downBroker, quiet } from './setup.ts';
import { sqliteSetup } from '../fixtures/brokers.ts';

const json = { 'content-type': 'application/json' };

describe('HTTP errors', () => {
  let errand: Errand;
  let app: FastifyInstance;
  const logLines: string[] = [];

  before(async () => {
    errand = sqliteSetup('errand-http').app();
    defineTasks(errand);
    const logger = pino({ level: 'info' }, { write: (line: string) => logLines.push(line) });
    app = await createServer({ errand, logger });
    const z$ = app.withTypeProvider<ZodTypeProvider>();
    z$.post(
      '/users/:team',
      {
        schema: {
          params: z.object({ team: z.string().regex(/^[a-z]+$/) }),
          querystring: z.object({ notify: z.enum(['yes', 'no']).optional() }),
          headers: z.looseObject({ 'x-tenant': z.string().min(3) }),
          body: z.object({ email: z.email(), age: z.number().int().min(0) }),
        },
      },
      async (request) => ({ ok: true, email: request.body.email }),
    );
    z$.get('/boom', async () => {
      throw new Error('secret internal detail');
    });
    z$.get('/teapot', async () => {
      throw Object.assign(new Error('I am a teapot'), { statusCode: 418 });
    });
  });

  after(async () => {
    await app.close();
    await errand.close();
  });

  describe('422 validation', () => {
    it('names each bad body field with loc, msg and type', async () => {
      const res = await app.inject({ method: 'POST', url: '/tasks/send_email', payload: { email: 'not-an-email', name: '' } });
      assert.equal(res.statusCode, 422);
      assert.match(res.headers['content-type'] as string, /^application\/json/);
      const body = res.json();
      assert.deepEqual(Object.keys(body), ['detail']);
      assert.deepEqual(
        body.detail.map((d: { loc: unknown; type: unknown }) => [d.loc, d.type]),
        [
          [['body', 'email'], 'invalid_format'],
          [['body', 'name'], 'too_small'],
        ],
      );
      for (const d of body.detail) {
        assert.deepEqual(Object.keys(d).sort(), ['loc', 'msg', 'type']);
        assert.equal(typeof d.msg, 'string');
        assert.ok(d.msg.length > 0);
      }
    });

    it('reports missing fields and a missing body', async () => {
      const missing = await app.inject({ method: 'POST', url: '/tasks/send_email', payload: { email: 'a@example.com' } });
      assert.equal(missing.statusCode, 422);
      assert.deepEqual(missing.json().detail[0].loc, ['body', 'name']);
      assert.equal(missing.json().detail[0].type, 'missing');
      assert.equal(missing.json().detail[0].msg, 'Field required');

      const none = await app.inject({ method: 'POST', url: '/tasks/send_email' });
      assert.equal(none.statusCode, 422);
      assert.deepEqual(none.json().detail, [{ loc: ['body'], msg: 'Field required', type: 'missing' }]);
    });

    it('reports query and header problems under "query" and "header", together with the body ones', async () => {
      const res = await app.inject({
        method: 'POST',
        url: '/tasks/send_email?delay=-5&priority=high&run_at=tomorrow',
        headers: { ...json, 'idempotency-key': 'k'.repeat(513) },
        payload: JSON.stringify({ email: 'nope' }),
      });
      assert.equal(res.statusCode, 422);
      const locs = res.json().detail.map((d: { loc: unknown }) => d.loc);
      assert.deepEqual(locs, [
        ['query', 'delay'],
        ['query', 'run_at'],
        ['query', 'priority'],
        ['header', 'idempotency-key'],
        ['body', 'email'],
        ['body', 'name'],
      ]);
    });

    it('refuses delay together with run_at', async () => {
      const res = await app.inject({
        method: 'POST',
        url: '/tasks/send_email?delay=10&run_at=2030-01-01T00:00:00Z',
        payload: { email: 'a@example.com', name: 'A' },
      });
      assert.equal(res.statusCode, 422);
      assert.deepEqual(res.json().detail, [{ loc: ['query', 'run_at'], msg: 'give either delay or run_at, not both', type: 'custom' }]);
    });

    it('a number out of range gets one issue, naming its own bound (not also the safe-integer one)', async () => {
      const res = await app.inject({
        method: 'POST',
        url: '/tasks/send_email?delay=1e20&priority=-1e20&expires_in=1e20',
        payload: { email: 'a@example.com', name: 'A' },
      });
      assert.equal(res.statusCode, 422);
      assert.deepEqual(res.json().detail, [
        { loc: ['query', 'delay'], msg: 'Too big: expected number to be <=3153600000000', type: 'too_big' },
        { loc: ['query', 'priority'], msg: 'Too small: expected number to be >=-1000', type: 'too_small' },
        { loc: ['query', 'expires_in'], msg: 'Too big: expected number to be <=3153600000000', type: 'too_big' },
      ]);
      // The same for a route's own body schema (int, then min).
      const user = await app.inject({
        method: 'POST',
        url: '/users/abc',
        headers: { 'x-tenant': 'acme' },
        payload: { email: 'a@example.com', age: -1e20 },
      });
      assert.equal(user.statusCode, 422);
      assert.deepEqual(user.json().detail, [{ loc: ['body', 'age'], msg: 'Too small: expected number to be >=0', type: 'too_small' }]);
    });

    it('refuses an option given empty (a number would read it as 0) or twice, naming it', async () => {
      const res = await app.inject({
        method: 'POST',
        url: '/tasks/send_email?priority=&delay=1&delay=2&expires_in=0',
        payload: { email: 'a@example.com', name: 'A' },
      });
      assert.equal(res.statusCode, 422);
      assert.deepEqual(res.json().detail, [
        { loc: ['query', 'delay'], msg: 'given more than once; give one value', type: 'value_error' },
        { loc: ['query', 'priority'], msg: 'is empty; give a value or leave the parameter out', type: 'value_error' },
        { loc: ['query', 'expires_in'], msg: 'Too small: expected number to be >=1', type: 'too_small' },
      ]);
    });

    it('refuses an empty Idempotency-Key', async () => {
      const res = await app.inject({
        method: 'POST',
        url: '/tasks/send_email',
        headers: { 'idempotency-key': '' },
        payload: { email: 'a@example.com', name: 'A' },
      });
      assert.equal(res.statusCode, 422);
      assert.deepEqual(res.json().detail[0].loc, ['header', 'idempotency-key']);
    });

    it("maps an input over the app's maxInputBytes (InputError from enqueue) to the same shape", async () => {
      const small = createErrand({ broker: downBroker(), logger: quiet, maxInputBytes: 64 });
      defineTasks(small);
      const s = await createServer({ errand: small, logger: false, docs: false });
      try {
        const res = await s.inject({ method: 'POST', url: '/tasks/echo', payload: { text: 'x'.repeat(200) } });
        assert.equal(res.statusCode, 422);
        assert.deepEqual(res.json().detail[0].loc, ['body']);
        assert.equal(res.json().detail[0].type, 'too_large');
        assert.match(res.json().detail[0].msg, /over the limit of 64 bytes/);
      } finally {
        await s.close();
      }
    });

    it("gives the app's own zod routes the same shape, with path, query and header locations", async () => {
      const body = await app.inject({
        method: 'POST',
        url: '/users/abc',
        headers: { 'x-tenant': 'acme' },
        payload: { email: 'x', age: -1 },
      });
      assert.equal(body.statusCode, 422);
      assert.deepEqual(
        body.json().detail.map((d: { loc: unknown }) => d.loc),
        [
          ['body', 'email'],
          ['body', 'age'],
        ],
      );
      const path = await app.inject({
        method: 'POST',
        url: '/users/ABC',
        headers: { 'x-tenant': 'acme' },
        payload: { email: 'a@b.co', age: 1 },
      });
      assert.equal(path.statusCode, 422);
      assert.deepEqual(path.json().detail[0].loc, ['path', 'team']);
      const query = await app.inject({
        method: 'POST',
        url: '/users/abc?notify=maybe',
        headers: { 'x-tenant': 'acme' },
        payload: { email: 'a@b.co', age: 1 },
      });
      assert.equal(query.statusCode, 422);
      assert.deepEqual(query.json().detail[0].loc, ['query', 'notify']);
      const header = await app.inject({
        method: 'POST',
        url: '/users/abc',
        headers: { 'x-tenant': 'a' },
        payload: { email: 'a@b.co', age: 1 },
      });
      assert.equal(header.statusCode, 422);
      assert.deepEqual(header.json().detail[0].loc, ['header', 'x-tenant']);
      const ok = await app.inject({
        method: 'POST',
        url: '/users/abc',
        headers: { 'x-tenant': 'acme' },
        payload: { email: 'a@b.co', age: 1 },
      });
      assert.equal(ok.statusCode, 200);
      assert.deepEqual(ok.json(), { ok: true, email: 'a@b.co' });
    });
  });

  describe('400, 413, 415', () => {
    it('answers 400 with a detail string for malformed JSON', async () => {
      const res = await app.inject({ method: 'POST', url: '/tasks/send_email', headers: json, payload: '{"email": "a@b.co",' });
      assert.equal(res.statusCode, 400);
      assert.equal(typeof res.json().detail, 'string');
      assert.match(res.json().detail, /^The body is not valid JSON/);
    });

    it('answers 400 for a body that is not UTF-8, rather than storing U+FFFD in its place', async () => {
      const payload = Buffer.concat([Buffer.from('{"email":"a@b.co","name":"b'), Buffer.from([0xff]), Buffer.from('"}')]);
      const res = await app.inject({ method: 'POST', url: '/tasks/send_email', headers: json, payload });
      assert.equal(res.statusCode, 400);
      assert.equal(res.json().detail, 'The body is not valid UTF-8 (a bad byte sequence at or just before byte 27)');
      // A valid multi-byte text passes.
      const ok = await app.inject({
        method: 'POST',
        url: '/tasks/send_email',
        headers: json,
        payload: Buffer.from('{"email":"a@b.co","name":"Zoë 🙂"}'),
      });
      assert.equal(ok.statusCode, 202);
    });

    it('answers 400 for an empty JSON body', async () => {
      const res = await app.inject({ method: 'POST', url: '/tasks/send_email', headers: json, payload: '' });
      assert.equal(res.statusCode, 400);
      assert.match(res.json().detail, /empty/);
    });

    for (const [label, payload] of [
      ['__proto__ at the top', '{"__proto__": {"admin": true}, "email": "a@b.co", "name": "A"}'],
      ['__proto__ nested', '{"email": "a@b.co", "name": "A", "extra": [{"deep": {"__proto__": {"x": 1}}}]}'],
      ['constructor.prototype', '{"constructor": {"prototype": {"admin": true}}, "email": "a@b.co", "name": "A"}'],
    ] as const) {
      it(`refuses prototype pollution (${label}) with 400`, async () => {
        const res = await app.inject({ method: 'POST', url: '/tasks/send_email', headers: json, payload });
        assert.equal(res.statusCode, 400);
        assert.match(res.json().detail, /is not allowed/);
        assert.equal(({} as Record<string, unknown>).admin, undefined);
      });
    }

    it('answers 413 naming the limit for a body over it', async () => {
      const s = await createServer({ errand, logger: false, docs: false, bodyLimit: 1024 });
      try {
        const res = await s.inject({
          method: 'POST',
          url: '/tasks/echo',
          headers: json,
          payload: JSON.stringify({ text: 'x'.repeat(2000) }),
        });
        assert.equal(res.statusCode, 413);
        assert.deepEqual(res.json(), { detail: 'Request body is too large: the limit is 1024 bytes' });
      } finally {
        await s.close();
      }
    });

    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/xml']) {
      it(`answers 415 for ${type}`, async () => {
        const res = await app.inject({ method: 'POST', url: '/tasks/echo', headers: { 'content-type': type }, payload: 'text=hi' });
        assert.equal(res.statusCode, 415);
        assert.match(res.json().detail, /^Unsupported media type ".+": send the body as application\/json$/);
      });
    }

    it('answers 415 naming the charset for JSON in a charset other than UTF-8 (it would be misread), on every route that reads a body', async () => {
      const detail = (charset: string) =>
        `Unsupported charset "${charset}": JSON bodies must be UTF-8 (RFC 8259); send the body as UTF-8, with charset=utf-8 or no charset`;
      const text = '{"text":"Zoë"}';
      for (const [type, charset, payload] of [
        ['application/json; charset=utf-16', 'utf-16', Buffer.from(text, 'utf16le')],
        ['application/json; charset=UTF-16LE', 'UTF-16LE', Buffer.from(text, 'utf16le')],
        ['application/json; charset=latin1', 'latin1', Buffer.from(text, 'latin1')],
        ['application/json;charset="ISO-8859-1"', 'ISO-8859-1', Buffer.from(text, 'latin1')],
        ['application/json; charset=us-ascii', 'us-ascii', Buffer.from('{"text":"Zoe"}')],
        ['application/merge-patch+json; charset=windows-1252', 'windows-1252', Buffer.from(text, 'latin1')],
        ['application/json; charset=no-such-charset', 'no-such-charset', Buffer.from(text)],
      ] as const) {
        const res = await app.inject({ method: 'POST', url: '/tasks/echo', headers: { 'content-type': type }, payload });
        assert.equal(res.statusCode, 415, `${type}: ${res.body}`);
        assert.deepEqual(res.json(), { detail: detail(charset) });
      }
      // The other routes that read a JSON body: the schedule routes and the dashboard's actions.
      const utf16 = { 'content-type': 'application/json; charset=utf-16' };
      for (const [method, url, body] of [
        ['PUT', '/schedules/nightly', { task: 'echo', every: '1h', input: { text: 'x' } }],
        ['POST', '/schedules/nightly/backfill', { from: 0, to: 1 }],
        ['POST', '/dashboard/api/queues/default/pause', {}],
        ['POST', '/dashboard/api/retry-failed', {}],
      ] as const) {
        const res = await app.inject({ method, url, headers: utf16, payload: Buffer.from(JSON.stringify(body), 'utf16le') });
        assert.equal(res.statusCode, 415, `${method} ${url}: ${res.body}`);
        assert.deepEqual(res.json(), { detail: detail('utf-16') });
      }
      assert.equal((await app.inject({ url: '/schedules/nightly' })).statusCode, 404, 'nothing stored');
    });

    it('accepts JSON in UTF-8 however the charset says it: utf-8 in any case, quoted, utf8, or none', async () => {
      for (const type of [
        'application/json',
        'application/json; charset=utf-8',
        'application/json; charset=UTF-8',
        'application/json; charset="utf-8"',
        'application/json;charset=utf8',
        'application/json; charset=UTF-8; profile=x',
        'application/merge-patch+json; charset=utf-8',
      ]) {
        const res = await app.inject({
          method: 'POST',
          url: '/tasks/echo',
          headers: { 'content-type': type },
          payload: Buffer.from('{"text":"Zoë"}'),
        });
        assert.equal(res.statusCode, 202, `${type}: ${res.body}`);
      }
    });

    it('accepts application/json with a charset and +json types', async () => {
      for (const type of ['application/json; charset=utf-8', 'application/merge-patch+json']) {
        const res = await app.inject({ method: 'POST', url: '/tasks/echo', headers: { 'content-type': type }, payload: '{"text":"hi"}' });
        assert.equal(res.statusCode, 202, type);
      }
    });
  });

  describe('404, 405, 409', () => {
    it('answers 404 {"detail":"Not Found"} for unknown routes', async () => {
      for (const url of ['/nope', '/runs', '/tasks/echo/extra', '/%E2%9C%93']) {
        const res = await app.inject({ method: 'GET', url });
        assert.equal(res.statusCode, 404, url);
        assert.deepEqual(res.json(), { detail: 'Not Found' });
      }
    });

    it('answers 404 for an unknown task, listing the known ones', async () => {
      const res = await app.inject({ method: 'POST', url: '/tasks/send_mail', payload: {} });
      assert.equal(res.statusCode, 404);
      assert.deepEqual(res.json(), { detail: 'Task "send_mail" not found; known tasks: echo, fail, send_email' });
    });

    it('answers 404 for unknown and malformed run ids, on every run route', async () => {
      const ids = ['default.01ARZ3NDEKTSV4RRFFQ69G5FAV', 'nope', "1' OR '1'='1", '..%2F..%2Fetc', 'x'.repeat(99)];
      for (const id of ids) {
        for (const [method, suffix] of [
          ['GET', ''],
          ['GET', '/events'],
          ['POST', '/cancel'],
          ['POST', '/retry'],
        ] as const) {
          const res = await app.inject({ method, url: `/runs/${encodeURIComponent(id)}${suffix}` });
          assert.equal(res.statusCode, 404, `${method} ${id.slice(0, 20)}${suffix}`);
          assert.match(res.json().detail, /^Run ".*" not found/);
        }
      }
    });

    it('answers 414 for a path parameter over 100 characters (no run id is that long)', async () => {
      const res = await app.inject({ method: 'GET', url: `/runs/${'x'.repeat(5000)}` });
      assert.equal(res.statusCode, 414);
      assert.equal(res.json().detail, `A path parameter is too long: "/runs/${'x'.repeat(94)}..."`, 'the path cut, not echoed whole');
      const bad = await app.inject({ method: 'GET', url: '/runs/%E0%A4%A' });
      assert.equal(bad.statusCode, 400);
      assert.deepEqual(bad.json(), { detail: 'The URL has a bad percent-encoding: "/runs/%E0%A4%A"' });
    });

    it('answers 405 with Allow for a known path and another method', async () => {
      const res = await app.inject({ method: 'DELETE', url: '/healthz' });
      assert.equal(res.statusCode, 405);
      assert.equal(res.headers.allow, 'GET, HEAD');
      assert.deepEqual(res.json(), { detail: 'Method Not Allowed' });
      const task = await app.inject({ method: 'GET', url: '/tasks/echo' });
      assert.equal(task.statusCode, 405);
      assert.equal(task.headers.allow, 'POST');
      const run = await app.inject({ method: 'DELETE', url: '/runs/default.01ARZ3NDEKTSV4RRFFQ69G5FAV' });
      assert.equal(run.statusCode, 405);
    });

    it('answers 409 naming the state when retrying a run that is neither failed nor cancelled; cancelling a cancelled run is 200', async () => {
      const enq = await app.inject({ method: 'POST', url: '/tasks/echo?delay=600000', payload: { text: 'later' } });
      assert.equal(enq.statusCode, 202);
      const { id } = enq.json();
      const retry = await app.inject({ method: 'POST', url: `/runs/${id}/retry` });
      assert.equal(retry.statusCode, 409);
      assert.deepEqual(retry.json(), { detail: `Run "${id}" is scheduled: only failed or cancelled runs can be retried` });
      const cancel = await app.inject({ method: 'POST', url: `/runs/${id}/cancel` });
      assert.equal(cancel.statusCode, 200);
      assert.deepEqual(cancel.json(), { id, state: 'cancelled', previous_state: 'scheduled' });
      const again = await app.inject({ method: 'POST', url: `/runs/${id}/cancel` });
      assert.equal(again.statusCode, 200);
      assert.deepEqual(again.json(), { id, state: 'cancelled', previous_state: 'cancelled' });
    });
  });

  describe('500', () => {
    it('answers 500 {"detail":"Internal Server Error"} for an unexpected error and logs it with the request id', async () => {
      const res = await app.inject({ method: 'GET', url: '/boom', headers: { 'x-request-id': 'req-boom-1' } });
      assert.equal(res.statusCode, 500);
      assert.deepEqual(res.json(), { detail: 'Internal Server Error' });
      assert.equal(res.headers['x-request-id'], 'req-boom-1');
      const line = logLines.map((l) => JSON.parse(l)).find((l) => l.reqId === 'req-boom-1' && l.level === 50);
      assert.ok(line, 'an error line with the request id');
      assert.match(line.err.message, /secret internal detail/);
      assert.ok(!res.body.includes('secret'));
    });

    it('passes through 4xx errors thrown by app routes', async () => {
      const res = await app.inject({ method: 'GET', url: '/teapot' });
      assert.equal(res.statusCode, 418);
      assert.deepEqual(res.json(), { detail: 'I am a teapot' });
    });

    it('makes up a request id when the given one is unfit, and echoes it', async () => {
      const res = await app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'bad id\twith spaces' } });
      assert.match(res.headers['x-request-id'] as string, /^[0-9a-f-]{36}$/);
    });
  });
});

describe('HTTP errors with the broker down', () => {
  let errand: Errand;
  let app: FastifyInstance;

  before(async () => {
    errand = createErrand({ broker: downBroker(), logger: quiet });
    defineTasks(errand);
    app = await createServer({ errand, logger: false });
  });

  after(async () => {
    await app.close();
  });

  const id = 'default.01ARZ3NDEKTSV4RRFFQ69G5FAV';
  for (const [method, url, payload] of [
    ['POST', '/tasks/echo', { text: 'hi' }],
    ['GET', `/runs/${id}`, undefined],
    ['GET', `/runs/${id}/events`, undefined],
    ['POST', `/runs/${id}/cancel`, undefined],
    ['POST', `/runs/${id}/retry`, undefined],
    ['GET', '/readyz', undefined],
  ] as const) {
    it(`${method} ${url.replace(id, '{id}')} answers 503 with Retry-After`, async () => {
      const res = await app.inject({ method, url, ...(payload ? { payload } : {}) });
      assert.equal(res.statusCode, 503);
      assert.equal(res.headers['retry-after'], '5');
      assert.deepEqual(res.json(), { detail: 'The task broker is unavailable; try again later' });
    });
  }

  it('still validates input first (422, not 503) and keeps /healthz at 200', async () => {
    const bad = await app.inject({ method: 'POST', url: '/tasks/echo', payload: { text: 1 } });
    assert.equal(bad.statusCode, 422);
    const health = await app.inject({ method: 'GET', url: '/healthz' });
    assert.equal(health.statusCode, 200);
    assert.deepEqual(health.json(), { status: 'ok' });
  });

  it('answers 503 when the broker URL cannot even connect', async () => {
    // A regular file where a folder should be: the SQLite file cannot be created.
    const file = join(tempDir('errand-http'), 'not-a-dir');
    writeFileSync(file, '');
    const unreachable = createErrand({ broker: `sqlite:${file}/sub/errand.db`, logger: quiet });
    defineTasks(unreachable);
    const s = await createServer({ errand: unreachable, logger: false, docs: false });
    try {
      const res = await s.inject({ method: 'POST', url: '/tasks/echo', payload: { text: 'hi' } });
      assert.equal(res.statusCode, 503);
      assert.equal(res.headers['retry-after'], '5');
      const ready = await s.inject({ method: 'GET', url: '/readyz' });
      assert.equal(ready.statusCode, 503);
    } finally {
      await s.close();
    }
  });
});

describe('request loggers', () => {
  it('bind the request id to every line logged, at the level set, and to nothing below it', async () => {
    const errand = sqliteSetup('errand-http').app();
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => lines.push(JSON.parse(line)) });
    const app = await createServer({ errand, logger, docs: false, dashboard: false });
    app.get('/logs', async (request) => {
      request.log.info('not logged at warn');
      request.log.warn({ step: 1 }, 'logged at warn');
      request.log.child({ part: 'inner' }).error('from a child');
      return { level: request.log.level };
    });
    try {
      const res = await app.inject({ method: 'GET', url: '/logs', headers: { 'x-request-id': 'req-log-1' } });
      assert.equal(res.statusCode, 200);
      assert.deepEqual(res.json(), { level: 'warn' });
      assert.deepEqual(
        lines.map((l) => [l.reqId, l.msg]),
        [
          ['req-log-1', 'logged at warn'],
          ['req-log-1', 'from a child'],
        ],
      );
      assert.equal(lines[0]!.step, 1);
      assert.equal(lines[1]!.part, 'inner');
      // At info, Fastify's own lines carry the request id too.
      logger.level = 'info';
      lines.length = 0;
      await app.inject({ method: 'GET', url: '/logs', headers: { 'x-request-id': 'req-log-2' } });
      assert.ok(lines.some((l) => l.reqId === 'req-log-2' && l.msg === 'incoming request'));
      assert.ok(lines.some((l) => l.reqId === 'req-log-2' && l.msg === 'not logged at warn'));
    } finally {
      await app.close();
      await errand.close();
    }
  });
});

describe('requests refused by the HTTP parser', () => {
  /** `request` sent raw; everything the server answers until it closes the connection. */
  function raw(port: number, request: string): Promise<string> {
    return new Promise((resolve) => {
      const socket = connect(port, '127.0.0.1');
      let response = '';
      socket.on('data', (c: Buffer) => {
        response += c.toString('utf8');
      });
      socket.on('error', () => {});
      socket.on('close', () => resolve(response));
      socket.write(request);
    });
  }

  it('answer in the same shape: headers too large (431), not HTTP (400)', async () => {
    const errand = createErrand({ broker: downBroker(), logger: quiet });
    const app = await createServer({ errand, logger: false, docs: false });
    await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const { port } = app.server.address() as { port: number };
      const big = await raw(port, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
      assert.match(big, /^HTTP\/1\.1 431 /);
      assert.match(big, /content-type: application\/json/i);
      assert.equal(big.slice(big.indexOf('\r\n\r\n') + 4), '{"detail":"The request headers are too large"}');
      const garbage = await raw(port, 'NOT HTTP AT ALL\r\n\r\n');
      assert.match(garbage, /^HTTP\/1\.1 400 /);
      assert.equal(garbage.slice(garbage.indexOf('\r\n\r\n') + 4), '{"detail":"The request is not valid HTTP"}');
    } finally {
      await app.close();
      await errand.close();
    }
  });
});
