// Issue 20, "work lost without a trace", with the service's real processes (`app/main.ts api` and
// `worker` through the fault fixture), a redis-server and an SMTP server of the test's own:
//
// 1. A worker started without the API's users store (its own DATA_DIR, as `npm run worker` in a
//    terminal without the API's DATABASE_URL): its welcome runs used to succeed as
//    `{"status":"skipped","reason":"user_not_found"}`, no email sent, the users `scheduled` forever.
//    Now each run is retried, then fails naming both stores; the worker says so at start-up; the API
//    shows the users `failed`; once a right worker runs, a retry of each run sends each email once.
// 2. Welcome runs cancelled or purged: the users used to stay `scheduled` forever, unsendable (the
//    idempotency key held, retry answered 409). Now a purged user is sent again by the sweep (the
//    broker released the key with the run), a cancelled one shows `cancelled` and is sent by a
//    retry of its run, and nothing is sent behind the operator's back.
//
// Counts are reconciled exactly: every user the API accepted gets exactly one email, per recipient,
// and none goes elsewhere; one more copy of the same message only for a run whose history records a
// lost lease (at-least-once: on a machine at load 20 a worker's event loop can stall past its lease
// while it sends, and the redelivery sends again, as app/tasks.ts says).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { createErrand, type Errand } from '../../src/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { tempDir, waitFor } from '../helpers.ts';
import {
  connected,
  figure,
  freePort,
  type Proc,
  Procs,
  START_LIMIT_MS,
  type SmtpSink,
  startRedis,
  startSmtpSink,
  waitHttp,
} from './harness.ts';
import { SERVICE } from './service-rig.ts';

/** A safety net for a loaded machine, not a timing assertion. */
const LONG = START_LIMIT_MS;

interface Created {
  user: { id: string; email: string; username: string };
  task: { id: string } | null;
}

async function createUsers(base: string, tag: string, n: number): Promise<Created[]> {
  const out: Created[] = [];
  for (let i = 0; i < n; i++) {
    const res = await fetch(`${base}/users/`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: `${tag}-${i}`, email: `${tag}-${i}@example.com` }),
    });
    const text = await res.text();
    assert.equal(res.status, 201, text);
    out.push(JSON.parse(text) as Created);
  }
  return out;
}

// biome-ignore lint/suspicious/noExplicitAny: answers are JSON whose shape each test asserts
async function http(base: string, method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${base}${path}`, {
    method,
    ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

/**
 * Waits until every user's email is out and recorded as sent, then reconciles the emails with what
 * the runs record: one email per user and none elsewhere, except that a run whose lease expired
 * while its attempt was sending (a worker's event loop stalled on a loaded machine: delivery is at
 * least once, and app/tasks.ts describes this window) may have sent one more copy, of the same
 * message (one Message-ID), per lease loss its run records. Returns the number of such copies.
 */
async function everyUserSentOnce(base: string, smtp: SmtpSink, reader: Errand, users: Created[]): Promise<number> {
  await waitFor(() => smtp.total() >= users.length, { timeoutMs: LONG, message: 'every email out' });
  const sent = await waitFor(
    async () => {
      const got = await Promise.all(users.map((u) => http(base, 'GET', `/users/${u.user.id}`)));
      return got.every((r) => r.json.welcome_email.status === 'sent') ? got : undefined;
    },
    { timeoutMs: LONG, message: 'every user sent' },
  );
  let copies = 0;
  for (const [i, u] of users.entries()) {
    const a = u.user.email.toLowerCase();
    const n = smtp.perRecipient.get(a) ?? 0;
    assert.ok(n >= 1, `an email to ${a}`);
    if (n === 1) continue;
    const runId = sent[i]!.json.welcome_email.run_id as string;
    const run = await reader.getRun(runId);
    assert.equal(smtp.messageIds.get(a)?.size, 1, `the ${n} emails to ${a} are one message (one Message-ID)`);
    assert.ok(run.leaseLosses >= n - 1, `${n} emails to ${a}, but its run ${runId} lost its lease ${run.leaseLosses} time(s)`);
    copies += n - 1;
  }
  assert.equal(smtp.total(), users.length + copies, 'no other email');
  return copies;
}

describe('fault: welcome emails lost without a trace (issue 20)', () => {
  it("a worker that cannot see the API's users: runs retried then failed visibly, said at start-up; a right worker sends each once on retry", {
    timeout: 900_000,
  }, async () => {
    const procs = new Procs();
    const dir = tempDir('errand-fault-lost-store');
    const redis = await startRedis(procs, join(dir, 'redis'), { persistent: false });
    const prefix = 'fault-lost-store';
    const reader = createErrand({ broker: redis.url, prefix, logger: quietLogger });
    await connected(reader);
    let smtp: SmtpSink | undefined;
    try {
      smtp = await startSmtpSink();
      const port = await freePort();
      const base = `http://127.0.0.1:${port}`;
      const env = (dataDir: string): Record<string, string> => ({
        PORT: String(port),
        REDIS_URL: redis.url,
        ERRAND_PREFIX: prefix,
        DATA_DIR: join(dir, dataDir),
        SMTP_URL: smtp!.url,
        FAULT_FAST_RETRIES: '1',
        LOG_LEVEL: 'info',
      });
      const api = procs.spawn('api', [SERVICE, 'api'], env('api'));
      await waitHttp(base, api);
      // The worker of the README's second terminal: no DATABASE_URL, so its own users table.
      const wrong = procs.spawn('worker-wrong', [SERVICE, 'worker'], env('elsewhere'));
      await waitFor(() => wrong.tail().includes('worker ready'), { timeoutMs: LONG, message: 'the wrong worker to start' });

      const users = await createUsers(base, 'store', 12);
      const runIds = users.map((u) => {
        assert.ok(u.task, 'the API enqueued the welcome run');
        return u.task.id;
      });
      await waitFor(async () => (await Promise.all(runIds.map((id) => reader.getRun(id)))).every((r) => r.state === 'failed'), {
        timeoutMs: LONG,
        message: 'every welcome run to fail',
      });
      for (const id of runIds) {
        const run = await reader.getRun(id);
        assert.equal(run.attempts, 3, `${id}: retried by its policy before failing`);
        assert.match(
          run.error?.message ?? '',
          /is not in this worker's users store .* and the run was enqueued by an API whose users store is sqlite:/,
        );
      }
      assert.equal(smtp.total(), 0, 'no email sent');
      assert.match(wrong.tail(), /is not in this worker's users store/, 'the worker logs it');
      for (const u of users) {
        const got = await http(base, 'GET', `/users/${u.user.id}`);
        assert.equal(got.json.welcome_email.status, 'failed', `user ${u.user.id} at the API`);
        assert.match(got.json.welcome_email.error, /is not in this worker's users store/);
      }

      // Another worker started the same wrong way says so at once, before taking any run.
      const second = procs.spawn('worker-wrong-2', [SERVICE, 'worker'], env('elsewhere-too'));
      await waitFor(() => second.tail().includes("this worker's users store is not the one of the API"), {
        timeoutMs: LONG,
        message: 'the start-up check to complain',
      });
      await procs.kill(second, 'SIGKILL');
      await procs.kill(wrong, 'SIGKILL');

      // The operator starts a worker on the API's store and replays the failed runs.
      const right = procs.spawn('worker-right', [SERVICE, 'worker'], env('api'));
      await waitFor(() => right.tail().includes('worker ready'), { timeoutMs: LONG, message: 'the right worker to start' });
      assert.doesNotMatch(right.tail(), /users store is not the one/);
      for (const id of runIds) assert.equal((await http(base, 'POST', `/runs/${id}/retry`)).status, 200);
      const copies = await everyUserSentOnce(base, smtp, reader, users);
      figure('lost-work store', { users: users.length, failedFirst: runIds.length, emails: smtp.total(), copiesAfterLeaseLoss: copies });
    } finally {
      await procs.killAll();
      await reader.close();
      await smtp?.close();
      await redis.stop();
    }
  });

  it('cancelled and purged welcome runs: users show it; the sweep sends the purged ones, a retry the cancelled ones; one email each', {
    timeout: 900_000,
  }, async () => {
    const procs = new Procs();
    const dir = tempDir('errand-fault-lost-cancel');
    const redis = await startRedis(procs, join(dir, 'redis'), { persistent: false });
    const prefix = 'fault-lost-cancel';
    const reader = createErrand({ broker: redis.url, prefix, logger: quietLogger });
    await connected(reader);
    let smtp: SmtpSink | undefined;
    let worker: Proc | undefined;
    try {
      smtp = await startSmtpSink();
      const port = await freePort();
      const base = `http://127.0.0.1:${port}`;
      const env: Record<string, string> = {
        PORT: String(port),
        REDIS_URL: redis.url,
        ERRAND_PREFIX: prefix,
        DATA_DIR: join(dir, 'data'),
        SMTP_URL: smtp.url,
        FAULT_SWEEP_EVERY_MS: '500',
        FAULT_SWEEP_GRACE_MS: '0',
        FAULT_SWEEP_SCHEDULED_AFTER_MS: '0',
        LOG_LEVEL: 'info',
      };
      const broker = (await reader.broker()) as unknown as {
        pause(q: string): Promise<void>;
        resume(q: string): Promise<void>;
        purge(q: string, now: number): Promise<number>;
      };
      await broker.pause('emails');
      const api = procs.spawn('api', [SERVICE, 'api'], env);
      await waitHttp(base, api);
      worker = procs.spawn('worker', [SERVICE, 'worker'], env);
      await waitFor(() => worker!.tail().includes('worker ready'), { timeoutMs: LONG, message: 'the worker to start' });

      const users = await createUsers(base, 'lost', 15);
      const cancelled = users.slice(0, 5);
      const purged = users.slice(5);
      for (const u of cancelled) {
        const res = await http(base, 'POST', `/runs/${u.task!.id}/cancel`);
        assert.deepEqual(res.json, { id: u.task!.id, state: 'cancelled', previous_state: 'queued' });
        const again = await http(base, 'POST', `/runs/${u.task!.id}/cancel`);
        assert.equal(again.status, 200, 'cancelling it again succeeds, as run.cancel() does');
      }
      assert.equal(await broker.purge('emails', Date.now()), purged.length);

      for (const u of cancelled) {
        const got = await http(base, 'GET', `/users/${u.user.id}`);
        assert.equal(got.json.welcome_email.status, 'cancelled', `user ${u.user.id}`);
        assert.equal(got.json.welcome_email.run_id, u.task!.id);
      }
      // A purged user's run is gone: the API says so and its key is free (POST /tasks makes a new run,
      // or finds the one the sweep made meanwhile; never the purged id).
      const one = purged[0]!;
      const viaTasks = await http(base, 'POST', '/tasks/send_welcome_email', {
        userId: one.user.id,
        email: one.user.email,
        username: one.user.username,
      });
      assert.equal(viaTasks.status, 202);
      assert.notEqual(viaTasks.json.id, one.task!.id, 'not the purged run');
      assert.equal((await http(base, 'GET', `/runs/${viaTasks.json.id}`)).status, 200, 'a run that exists');
      for (const u of purged) {
        const got = await http(base, 'GET', `/users/${u.user.id}`);
        assert.notEqual(got.json.welcome_email.run_id, u.task!.id, `user ${u.user.id} no longer names the purged run`);
        assert.ok(['pending', 'scheduled'].includes(got.json.welcome_email.status), `user ${u.user.id}: ${got.json.welcome_email.status}`);
      }

      await broker.resume('emails');
      // The purged users emailed by the sweep, and no one else.
      let copies = await everyUserSentOnce(base, smtp, reader, purged);
      for (const u of cancelled) {
        const got = await http(base, 'GET', `/users/${u.user.id}`);
        assert.equal(got.json.welcome_email.status, 'cancelled', 'a cancelled email is not sent behind the operator');
      }

      // Kill -9 the worker and start another: the retries of the cancelled runs go to it.
      await procs.kill(worker, 'SIGKILL');
      worker = procs.spawn('worker-2', [SERVICE, 'worker'], env);
      await waitFor(() => worker!.tail().includes('worker ready'), { timeoutMs: LONG, message: 'the second worker to start' });
      for (const u of cancelled) {
        const res = await http(base, 'POST', `/runs/${u.task!.id}/retry`);
        assert.deepEqual(res.json, { id: u.task!.id, state: 'queued' });
      }
      copies = await everyUserSentOnce(base, smtp, reader, users);
      figure('lost-work cancel/purge', {
        users: users.length,
        cancelled: cancelled.length,
        purged: purged.length,
        emails: smtp.total(),
        copiesAfterLeaseLoss: copies,
      });
    } finally {
      await procs.killAll();
      await reader.close();
      await smtp?.close();
      await redis.stop();
    }
  });
});
