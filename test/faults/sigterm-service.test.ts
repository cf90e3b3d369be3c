// Fault 4 (service): SIGTERM to the API and to the service's workers (`node app/main.ts api|worker`)
// under load, each started again afterwards. The API finishes the requests it took and exits 0 (new
// connections are refused meanwhile: the client knows it was not served); each worker finishes its
// runs and exits 0. Nothing is lost and nothing runs twice: every accepted user gets exactly one
// email, from a run started exactly once.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createErrand } from '../../src/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { tempDir, waitFor } from '../helpers.ts';
import { APP_MAIN, connected, figure, START_LIMIT_MS, type Proc, Procs, startRedis } from './harness.ts';
import { ServiceRig } from './service-rig.ts';

describe('fault: SIGTERM to the API and the workers of the service under load', () => {
  it('drains gracefully: every accepted user gets exactly one email, every run started once', { timeout: 900_000 }, async () => {
    const procs = new Procs();
    const dir = tempDir('errand-fault-svc-term');
    const redis = await startRedis(procs, join(dir, 'redis'), { persistent: false });
    const prefix = 'fault-svc-term';
    const rig = new ServiceRig(procs, {
      prefix,
      dataDir: join(dir, 'data'),
      serviceRedisUrl: redis.url,
      directRedisUrl: redis.url,
      main: APP_MAIN,
    });
    const reader = createErrand({ broker: redis.url, prefix, logger: quietLogger });
    await connected(reader);
    const stops: { name: string; code: number | null; ms: number }[] = [];
    const term = async (p: Proc) => {
      const at = Date.now();
      const exit = await procs.kill(p, 'SIGTERM', 30_000);
      stops.push({ name: p.name, code: exit.code, ms: Date.now() - at });
    };
    try {
      await rig.start();
      await rig.startLoad('svc-term');
      const emailsNow = () => rig.smtp.total();

      await term(rig.workers[0]!);
      rig.restartWorker(0);
      let mark = emailsNow();
      await waitFor(() => emailsNow() >= mark + 20, { timeoutMs: START_LIMIT_MS, message: 'emails flowing after the first worker stop' });

      await term(rig.api);
      await sleep(300); // requests meanwhile are refused (ECONNREFUSED)
      await rig.restartApi();
      mark = emailsNow();
      await waitFor(() => emailsNow() >= mark + 20, { timeoutMs: START_LIMIT_MS, message: 'emails flowing after the API restart' });

      await term(rig.workers[1]!);
      rig.restartWorker(1);
      mark = emailsNow();
      await waitFor(() => emailsNow() >= mark + 20, { timeoutMs: START_LIMIT_MS, message: 'emails flowing after the second worker stop' });
      await rig.stopLoad();

      for (const s of stops) assert.equal(s.code, 0, `${s.name} exited 0 after SIGTERM`);
      const answers = rig.load!.answers;
      const accepted = answers.filter((a) => a.status === 201);
      const unanswered = answers.filter((a) => a.status === 0);
      // While it stops, the API answers requests arriving on open connections with 503 (Fastify's
      // return503OnClosing; see test/faults/http-closing.test.ts for its shape), then refuses connections.
      const closing503 = answers.filter((a) => a.status === 503);
      const other = answers.filter((a) => a.status !== 201 && a.status !== 0 && a.status !== 503);
      assert.deepEqual(
        other.slice(0, 3).map((a) => [a.status, a.error]),
        [],
        'only 201, 503 while stopping, or no answer while down',
      );
      // Refusals were never taken: no user, no email.
      const refused = [...unanswered.filter((a) => a.error === 'ECONNREFUSED'), ...closing503];
      for (const a of refused) assert.equal(rig.smtp.perRecipient.get(a.email) ?? 0, 0, `no email for the refused ${a.email}`);

      const missing = () => accepted.filter((a) => !rig.smtp.perRecipient.has(a.email));
      await waitFor(() => missing().length === 0, { timeoutMs: START_LIMIT_MS, intervalMs: 100 }).catch((err: Error) => {
        throw new Error(`${missing().length} accepted user(s) never got their email: ${err.message}`);
      });
      await waitFor(
        async () => {
          const c = await rig.counts();
          return c.queued + c.scheduled + c.active === 0;
        },
        { timeoutMs: START_LIMIT_MS, message: 'the email queue to be idle' },
      );
      for (const a of accepted) assert.equal(rig.smtp.perRecipient.get(a.email), 1, `exactly one email for ${a.email}`);
      // Every other email went to a request that got no answer (reset as the API stopped), at most one each.
      for (const [address, n] of rig.smtp.perRecipient) {
        if (accepted.some((a) => a.email === address)) continue;
        assert.ok(unanswered.some((a) => a.email === address) && n === 1, `the email to ${address} belongs to an unanswered request`);
      }
      const broker = await reader.broker();
      const runIds = accepted.map((a) => a.runId).filter((id): id is string => Boolean(id));
      let startedTwice = 0;
      for (let i = 0; i < runIds.length; i += 200) {
        const recs = await Promise.all(runIds.slice(i, i + 200).map((id) => broker.getRun(id)));
        for (const r of recs) {
          assert.equal(r?.state, 'succeeded');
          if ((r?.attempts ?? 0) !== 1) startedTwice++;
        }
      }
      assert.equal(startedTwice, 0, 'every run started exactly once');
      figure('sigterm-service', {
        requests: answers.length,
        accepted: accepted.length,
        refused503WhileApiStopping: closing503.length,
        closing503WithRetryAfter: closing503.filter((a) => a.retryAfter).length,
        refusedWhileApiDown: unanswered.filter((a) => a.error === 'ECONNREFUSED').length,
        resetWhileApiStopping: unanswered.filter((a) => a.error !== 'ECONNREFUSED').length,
        emails: rig.smtp.total(),
        duplicates: 0,
        lost: 0,
        stops,
      });
    } finally {
      await procs.killAll();
      await rig.close();
      await reader.close();
      await redis.stop();
    }
  });
});
