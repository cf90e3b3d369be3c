// Fault 5: the embedded default. One `node app/main.ts` (all: API and worker) on SQLite in DATA_DIR,
// killed with SIGKILL mid-flow and started again: nothing accepted is lost, every accepted user gets
// its email. Runs in flight at the kill come back when their lease expires (8 s by default).
// A user may get a second copy (same Message-ID) only if the kill fell between the SMTP server's
// acceptance and the recording of `sent` (app/tasks.ts explains the window): the test checks that
// every such copy is of an email first sent before the kill. A request cut by the kill (its
// connection reset, no answer) either created its user before the kill (then the user gets exactly
// one email, as an accepted one) or did not (then no user and no email): the test reads the users
// table to tell which.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { describe, it } from 'node:test';
import { createErrand } from '../../src/index.ts';
import { DEFAULT_LEASE_MS } from '../../src/worker/options.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { tempDir, waitFor } from '../helpers.ts';
import { APP_MAIN, figure, freePort, Procs, START_LIMIT_MS, startSmtpSink, UserLoad, waitHttp } from './harness.ts';
import { SERVICE } from './service-rig.ts';

describe('fault: the embedded default (app/main.ts all on SQLite) killed with SIGKILL mid-flow', () => {
  it('loses nothing accepted: every accepted user gets its email after the restart', { timeout: 900_000 }, async () => {
    const procs = new Procs();
    const dataDir = tempDir('errand-fault-embedded');
    const smtp = await startSmtpSink();
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const env = { PORT: String(port), DATA_DIR: dataDir, SMTP_URL: smtp.url, WORKER_CONCURRENCY: '10' };
    const reader = createErrand({ broker: `sqlite:${join(dataDir, 'errand.db')}`, logger: quietLogger });
    let load: UserLoad | undefined;
    try {
      const first = procs.spawn('all', [APP_MAIN, 'all'], env);
      await waitHttp(base, first, '/readyz');
      load = new UserLoad(base, 'embedded', { concurrency: 4, pauseMs: 10 });
      // The kill's moment follows the HTTP answers, not the emails (a kill timed by an email's arrival
      // would aim at the window in which a sent email is not yet recorded).
      await waitFor(() => smtp.total() >= 20 && load!.answers.filter((a) => a.status === 201).length >= 60, {
        timeoutMs: START_LIMIT_MS,
        message: '60 users accepted and 20 emails before the kill',
      });
      await procs.kill(first, 'SIGKILL');
      const killAt = Date.now();
      // Started again as app/main.ts with a sweep every second (test/faults/fixtures/service.ts): a
      // user created by a request the kill cut before its enqueue is left pending for the sweep.
      const second = procs.spawn('all-again', [SERVICE, 'all'], { ...env, FAULT_SWEEP_EVERY_MS: '1000' });
      await waitHttp(base, second, '/readyz');
      const upAt = Date.now();
      await waitFor(() => load!.answers.filter((a) => a.at > upAt && a.status === 201).length >= 40, {
        timeoutMs: START_LIMIT_MS,
        message: '40 users accepted after the restart',
      });
      await load.stop();

      const answers = load.answers;
      const accepted = answers.filter((a) => a.status === 201);
      // Requests cut by the kill: the users table says whether each created its user.
      const resets = answers.filter((a) => a.status === 0 && a.error !== 'ECONNREFUSED');
      const db = new DatabaseSync(join(dataDir, 'errand.db'), { readOnly: true });
      let stored: Set<string>;
      try {
        stored = new Set((db.prepare('SELECT email FROM users').all() as { email: string }[]).map((r) => r.email));
      } finally {
        db.close();
      }
      for (const a of answers.filter((x) => x.error === 'ECONNREFUSED'))
        assert.ok(!stored.has(a.email), `no user for the refused ${a.email}`);
      const cutCreated = resets.filter((a) => stored.has(a.email));
      const missing = () => [...accepted, ...cutCreated].filter((a) => !smtp.perRecipient.has(a.email));
      // Runs in flight at the kill wait for their lease (8 s by default) to expire.
      await waitFor(() => missing().length === 0, { timeoutMs: START_LIMIT_MS, intervalMs: 100 }).catch((err: Error) => {
        throw new Error(
          `${missing().length} of ${accepted.length} accepted users (and ${cutCreated.length} created by cut requests) never got their email: ${err.message}`,
        );
      });
      const allOutAt = Date.now();
      const broker = await reader.broker();
      await waitFor(
        async () => {
          const c = (await broker.counts(['emails'])).emails!;
          return c.queued + c.scheduled + c.active === 0;
        },
        { timeoutMs: START_LIMIT_MS, message: 'the email queue to be idle' },
      );

      const other = answers.filter((a) => a.status !== 201 && a.status !== 0);
      assert.deepEqual(
        other.slice(0, 3).map((a) => [a.status, a.error]),
        [],
        'only 201, or no answer while the process was down',
      );
      for (const a of answers.filter((x) => x.error === 'ECONNREFUSED')) {
        assert.equal(smtp.perRecipient.get(a.email) ?? 0, 0, `no email for the refused ${a.email}`);
      }
      for (const a of resets) {
        if (!stored.has(a.email)) assert.equal(smtp.perRecipient.get(a.email) ?? 0, 0, `no user, so no email, for the cut ${a.email}`);
      }
      let duplicates = 0;
      for (const a of [...accepted, ...cutCreated]) {
        assert.equal(smtp.messageIds.get(a.email)?.size, 1, `one message (one Message-ID) for ${a.email}`);
        const copies = smtp.deliveries.filter((d) => d.to === a.email);
        if (copies.length > 1) {
          duplicates += copies.length - 1;
          assert.equal(copies.length, 2, `at most one extra copy for ${a.email}`);
          assert.ok(copies[0]!.at < killAt && copies[1]!.at > killAt, `the extra copy for ${a.email} follows a send cut by the kill`);
        }
      }
      figure('embedded-kill', {
        requests: answers.length,
        accepted: accepted.length,
        refusedWhileDown: answers.filter((a) => a.error === 'ECONNREFUSED').length,
        cutByTheKill: resets.length,
        cutByTheKillUserCreated: cutCreated.length,
        emails: smtp.total(),
        duplicates,
        lost: 0,
        restartMs: upAt - killAt,
        allAcceptedEmailsOutAfterKillMs: allOutAt - killAt,
        leaseMs: DEFAULT_LEASE_MS,
      });
    } finally {
      await load?.stop();
      await procs.killAll();
      await reader.close();
      await smtp.close();
    }
  });
});
