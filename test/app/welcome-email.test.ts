// The welcome email, end to end on the embedded default (SQLite broker + SQLite users) with a real
// SMTP server: delivery, retries on transient failures, no retry on permanent ones, one email per
// user, the development outbox, and a broker that is down when the user signs up.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { escapeHtml } from '../../app/email.ts';
import { BrokerUnavailableError, type Broker, connectBroker } from '../../src/index.ts';
import { tempDir, waitFor } from '../helpers.ts';
import { HOSTILE_USERNAMES, parseMail, type SmtpPeer, startSmtp, startService, type TestService } from './support.ts';

const LONG = { timeoutMs: 60_000 }; // a safety net, not a timing assertion

async function createUser(t: TestService, username: string, email: string) {
  const res = await t.request('POST', '/users/', { username, email });
  assert.equal(res.status, 201, JSON.stringify(res.json));
  return res.json as { message: string; user: { id: string }; task: { id: string; status_url: string } | null };
}

async function runOf(t: TestService, id: string, state: string) {
  return waitFor(
    async () => {
      const run = await t.service.errand.getRun(id);
      return run.state === state ? run : undefined;
    },
    { ...LONG, message: `run ${id} to be ${state}` },
  );
}

describe('welcome email over SMTP', () => {
  const cleanup: (() => Promise<void>)[] = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c();
  });
  async function setup(answer?: (n: number) => { code: number; text: string } | undefined): Promise<{ smtp: SmtpPeer; t: TestService }> {
    const smtp = await startSmtp(answer ? { answer } : {});
    const t = await startService({ SMTP_URL: smtp.url, MAIL_FROM: 'Errand <welcome@errand.test>' });
    cleanup.push(
      () => smtp.close(),
      () => t.stop(),
    );
    return { smtp, t };
  }

  it('sends one email to the new user, and records it', async () => {
    const { smtp, t } = await setup();
    const created = await createUser(t, 'john.doe', 'John.Doe@Example.com');
    assert.equal(created.message, 'User created and welcome email scheduled!');
    assert.ok(created.task);
    assert.equal(created.task.status_url, `/runs/${created.task.id}`);

    const run = await runOf(t, created.task.id, 'succeeded');
    assert.equal(run.attempts, 1);
    assert.equal(smtp.received.length, 1);
    const mail = smtp.received[0]!;
    // nodemailer writes the domain in lower case (domains are case-insensitive); the local part as given.
    assert.deepEqual(mail.to, ['John.Doe@example.com']);
    assert.equal(mail.from, 'welcome@errand.test');
    assert.equal(mail.message.subject, 'Welcome, john.doe!');
    assert.match(mail.message.text, /Hello john\.doe, welcome aboard\./);
    assert.match(mail.message.html, /<p>Hello john\.doe, welcome aboard\.<\/p>/);
    assert.equal(mail.message.headers['message-id'], `<welcome.${created.user.id}@errand.test>`);
    assert.equal(mail.message.headers.to, 'John.Doe@example.com');

    const user = await t.request('GET', `/users/${created.user.id}`);
    assert.equal(user.status, 200);
    assert.equal(user.json.welcome_email.status, 'sent');
    assert.equal(user.json.welcome_email.message_id, `<welcome.${created.user.id}@errand.test>`);
    assert.equal(user.json.welcome_email.run_id, created.task.id);

    const runJson = await t.request('GET', created.task.status_url);
    assert.equal(runJson.status, 200);
    assert.equal(runJson.json.state, 'succeeded');
    assert.equal(runJson.json.idempotency_key, `welcome:${created.user.id}`);
    assert.equal(runJson.json.result.status, 'sent');
  });

  it('retries a transient failure (421) and delivers once', async () => {
    const { smtp, t } = await setup((n) => (n === 1 ? { code: 421, text: '4.3.2 Service not available, try again later' } : undefined));
    const created = await createUser(t, 'retry.me', 'retry@example.com');
    const run = await runOf(t, created.task!.id, 'succeeded');
    assert.equal(run.attempts, 2);
    assert.equal(run.history[0]?.outcome, 'retry');
    assert.equal(smtp.attempts, 2);
    assert.equal(smtp.received.length, 1);
    assert.deepEqual(smtp.received[0]!.to, ['retry@example.com']);
    assert.equal((await t.service.users.welcomeStatus(created.user.id))?.state, 'sent');
  });

  it('retries when the SMTP server is unreachable, then gives up and records why', async () => {
    const smtp = await startSmtp();
    const url = smtp.url;
    await smtp.close(); // nothing listens on this port any more: connection refused
    const t = await startService({ SMTP_URL: url });
    cleanup.push(() => t.stop());
    const created = await createUser(t, 'nobody.home', 'nobody@example.com');
    const run = await runOf(t, created.task!.id, 'failed');
    assert.equal(run.attempts, 3); // FAST_RETRIES: every attempt was made
    assert.match(run.error?.message ?? '', /ECONNREFUSED|connect/i);
    const status = await t.service.users.welcomeStatus(created.user.id);
    assert.equal(status?.state, 'failed');
    assert.match(status?.error ?? '', /ECONNREFUSED|connect/i);
  });

  it('fails a permanent refusal (550) at once, with the server reason', async () => {
    const { smtp, t } = await setup(() => ({ code: 550, text: '5.1.1 Mailbox does not exist' }));
    const created = await createUser(t, 'ghost', 'ghost@example.com');
    const run = await runOf(t, created.task!.id, 'failed');
    assert.equal(run.attempts, 1);
    assert.equal(run.error?.name, 'PermanentError');
    assert.match(run.error?.message ?? '', /550 5\.1\.1 Mailbox does not exist/);
    assert.equal(smtp.attempts, 1);
    assert.equal(smtp.received.length, 0);
    const user = await t.request('GET', `/users/${created.user.id}`);
    assert.equal(user.json.welcome_email.status, 'failed');
    assert.match(user.json.welcome_email.error, /550 5\.1\.1 Mailbox does not exist/);
    const runJson = await t.request('GET', `/runs/${created.task!.id}`);
    assert.equal(runJson.json.state, 'failed');
    assert.match(runJson.json.error.message, /Mailbox does not exist/);
  });

  it('sends one email per user when the run is enqueued again or a second run appears', async () => {
    const { smtp, t } = await setup();
    const created = await createUser(t, 'once', 'once@example.com');
    await runOf(t, created.task!.id, 'succeeded');
    const input = { userId: created.user.id, email: 'once@example.com', username: 'once' };

    // The same idempotency key (the sweep, a client retrying through /tasks): the same run.
    const again = await t.service.task.enqueue(input);
    assert.equal(again.created, false);
    assert.equal(again.id, created.task!.id);
    const viaHttp = await t.request('POST', '/tasks/send_welcome_email', { ...input, email: 'attacker@example.com' });
    assert.equal(viaHttp.status, 202, JSON.stringify(viaHttp.json));
    assert.equal(viaHttp.json.id, created.task!.id);
    assert.equal(viaHttp.json.created, false);

    // A second run for the same user (as a redelivery would be): it finds the email sent and does not send.
    const second = await t.service.task.enqueue(input, { idempotencyKey: 'a-redelivery' });
    assert.equal(second.created, true);
    const result = await second.result({ timeout: 60_000 });
    assert.deepEqual(result, { status: 'skipped', reason: 'already_sent', messageId: `<welcome.${created.user.id}@errand.test>` });
    assert.equal(smtp.received.length, 1);
  });

  it('sends only to existing users: a run for a user that is not in the store fails visibly, sending nothing', async () => {
    const { smtp, t } = await setup();
    // Enqueued by hand (no store named) or by this very store: no such user, failed at once.
    for (const store of [undefined, t.service.users.identity]) {
      const input = { userId: '01ARZ3NDEKTSV4RRFFQ69G5FAV', email: 'victim@example.com', username: 'x', ...(store ? { store } : {}) };
      const handle = await t.service.task.enqueue(input, { idempotencyKey: `by-hand-${store ?? 'none'}` });
      await assert.rejects(handle.result({ timeout: 60_000 }), /does not exist in the users store/);
      const run = await t.service.errand.getRun(handle.id);
      assert.equal(run.state, 'failed');
      assert.equal(run.attempts, 1, 'not retried: there is no user to welcome');
    }
    assert.equal(smtp.received.length, 0);
  });

  it("a run naming another users store than the worker's, whose user the worker cannot find: retried, then failed with both stores named", async () => {
    const { smtp, t } = await setup();
    const handle = await t.service.task.enqueue({
      userId: '01ARZ3NDEKTSV4RRFFQ69G5FAV',
      email: 'someone@example.com',
      username: 'x',
      store: 'postgres:01ARZ3NDEKTSV4RRFFQ69G5FAV',
    });
    await assert.rejects(handle.result({ timeout: 60_000 }), /is not in this worker's users store/);
    const run = await t.service.errand.getRun(handle.id);
    assert.equal(run.state, 'failed');
    assert.equal(run.attempts, 3, 'retried by the policy (FAST_RETRIES: 3 attempts)');
    assert.match(run.error?.message ?? '', new RegExp(`${t.service.users.identity}.*postgres:01ARZ3NDEKTSV4RRFFQ69G5FAV`));
    assert.equal(smtp.received.length, 0);
    assert.deepEqual(await t.service.checkUsersStore(), ['postgres:01ARZ3NDEKTSV4RRFFQ69G5FAV'], 'the start-up check sees it too');
  });

  it('carries hostile usernames into the email intact, and escapes them in HTML', async () => {
    const { smtp, t } = await setup();
    const ids = new Map<string, string>();
    for (const [i, username] of HOSTILE_USERNAMES.entries()) {
      const created = await createUser(t, username, `hostile${i}@example.com`);
      ids.set(`hostile${i}@example.com`, username);
      const got = await t.request('GET', `/users/${created.user.id}`);
      assert.equal(got.json.username, username);
    }
    await waitFor(() => smtp.received.length === HOSTILE_USERNAMES.length, { ...LONG, message: 'every hostile email' });
    for (const mail of smtp.received) {
      const username = ids.get(mail.to[0]!)!;
      assert.equal(mail.message.subject, `Welcome, ${username}!`);
      assert.ok(mail.message.text.includes(`Hello ${username}, welcome aboard.`), mail.message.text);
      assert.ok(mail.message.html.includes(`<p>Hello ${escapeHtml(username)}, welcome aboard.</p>`), mail.message.html);
      assert.ok(!mail.message.html.includes('<script>'));
      assert.deepEqual(
        Object.keys(mail.message.headers).filter((h) => /^(bcc|cc)$/.test(h)),
        [],
      );
    }
  });
});

describe('welcome email without SMTP_URL', () => {
  it('writes the message as an .eml file in DATA_DIR/outbox', async () => {
    const t = await startService({});
    try {
      const created = await createUser(t, 'dev.user', 'dev@example.com');
      const run = await runOf(t, created.task!.id, 'succeeded');
      const outbox = join(t.dataDir, 'outbox');
      const files = readdirSync(outbox).filter((f) => f.endsWith('.eml'));
      assert.equal(files.length, 1);
      assert.equal((run.result as { path: string }).path, join(outbox, files[0]!));
      const mail = parseMail(readFileSync(join(outbox, files[0]!), 'utf8'));
      assert.equal(mail.headers.to, 'dev@example.com');
      assert.equal(mail.headers.from, 'welcome@example.com');
      assert.equal(mail.subject, 'Welcome, dev.user!');
      assert.match(mail.text, /Hello dev\.user, welcome aboard\./);
      assert.equal((await t.service.users.welcomeStatus(created.user.id))?.state, 'sent');
    } finally {
      await t.stop();
    }
  });
});

describe('a broker that is down when the user signs up', () => {
  it('keeps the user pending and a worker sweep sends the email when the broker is back', async () => {
    const smtp = await startSmtp();
    const dataDir = tempDir('errand-app');
    const real = await connectBroker(`sqlite:${join(dataDir, 'errand.db')}`);
    let down = true;
    const flaky = new Proxy(real, {
      get(target, prop) {
        // enqueue, and createWorkflow (the sign-up workflow, app/onboarding.ts)
        if ((prop === 'enqueue' || prop === 'createWorkflow') && down) {
          return async () => {
            throw new BrokerUnavailableError('the broker is down (test)');
          };
        }
        const v = Reflect.get(target, prop, target);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    }) as Broker;
    const api = await startService({ DATA_DIR: dataDir, SMTP_URL: smtp.url }, { broker: flaky, worker: false });
    let worker: TestService | undefined;
    try {
      const res = await api.request('POST', '/users/', { username: 'early.bird', email: 'early@example.com' });
      assert.equal(res.status, 201);
      assert.equal(res.json.task, null);
      assert.match(res.json.message, /will be scheduled/);
      assert.equal((await api.service.users.welcomeStatus(res.json.user.id))?.state, 'pending');

      down = false;
      // A worker starting (here in a second service on the same files) sweeps the pending user.
      worker = await startService({ DATA_DIR: dataDir, SMTP_URL: smtp.url });
      await waitFor(() => smtp.received.length === 1, { ...LONG, message: 'the swept email' });
      assert.deepEqual(smtp.received[0]!.to, ['early@example.com']);
      const status = await waitFor(async () => {
        const s = await worker!.service.users.welcomeStatus(res.json.user.id);
        return s?.state === 'sent' ? s : undefined;
      }, LONG);
      assert.ok(status.runId);
      // Sweeping again finds nothing to do: still one email.
      assert.equal(await worker.service.sweep(), 0);
      assert.equal(smtp.received.length, 1);
    } finally {
      await worker?.stop();
      await api.stop();
      await smtp.close();
    }
  });
});
