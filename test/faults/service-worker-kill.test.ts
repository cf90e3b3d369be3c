// The users service as a new user tries it: an API and two workers (concurrency 10 each, the default
// lease) on Redis, 3,000 sign-ups sent as fast as the client goes, and one worker killed with
// SIGKILL once 30% of the welcome emails are out. Nothing is lost: every accepted user gets an
// email, the email queue ends with every run succeeded; the emails sent twice are only those the
// killed worker was sending (at most 2 x concurrency + 1, docs/reliability.md). The time from the first
// request to the last email is printed (`[fault-figures] service-worker-kill`), never asserted: it
// is the figure docs/reliability.md compares with BullMQ's.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { tempDir, waitFor } from '../helpers.ts';
import { figure, Procs, START_LIMIT_MS, startRedis, UserLoad } from './harness.ts';
import { ServiceRig } from './service-rig.ts';

const USERS = 3000;
const CLIENTS = 16;
const CONCURRENCY = 10;

describe('fault: a worker of the users service killed with SIGKILL at 30% of 3,000 emails', () => {
  it('every accepted user gets the email; the dead worker’s runs finish on the other worker', { timeout: 900_000 }, async () => {
    const procs = new Procs();
    const dir = tempDir('errand-fault-service-kill');
    const redis = await startRedis(procs, join(dir, 'redis'), { persistent: false });
    const rig = new ServiceRig(procs, {
      prefix: 'fault-service-kill',
      dataDir: join(dir, 'data'),
      serviceRedisUrl: redis.url,
      directRedisUrl: redis.url,
    });
    try {
      await rig.start();
      const load = new UserLoad(rig.base, 'svc-kill', { concurrency: 0 });
      rig.load = load;
      const firstRequest = Date.now();
      let sent = 0;
      const clients = Array.from({ length: CLIENTS }, async () => {
        while (sent < USERS) {
          sent++;
          await load.post();
        }
      });
      await waitFor(() => rig.smtp.total() >= USERS * 0.3, { timeoutMs: START_LIMIT_MS, intervalMs: 5, message: '30% of the emails' });
      const victim = rig.workers[0]!;
      const killedAt = Date.now();
      const emailsAtKill = rig.smtp.total();
      await procs.kill(victim, 'SIGKILL');
      await Promise.all(clients);
      const lastAnswer = Math.max(...load.answers.map((a) => a.doneAt));

      const accepted = load.answers.filter((a) => a.status === 201);
      const missing = () => accepted.filter((a) => !rig.smtp.perRecipient.has(a.email));
      await waitFor(() => missing().length === 0, { timeoutMs: START_LIMIT_MS, intervalMs: 20 }).catch((err: Error) => {
        throw new Error(`${missing().length} of ${accepted.length} accepted users never got their email: ${err.message}`);
      });
      const lastEmail = Math.max(...rig.smtp.deliveries.map((d) => d.at));
      await waitFor(
        async () => {
          const c = await rig.counts();
          return c.queued + c.scheduled + c.active === 0 ? c : null;
        },
        { timeoutMs: START_LIMIT_MS, intervalMs: 50, message: 'the email queue to be idle' },
      );
      const counts = await rig.counts();

      assert.deepEqual(load.summary(), { 201: USERS }, 'every sign-up accepted (a worker’s death is not the API’s)');
      // Sign-up is a workflow (app/onboarding.ts): each user's welcome run, then its onboarding note,
      // both in the emails queue.
      assert.equal(counts.succeeded, 2 * USERS, 'every welcome run and every onboarding note succeeded');
      assert.equal(counts.failed, 0);
      const twice = accepted.filter((a) => (rig.smtp.perRecipient.get(a.email) ?? 0) > 1);
      for (const a of twice)
        assert.equal(rig.smtp.messageIds.get(a.email)!.size, 1, `a repeated email to ${a.email} has the same Message-ID`);
      assert.ok(twice.length <= 2 * CONCURRENCY + 1, `${twice.length} emails sent twice: at most what the killed worker held`);
      assert.ok(rig.workers[1]!.alive && rig.api.alive, 'the API and the other worker keep running');

      figure('service-worker-kill', {
        users: USERS,
        emails: rig.smtp.total(),
        lost: 0,
        sentTwice: twice.length,
        emailsAtKill,
        killAfterMs: killedAt - firstRequest,
        lastAnswerAfterMs: lastAnswer - firstRequest,
        lastEmailAfterKillMs: lastEmail - killedAt,
        firstRequestToLastEmailMs: lastEmail - firstRequest,
      });
    } finally {
      await procs.killAll();
      await rig.close();
      await redis.stop();
    }
  });
});
