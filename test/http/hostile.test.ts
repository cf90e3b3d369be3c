// Hostile input never yields a 5xx: odd strings round-trip exactly, wrong types and bad encodings
// get 4xx, and random bodies, queries, headers and paths (fast-check) never reach a 500.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import type { Errand } from '../../src/errand.ts';
import { createServer } from '../../src/http/index.ts';
import { defineTasks } from './setup.ts';
import { sqliteSetup } from '../fixtures/brokers.ts';

const json = { 'content-type': 'application/json' };

describe('hostile input', () => {
  let errand: Errand;
  let app: FastifyInstance;

  before(async () => {
    errand = sqliteSetup('errand-http').app();
    defineTasks(errand);
    app = await createServer({ errand, logger: false, bodyLimit: 1024 * 1024 });
  });

  after(async () => {
    await app.close();
    await errand.close();
  });

  const strange = [
    "'; DROP TABLE runs; --",
    '" OR 1=1 --',
    "Robert'); DELETE FROM runs WHERE ('1'='1",
    '<script>alert("x")</script>',
    '<img src=x onerror=alert(1)>',
    '👩‍👩‍👧‍👦 family, 🇫🇷 flag, 🧪',
    'مرحبا بالعالم \u202e reversed',
    'null\u0000byte',
    'line\nbreak\r\nand\ttab',
    '\u2028\u2029 separators',
    '{"not": "parsed"}',
    '%00%2e%2e%2f',
    '$' + '{process.exit()}',
    '__proto__',
    'a'.repeat(10_000),
  ];

  it('round-trips SQL-looking strings, HTML, emoji and control characters exactly', async () => {
    for (const text of strange) {
      // As a key too (except __proto__, which is refused: see below).
      const key = text === '__proto__' ? 'proto' : text.slice(0, 50);
      const input = { text, tags: [text, text.toUpperCase()], extra: { [key]: text } };
      const enq = await app.inject({ method: 'POST', url: '/tasks/echo?delay=600000', headers: json, payload: JSON.stringify(input) });
      assert.equal(enq.statusCode, 202, text.slice(0, 30));
      const run = await app.inject({ method: 'GET', url: enq.json().status_url });
      assert.equal(run.statusCode, 200);
      assert.match(run.headers['content-type'] as string, /^application\/json/);
      assert.deepEqual(run.json().input, input, text.slice(0, 30));
    }
  });

  it('answers 422 (never 5xx) for wrong types', async () => {
    const bodies: unknown[] = [
      null,
      [],
      'text',
      42,
      true,
      { text: 42 },
      { text: ['a'] },
      { text: { $gt: '' } },
      { text: 'ok', n: 1.5 },
      { text: 'ok', n: '1' },
      { text: 'ok', tags: 'a' },
      { text: 'ok', tags: [1, 2] },
    ];
    for (const body of bodies) {
      const payload = JSON.stringify(body);
      const res = await app.inject({ method: 'POST', url: '/tasks/echo', headers: json, payload });
      assert.equal(res.statusCode, 422, payload);
      assert.ok(Array.isArray(res.json().detail));
      assert.equal(res.json().detail[0].loc[0], 'body');
    }
  });

  it('answers 422 for a number out of range (1e400 parses to Infinity)', async () => {
    const res = await app.inject({ method: 'POST', url: '/tasks/echo', headers: json, payload: '{"text":"ok","n":1e400}' });
    assert.equal(res.statusCode, 422);
    assert.deepEqual(res.json().detail[0].loc, ['body', 'n']);
  });

  it('answers 413 for bodies over the limit, 422 for nesting too deep', async () => {
    const big = await app.inject({
      method: 'POST',
      url: '/tasks/echo',
      headers: json,
      payload: JSON.stringify({ text: 'x'.repeat(1024 * 1024) }),
    });
    assert.equal(big.statusCode, 413);
    const n = 400_000; // close to the 1 MiB default limit: the checks stay linear
    const deep = `{"text":"x","extra":${'['.repeat(n)}${']'.repeat(n)}}`;
    const res = await app.inject({ method: 'POST', url: '/tasks/echo', headers: json, payload: deep });
    assert.equal(res.statusCode, 422);
    assert.equal(res.json().detail[0].type, 'too_deep');
    assert.deepEqual(res.json().detail[0].loc.slice(0, 2), ['body', 'extra']);
  });

  it('refuses __proto__ keys anywhere and pollutes nothing', async () => {
    for (const payload of [
      '{"text":"x","__proto__":{"polluted":1}}',
      '{"text":"x","extra":{"a":[{"__proto__":{"polluted":1}}]}}',
      '{"text":"x","extra":{"constructor":{"prototype":{"polluted":1}}}}',
      '[{"__proto__":{"polluted":1}}]',
      // Keys spelled with escapes are the same keys once parsed.
      '{"text":"x","\\u005f_proto__":{"polluted":1}}',
      '{"text":"x","extra":{"\\u0063onstructor":{"prototype":{"polluted":1}}}}',
    ]) {
      const res = await app.inject({ method: 'POST', url: '/tasks/echo', headers: json, payload });
      assert.equal(res.statusCode, 400, payload);
      assert.equal(({} as Record<string, unknown>).polluted, undefined);
    }
  });

  it('answers 400 for invalid UTF-8, truncated JSON and non-JSON bytes', async () => {
    for (const payload of [Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]), '{"text": "x"', '\u0000\u0001', 'NaN', "{'text': 'x'}"]) {
      const res = await app.inject({ method: 'POST', url: '/tasks/echo', headers: json, payload });
      assert.ok(res.statusCode === 400 || res.statusCode === 422, `${res.statusCode} for ${String(payload)}`);
    }
  });

  it('never answers 5xx to random JSON bodies (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue({ maxDepth: 4 }), async (value) => {
        const res = await app.inject({ method: 'POST', url: '/tasks/echo?delay=600000', headers: json, payload: JSON.stringify(value) });
        assert.ok(res.statusCode < 500, `${res.statusCode} ${res.body}`);
        assert.ok([202, 400, 422].includes(res.statusCode), `${res.statusCode}`);
      }),
      { numRuns: 150 },
    );
  });

  it('never answers 5xx to random raw bodies, queries and headers (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.string({ maxLength: 200, unit: 'binary' }),
        fc.dictionary(fc.constantFrom('delay', 'run_at', 'priority', 'x'), fc.string({ maxLength: 30 })),
        fc.string({ maxLength: 600 }),
        fc.constantFrom('application/json', 'text/plain', 'application/json; charset=latin1', 'multipart/form-data', ''),
        async (body, query, key, type) => {
          const qs = new URLSearchParams(query).toString();
          const headers: Record<string, string> = { 'idempotency-key': key.replace(/[^\x20-\x7e]/g, '') };
          if (type) headers['content-type'] = type;
          const res = await app.inject({ method: 'POST', url: `/tasks/echo?${qs}`, headers, payload: body });
          assert.ok(res.statusCode < 500, `${res.statusCode} ${res.body}`);
          assert.equal(typeof res.json().detail === 'undefined' ? 'ok' : 'detail', res.statusCode === 202 ? 'ok' : 'detail');
        },
      ),
      { numRuns: 200 },
    );
  });

  it('never answers 5xx to random paths and methods (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'),
        fc.constantFrom('/runs/', '/tasks/', '/', '/runs/default.', '/docs/'),
        fc.string({ maxLength: 120 }),
        fc.constantFrom('', '/events', '/cancel', '/retry'),
        async (method, base, middle, suffix) => {
          const res = await app.inject({ method, url: base + encodeURIComponent(middle) + suffix });
          assert.ok(res.statusCode < 500, `${method} ${base}${middle}${suffix}: ${res.statusCode} ${res.body}`);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('never answers 5xx to malformed percent-encoding in the path', async () => {
    for (const url of ['/runs/%', '/runs/%zz', '/tasks/%E0%A4%A', '/%c0%af', '/runs/a%00b']) {
      const res = await app.inject({ method: 'GET', url });
      assert.ok(res.statusCode >= 400 && res.statusCode < 500, `${url}: ${res.statusCode}`);
      assert.equal(typeof res.json().detail, 'string');
    }
  });
});
