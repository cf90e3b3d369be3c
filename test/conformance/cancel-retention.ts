/**
 * Conformance: a run's own retention once cancelled (`NewRun.cancelledRetentionMs`, its task's
 * `retention.cancelled`) is stored with the run at enqueue and kept by every cancel, whoever
 * cancels it by id (the app, HTTP, the CLI, the dashboard all call `cancel(id, now)`); a run
 * without one keeps the broker's `cancelledRetentionMs`. Called from `brokerConformance` (suite.ts).
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { Broker, BrokerOptions, NewRun } from '../../src/broker/types.ts';
import { newRunId } from '../../src/core/ids.ts';
import { within } from '../helpers.ts';

const Q = 'cancelret';
const TEST_TIMEOUT_MS = 60_000;
const DAY = 86_400_000;

function run(now: number, over: Partial<NewRun> = {}): NewRun {
  return { id: newRunId(Q, now), task: 'conformance.echo', queue: Q, input: '{}', priority: 0, runAt: now, ...over };
}

export function cancelRetentionConformance(makeBroker: (opts?: BrokerOptions) => Promise<Broker>): void {
  describe("cancel keeps the run's own retention (retention.cancelled)", () => {
    let opened: Broker[] = [];
    afterEach(async () => {
      const brokers = opened;
      opened = [];
      await Promise.all(brokers.map((b) => within(b.close(), 5_000, 'broker close()')));
    });

    it('queued, scheduled and active runs expire after their own retention; one without keeps the broker default', {
      timeout: TEST_TIMEOUT_MS,
    }, async () => {
      const b = await makeBroker();
      opened.push(b);
      const t0 = Date.now();
      const active = run(t0, { cancelledRetentionMs: 5000 });
      const queued = run(t0, { cancelledRetentionMs: 5000 });
      const scheduled = run(t0, { cancelledRetentionMs: 7000, runAt: t0 + 60_000 });
      const plain = run(t0);
      const long = run(t0, { cancelledRetentionMs: 3 * DAY });
      await b.enqueue([active], t0);
      const { runs } = await b.reserve({ workerId: 'w1', queues: [Q], max: 1, leaseMs: 30_000, now: t0 });
      assert.deepStrictEqual(
        runs.map((r) => r.id),
        [active.id],
      );
      await b.enqueue([queued, scheduled, plain, long], t0);
      const t1 = t0 + 10;
      for (const r of [active, queued, scheduled, plain, long]) {
        assert.equal((await b.cancel(r.id, t1)).outcome, 'cancelled', `cancel ${r.id}`);
      }
      const expiry = async (id: string) => (await b.getRun(id))?.expiresAt;
      assert.equal(await expiry(active.id), t1 + 5000, 'active run: its own retention');
      assert.equal(await expiry(queued.id), t1 + 5000, 'queued run: its own retention');
      assert.equal(await expiry(scheduled.id), t1 + 7000, 'scheduled run: its own retention');
      assert.equal(await expiry(plain.id), t1 + DAY, "a run without one: the broker's default (1 day)");
      assert.equal(await expiry(long.id), t1 + 3 * DAY, 'longer than the default too');

      assert.equal(await b.prune(t1 + 6000), 2, 'the two runs of 5 s are pruned');
      assert.equal(await b.getRun(active.id), null);
      assert.equal(await b.getRun(queued.id), null);
      for (const r of [scheduled, plain, long]) assert.ok(await b.getRun(r.id), `run ${r.id} is kept`);
      assert.equal(await b.prune(t1 + 2 * DAY), 2, 'then the scheduled one and the default one');
      assert.ok(await b.getRun(long.id), 'the run of 3 days is kept');
    });

    it('a replayed run cancelled again keeps its own retention', { timeout: TEST_TIMEOUT_MS }, async () => {
      const b = await makeBroker();
      opened.push(b);
      const t0 = Date.now();
      const r = run(t0, { cancelledRetentionMs: 4000 });
      await b.enqueue([r], t0);
      await b.cancel(r.id, t0 + 1);
      assert.equal((await b.retry(r.id, t0 + 2)).outcome, 'queued');
      await b.cancel(r.id, t0 + 3);
      assert.equal((await b.getRun(r.id))?.expiresAt, t0 + 3 + 4000);
    });
  });
}
