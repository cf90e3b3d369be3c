// The same service code on the other back ends: Redis as the broker (REDIS_URL, under a key prefix
// of its own: ERRAND_PREFIX) and PostgreSQL for the users (DATABASE_URL), with a real SMTP server.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { uniquePrefix, waitFor } from '../helpers.ts';
import {
  createPgDatabase,
  dropRedisPrefix,
  HOSTILE_USERNAMES,
  REDIS_URL,
  type SmtpPeer,
  startSmtp,
  startService,
  type TestService,
} from './support.ts';

const LONG = { timeoutMs: 60_000 }; // a safety net, not a timing assertion

describe('service on Redis and PostgreSQL', () => {
  let smtp: SmtpPeer;
  let db: Awaited<ReturnType<typeof createPgDatabase>>;
  let t: TestService;
  const prefix = uniquePrefix('errand-app-test');

  before(async () => {
    smtp = await startSmtp({ answer: (n) => (n === 2 ? { code: 451, text: '4.7.1 Greylisted, try again' } : undefined) });
    db = await createPgDatabase();
    t = await startService({ REDIS_URL, ERRAND_PREFIX: prefix, DATABASE_URL: db.url, SMTP_URL: smtp.url });
  });
  after(async () => {
    await t?.stop();
    await smtp?.close();
    await db?.drop();
    await dropRedisPrefix(prefix);
  });

  it('uses the configured back ends', async () => {
    assert.equal(t.service.users.kind, 'postgres');
    assert.equal((await t.service.errand.broker()).kind, 'redis');
    const ready = await t.request('GET', '/readyz');
    assert.equal(ready.status, 200);
    assert.equal(ready.json.broker, 'redis');
  });

  it('creates users and sends each one email, retrying a transient 451', async () => {
    const users: { id: string; email: string; username: string; run: string }[] = [];
    for (let i = 0; i < 6; i++) {
      const username = HOSTILE_USERNAMES[i % HOSTILE_USERNAMES.length]!;
      const email = `pg.redis.${i}@example.com`;
      const res = await t.request('POST', '/users/', { username, email });
      assert.equal(res.status, 201, JSON.stringify(res.json));
      users.push({ id: res.json.user.id, email, username, run: res.json.task.id });
    }
    await waitFor(() => smtp.received.length === users.length, { ...LONG, message: 'every email' });
    for (const u of users) {
      const run = await waitFor(async () => {
        const r = await t.service.errand.getRun(u.run);
        return r.state === 'succeeded' ? r : undefined;
      }, LONG);
      assert.equal(run.idempotencyKey, `welcome:${u.id}`);
      const mails = smtp.received.filter((m) => m.to[0] === u.email);
      assert.equal(mails.length, 1, `one email for ${u.email}`);
      assert.equal(mails[0]!.message.subject, `Welcome, ${u.username}!`);
      const got = await t.request('GET', `/users/${u.id}`);
      assert.equal(got.json.username, u.username);
      assert.equal(got.json.welcome_email.status, 'sent');
    }
    assert.equal(smtp.attempts, users.length + 1, 'one refused attempt, retried');
  });

  it('answers 409 for a taken email and pages through PostgreSQL', async () => {
    const dup = await t.request('POST', '/users/', { username: 'again', email: 'PG.REDIS.0@example.com' });
    assert.equal(dup.status, 409);
    assert.deepEqual(dup.json, { detail: 'A user with this email already exists' });
    const first = await t.request('GET', '/users/?limit=4');
    assert.equal(first.json.items.length, 4);
    const second = await t.request('GET', `/users/?limit=4&cursor=${encodeURIComponent(first.json.next)}`);
    assert.equal(second.json.items.length, 2);
    assert.equal(second.json.next, null);
    const offset = await t.request('GET', '/users/?limit=4&offset=4');
    assert.deepEqual(offset.json.items, second.json.items);
  });
});
