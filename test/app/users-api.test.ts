// The users routes over HTTP (Fastify inject on the real app, embedded default): validation in
// FastAPI's 422 shape, 409 on a taken email, 404, pagination, auth on reads, the OpenAPI document.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { CreateUserSchema, quickCreateUser } from '../../app/routes.ts';
import { SqliteUserStore } from '../../app/users/sqlite-store.ts';
import type { UserStore } from '../../app/users/store.ts';
import { type Broker, connectBroker } from '../../src/index.ts';
import { settledFlag, settleTurns, tempDir, waitFor } from '../helpers.ts';
import { startService, type TestService } from './support.ts';

describe('users API', () => {
  let t: TestService;
  before(async () => {
    // No worker: these tests are about the API; the runs just wait in the queue.
    t = await startService({}, { worker: false });
  });
  after(() => t.stop());

  it('creates a user: 201 with the user, the run and a Location', async () => {
    const res = await t.request('POST', '/users/', { username: 'john.doe', email: 'john.doe@example.com' });
    assert.equal(res.status, 201);
    assert.equal(res.json.message, 'User created and welcome email scheduled!');
    assert.deepEqual(Object.keys(res.json.user).sort(), ['created_at', 'email', 'id', 'username']);
    assert.equal(res.json.user.username, 'john.doe');
    assert.equal(res.json.user.email, 'john.doe@example.com');
    assert.ok(!Number.isNaN(Date.parse(res.json.user.created_at)));
    assert.match(res.json.task.id, /^emails\./);
    assert.equal(res.json.task.status_url, `/runs/${res.json.task.id}`);
    assert.equal(res.headers.location, `/users/${res.json.user.id}`);
    const run = await t.request('GET', res.json.task.status_url);
    assert.equal(run.status, 200);
    assert.equal(run.json.task, 'send_welcome_email');
    assert.equal(run.json.state, 'queued');
    const again = await t.request('GET', `/users/${res.json.user.id}`);
    assert.equal(again.json.welcome_email.status, 'scheduled');
    assert.equal(again.json.welcome_email.run_id, res.json.task.id);
  });

  it('answers 409 for an email already taken, in any case', async () => {
    const first = await t.request('POST', '/users/', { username: 'mary', email: 'mary@example.com' });
    assert.equal(first.status, 201);
    for (const email of ['mary@example.com', 'MARY@Example.COM']) {
      const res = await t.request('POST', '/users/', { username: 'mary2', email });
      assert.equal(res.status, 409);
      assert.deepEqual(res.json, { detail: 'A user with this email already exists' });
    }
  });

  it('answers concurrent creates each on its own: one 409 for a taken email, 201 for the others, all stored and scheduled', async () => {
    const emails = ['burst.a@example.com', 'burst.b@example.com', 'BURST.A@example.com', 'burst.c@example.com', 'burst.d@example.com'];
    const answers = await Promise.all(emails.map((email, i) => t.request('POST', '/users/', { username: `burst ${i}`, email })));
    assert.deepEqual(
      answers.map((a) => a.status),
      [201, 201, 409, 201, 201],
    );
    assert.deepEqual(answers[2]!.json, { detail: 'A user with this email already exists' });
    for (const a of answers.filter((x) => x.status === 201)) {
      assert.equal(a.json.message, 'User created and welcome email scheduled!');
      const got = await t.request('GET', `/users/${a.json.user.id}`);
      assert.equal(got.status, 200);
      assert.equal(got.json.email, a.json.user.email);
      assert.equal(got.json.welcome_email.status, 'scheduled');
      assert.equal(got.json.welcome_email.run_id, a.json.task.id);
    }
    assert.equal(new Set(answers.filter((x) => x.status === 201).map((a) => a.json.task.id)).size, 4);
  });

  it('accepts /users without the trailing slash too', async () => {
    const res = await t.request('POST', '/users', { username: 'noslash', email: 'noslash@example.com' });
    assert.equal(res.status, 201);
    assert.equal((await t.request('GET', '/users?limit=1')).status, 200);
  });

  const invalid: [string, unknown, (string | number)[]][] = [
    ['a missing email', { username: 'x' }, ['body', 'email']],
    ['a missing username', { email: 'x@example.com' }, ['body', 'username']],
    ['an email that is not one', { username: 'x', email: 'not-an-email' }, ['body', 'email']],
    ['an email without a domain dot', { username: 'x', email: 'a@localhost' }, ['body', 'email']],
    ['an email with a display name', { username: 'x', email: 'X <x@example.com>' }, ['body', 'email']],
    ['two emails', { username: 'x', email: 'a@example.com,b@example.com' }, ['body', 'email']],
    ['an email of 255 characters', { username: 'x', email: `${'a'.repeat(243)}@example.com` }, ['body', 'email']],
    ['an empty username', { username: '', email: 'x@example.com' }, ['body', 'username']],
    ['a blank username', { username: '   ', email: 'x@example.com' }, ['body', 'username']],
    ['a username of 65 characters', { username: 'x'.repeat(65), email: 'x@example.com' }, ['body', 'username']],
    ['a username of 65 emoji', { username: '😀'.repeat(65), email: 'x@example.com' }, ['body', 'username']],
    ['a username with a newline', { username: 'a\nBcc: victim@example.com', email: 'x@example.com' }, ['body', 'username']],
    ['a username with NUL', { username: 'a\u0000b', email: 'x@example.com' }, ['body', 'username']],
    ['a username with a tab', { username: 'a\tb', email: 'x@example.com' }, ['body', 'username']],
    ['a username with a line separator', { username: 'a\u2028b', email: 'x@example.com' }, ['body', 'username']],
    ['a username that is a number', { username: 42, email: 'x@example.com' }, ['body', 'username']],
  ];
  for (const [what, body, loc] of invalid) {
    it(`answers 422 naming the field for ${what}`, async () => {
      const res = await t.request('POST', '/users/', body);
      assert.equal(res.status, 422, JSON.stringify(res.json));
      assert.ok(Array.isArray(res.json.detail));
      const item = res.json.detail.find((d: { loc: unknown[] }) => JSON.stringify(d.loc) === JSON.stringify(loc));
      assert.ok(item, `no detail at ${JSON.stringify(loc)}: ${JSON.stringify(res.json.detail)}`);
      assert.equal(typeof item.msg, 'string');
      assert.equal(typeof item.type, 'string');
    });
  }

  it('says a missing email is missing, and a malformed one is not an address', async () => {
    const missing = await t.request('POST', '/users/', { username: 'x' });
    assert.equal(missing.status, 422);
    assert.deepEqual(missing.json.detail, [{ loc: ['body', 'email'], msg: 'Field required', type: 'missing' }]);
    const bad = await t.request('POST', '/users/', { username: 'x', email: 'not-an-email' });
    assert.equal(bad.status, 422);
    assert.deepEqual(bad.json.detail, [{ loc: ['body', 'email'], msg: 'must be a valid email address', type: 'invalid_format' }]);
  });

  it('answers 422 for a username with a lone surrogate', async () => {
    const res = await t.request('POST', '/users/', '{"username":"a\\ud800b","email":"x@example.com"}');
    assert.equal(res.status, 422);
    assert.deepEqual(res.json.detail[0].loc, ['body', 'username']);
  });

  it('answers 400 for a body that is not JSON and 415 for another media type', async () => {
    const bad = await t.request('POST', '/users/', '{"username":');
    assert.equal(bad.status, 400);
    assert.equal(typeof bad.json.detail, 'string');
    const server = await t.service.buildServer();
    const form = await server.inject({
      method: 'POST',
      url: '/users/',
      payload: 'username=x&email=x@example.com',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    assert.equal(form.statusCode, 415);
  });

  it('answers 404 for a user that does not exist', async () => {
    for (const id of ['01ARZ3NDEKTSV4RRFFQ69G5FAV', '42', "1' OR '1'='1", 'x'.repeat(90)]) {
      const res = await t.request('GET', `/users/${encodeURIComponent(id)}`);
      assert.equal(res.status, 404);
      assert.deepEqual(res.json, { detail: 'User not found' });
    }
  });

  it('pages through users with limit and cursor, or limit and offset', async () => {
    const mine = new Set<string>();
    for (let i = 0; i < 12; i++) {
      const res = await t.request('POST', '/users/', { username: `pager${i}`, email: `pager${i}@example.com` });
      mine.add(res.json.user.id);
    }
    const seen: string[] = [];
    let url = '/users/?limit=5';
    for (;;) {
      const res = await t.request('GET', url);
      assert.equal(res.status, 200);
      assert.ok(res.json.items.length <= 5);
      seen.push(...res.json.items.map((u: { id: string }) => u.id));
      if (res.json.next === null) break;
      url = `/users/?limit=5&cursor=${encodeURIComponent(res.json.next)}`;
    }
    assert.equal(new Set(seen).size, seen.length, 'no user twice');
    for (const id of mine) assert.ok(seen.includes(id));
    assert.deepEqual(seen, [...seen].sort(), 'creation order');

    const byOffset: string[] = [];
    for (let offset = 0; ; offset += 4) {
      const res = await t.request('GET', `/users/?limit=4&offset=${offset}`);
      byOffset.push(...res.json.items.map((u: { id: string }) => u.id));
      if (res.json.next === null) break;
    }
    assert.deepEqual(byOffset, seen);

    const def = await t.request('GET', '/users/');
    assert.equal(def.json.items.length, Math.min(20, seen.length));
  });

  const badQueries: [string, string][] = [
    ['limit=0', 'limit'],
    ['limit=101', 'limit'],
    ['limit=abc', 'limit'],
    ['limit=2.5', 'limit'],
    ['offset=-1', 'offset'],
    ['cursor=nope', 'cursor'],
    ['cursor=%27%20OR%201%3D1', 'cursor'],
    ['offset=0&cursor=dTE6MDFBUlozTkRFS1RTVjRSUkZGUTY5RzVGQVY', 'cursor'],
  ];
  for (const [query, field] of badQueries) {
    it(`answers 422 for ?${query}`, async () => {
      const res = await t.request('GET', `/users/?${query}`);
      assert.equal(res.status, 422, JSON.stringify(res.json));
      assert.deepEqual(res.json.detail[0].loc, ['query', field]);
    });
  }

  it('documents the routes and their schemas in /openapi.json, with docs at /docs', async () => {
    const res = await t.request('GET', '/openapi.json');
    assert.equal(res.status, 200);
    const doc = res.json;
    assert.match(doc.openapi, /^3\.1/);
    const create = doc.paths['/users/'].post;
    const body = create.requestBody.content['application/json'].schema;
    assert.deepEqual(body.required.sort(), ['email', 'username']);
    assert.equal(body.properties.username.maxLength, 64);
    assert.equal(body.properties.email.format, 'email');
    assert.ok(create.responses['201']);
    assert.ok(create.responses['409']);
    assert.ok(create.responses['422']);
    assert.ok(doc.paths['/users/'].get.parameters.some((p: { name: string }) => p.name === 'cursor'));
    assert.ok(doc.paths['/users/{id}'].get);
    assert.equal(doc.paths['/users'], undefined, 'the slash-less alias is not documented twice');
    assert.ok(doc.paths['/tasks/send_welcome_email']);
    const docs = await (await t.service.buildServer()).inject({ method: 'GET', url: '/docs' });
    assert.ok(docs.statusCode === 200 || docs.statusCode === 302, `GET /docs answered ${docs.statusCode}`);
  });
});

describe('users API with its database down', () => {
  it('answers 503 with Retry-After, never a bare 500', async () => {
    const store = new SqliteUserStore({ path: join(tempDir('errand-app'), 'users.db') });
    await store.init();
    let down = false;
    const flaky = new Proxy(store, {
      get(target, prop) {
        const v = Reflect.get(target, prop, target);
        if (typeof v !== 'function') return v;
        return (...args: unknown[]) => {
          if (down && prop !== 'close') return Promise.reject(new Error('Connection terminated unexpectedly'));
          return v.apply(target, args);
        };
      },
    }) as UserStore;
    const t = await startService({}, { users: flaky, worker: false });
    try {
      const created = await t.request('POST', '/users/', { username: 'before', email: 'before@example.com' });
      assert.equal(created.status, 201);
      down = true;
      for (const [method, url] of [
        ['POST', '/users/'],
        ['GET', '/users/'],
        ['GET', `/users/${created.json.user.id}`],
      ] as const) {
        const res = await t.request(method, url, method === 'POST' ? { username: 'x', email: 'x@example.com' } : undefined);
        assert.equal(res.status, 503, `${method} ${url}`);
        assert.deepEqual(res.json, { detail: 'The user database is unavailable; try again later' });
        assert.ok(res.headers['retry-after']);
      }
    } finally {
      await t.stop();
      await store.close();
    }
  });
});

describe('users API with a task queue that does not answer', () => {
  it('answers 201 with task null once each request has waited enqueueTimeoutMs, and leaves the users pending for the sweep', async () => {
    const dataDir = tempDir('errand-app');
    const real = await connectBroker(`sqlite:${join(dataDir, 'errand.db')}`);
    const hanging = new Proxy(real, {
      get(target, prop) {
        // enqueue, and createWorkflow (the sign-up workflow, app/onboarding.ts)
        if (prop === 'enqueue' || prop === 'createWorkflow') return () => new Promise(() => {});
        const v = Reflect.get(target, prop, target);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    }) as Broker;
    const t = await startService({ DATA_DIR: dataDir }, { broker: hanging, worker: false, enqueueTimeoutMs: 1000 });
    try {
      const post = (i: number) => t.request('POST', '/users/', { username: `slow ${i}`, email: `slow.${i}@example.com` });
      const answers = [await post(1)];
      // Started after the first one gave up, each later request still waits for its own enqueue
      // (its own time, not what was left of the first one's): once its user is stored (the enqueue
      // comes next), it has not answered.
      const later = [post(2), post(3)];
      const laterAnswered = later.map(settledFlag);
      await waitFor(async () => (await t.service.users.list({ limit: 10, offset: 0 })).items.length === 3, {
        message: 'the later requests to store their users',
      });
      await settleTurns();
      assert.deepEqual(
        laterAnswered.map((a) => a.settled),
        [false, false],
        'the later requests wait for their enqueue instead of answering at once',
      );
      answers.push(...(await Promise.all(later)));
      for (const res of answers) {
        assert.equal(res.status, 201);
        assert.equal(res.json.task, null);
        assert.match(res.json.message, /will be scheduled/);
        assert.equal((await t.service.users.welcomeStatus(res.json.user.id))?.state, 'pending');
      }
    } finally {
      await t.stop();
    }
  });
});

describe('users API with tokens', () => {
  it('needs a read token to read users; signing up stays open', async () => {
    const t = await startService({ ERRAND_ADMIN_TOKENS: 'admin-secret', ERRAND_READ_TOKENS: 'read-secret' }, { worker: false });
    try {
      const server = await t.service.buildServer();
      const created = await t.request('POST', '/users/', { username: 'open', email: 'open@example.com' });
      assert.equal(created.status, 201);
      assert.equal((await t.request('GET', '/users/')).status, 401);
      assert.equal((await t.request('GET', `/users/${created.json.user.id}`)).status, 401);
      const wrong = await server.inject({ method: 'GET', url: '/users/', headers: { authorization: 'Bearer nope' } });
      assert.equal(wrong.statusCode, 401);
      for (const token of ['read-secret', 'admin-secret']) {
        const ok = await server.inject({
          method: 'GET',
          url: `/users/${created.json.user.id}`,
          headers: { authorization: `Bearer ${token}` },
        });
        assert.equal(ok.statusCode, 200);
      }
    } finally {
      await t.stop();
    }
  });
});

describe('the quick check of POST /users/ bodies', () => {
  it('accepts only what CreateUserSchema accepts, with the same output', () => {
    const text = fc.oneof(
      fc.string({ maxLength: 70 }),
      fc.string({ unit: 'grapheme', maxLength: 70 }),
      fc.string({ unit: 'binary', maxLength: 70 }),
      fc.constantFrom('', ' ', '\t', 'a\nb', '\u2028', 'x'.repeat(64), 'x'.repeat(65), '😀'.repeat(64), '\uD800'),
    );
    const email = fc.oneof(
      fc.emailAddress(),
      text,
      fc.tuple(text, text).map(([a, b]) => `${a}@${b}.com`),
      fc.constant(`${'a'.repeat(250)}@x.co`),
    );
    const body = fc.oneof(
      fc.record({ username: text, email }),
      fc.record({ username: text, email, extra: fc.anything() }),
      fc.record({ username: fc.anything(), email: fc.anything() }, { requiredKeys: [] }),
      fc.anything(),
    );
    fc.assert(
      fc.property(body, (data) => {
        const quick = quickCreateUser(data);
        if (quick === undefined) return; // the schema decides
        const full = CreateUserSchema.safeParse(data);
        assert.ok(full.success, `quick check accepted ${JSON.stringify(data)}`);
        assert.deepEqual(quick, full.data);
      }),
      { numRuns: 5000 },
    );
    // And it does take the common case.
    assert.deepEqual(quickCreateUser({ username: 'john.doe', email: 'john.doe@example.com' }), {
      username: 'john.doe',
      email: 'john.doe@example.com',
    });
  });
});
