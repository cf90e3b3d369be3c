// The policies of a schedule, fired through the worker's firer with chosen times: missed fires
// (skip, latest, all up to a bound), overlap (skip, cancel) and expiry. SQLite file.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { SqliteBroker } from '../../src/broker/sqlite/sqlite-broker.ts';
import type { Broker, BrokerInspector, RunRecord } from '../../src/broker/types.ts';
import { createErrand } from '../../src/index.ts';
import { DEFAULT_POLICIES, type SchedulePolicies, scheduleDefinition } from '../../src/schedule/plan.ts';
import { compileSchedule } from '../../src/schedule/spec.ts';
import { ScheduleFirer } from '../../src/worker/schedules.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { tempDir, waitFor } from '../helpers.ts';
import { join } from 'node:path';

const MIN = 60_000;
const Q = 'pol';

async function setup(policies: Partial<SchedulePolicies>, next: number, every: number | string = '1m') {
  const path = join(tempDir('errand-sched-pol'), 'e.db');
  const broker = new SqliteBroker({ path });
  const def = scheduleDefinition(
    {
      id: 's',
      queue: Q,
      task: 'pol.t',
      schedule: compileSchedule({ every }),
      input: '{}',
      policies: { ...DEFAULT_POLICIES, ...policies },
      version: 1,
    },
    0,
  );
  await broker.upsertSchedule({ ...def, next }, Date.now());
  const firer = new ScheduleFirer({ broker, queues: [Q], logger: quietLogger });
  const rec = async () => (await broker.getSchedule(Q, 's'))!;
  const runs = async (): Promise<RunRecord[]> => {
    const page = await (broker as Broker & BrokerInspector).listRuns({ queue: Q, limit: 500 });
    return page.runs.sort((a, b) => (a.schedule?.at ?? 0) - (b.schedule?.at ?? 0));
  };
  return { path, broker, firer, rec, runs };
}

describe('missed fires', () => {
  const T = Math.floor(Date.now() / MIN) * MIN - 10 * MIN; // ten minutes ago, on a minute

  it('skip: no run, each missed time counted, the next time after now', async () => {
    const { broker, firer, rec, runs } = await setup({ missed: 'skip' }, T);
    const now = T + 10 * MIN + 1000;
    assert.equal(await firer.fire(await rec(), now), 'fired');
    const s = await rec();
    // T .. T+9m are behind the 60 s catch-up window (10 times); T+10m is 1 s late: on time, it runs.
    assert.equal(s.missed, 10);
    assert.deepEqual(
      (await runs()).map((r) => [r.schedule?.at, r.schedule?.backfilled]),
      [[T + 10 * MIN, false]],
    );
    assert.equal(s.next, T + 11 * MIN);
    await broker.close();
  });

  it('latest: one backfilled run for the latest missed time, the others counted', async () => {
    const { broker, firer, rec, runs } = await setup({ missed: 'latest' }, T);
    const now = T + 9 * MIN + 30 * 1000 + 2 * MIN; // the last fire (T+11m) is 30 s behind: on time
    await firer.fire(await rec(), now - 2 * MIN); // at T+9m30s: T..T+9m, T+9m is 30 s late (on time)
    const r = await runs();
    assert.deepEqual(
      r.map((x) => [x.schedule?.at, x.schedule?.backfilled]),
      [[T + 9 * MIN, false]],
    );
    assert.equal((await rec()).missed, 9);
    await broker.close();
  });

  it('latest with nothing on time: the latest late time runs, marked backfilled', async () => {
    const { broker, firer, rec, runs } = await setup({ missed: 'latest', catchUpMs: 1000 }, T);
    await firer.fire(await rec(), T + 5 * MIN + 30_000);
    assert.deepEqual(
      (await runs()).map((x) => [x.schedule?.at, x.schedule?.backfilled]),
      [[T + 5 * MIN, true]],
    );
    assert.equal((await rec()).missed, 5);
    await broker.close();
  });

  it('all: each missed time up to maxBackfill, backfilled; the older ones counted', async () => {
    const { broker, firer, rec, runs } = await setup({ missed: 'all', maxBackfill: 3, catchUpMs: 1000 }, T);
    await firer.fire(await rec(), T + 5 * MIN + 30_000);
    assert.deepEqual(
      (await runs()).map((x) => [x.schedule?.at, x.schedule?.backfilled]),
      [
        [T + 3 * MIN, true],
        [T + 4 * MIN, true],
        [T + 5 * MIN, true],
      ],
    );
    assert.equal((await rec()).missed, 3);
    await broker.close();
  });
});

describe('overlap', () => {
  it('skip: while the previous run is due or running, the fire creates no run and counts a miss', async () => {
    const now = Date.now();
    const F = Math.floor(now / MIN) * MIN;
    const { broker, firer, rec, runs } = await setup({ overlap: 'skip' }, F);
    await firer.fire(await rec(), F + 1000); // the run of F: queued (due)
    assert.equal((await runs()).length, 1);
    await firer.fire(await rec(), F + MIN + 1000); // F+1m: the previous one has not started
    assert.equal((await runs()).length, 1);
    assert.equal((await rec()).missed, 1);
    // Once it is done, the next fire runs.
    const res = await broker.reserve({ workerId: 'w', queues: [Q], max: 1, leaseMs: 30_000, now: F + MIN + 2000 });
    await broker.settle('w', [{ id: res.runs[0]!.id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: MIN }], F + MIN + 3000);
    await firer.fire(await rec(), F + 2 * MIN + 1000);
    assert.equal((await runs()).length, 2);
    await broker.close();
  });

  it('cancel: the running previous run is cancelled and the new one created', async () => {
    const now = Date.now();
    const F = Math.floor(now / MIN) * MIN;
    const { broker, firer, rec, runs } = await setup({ overlap: 'cancel' }, F);
    await firer.fire(await rec(), F + 1000);
    const res = await broker.reserve({ workerId: 'w', queues: [Q], max: 1, leaseMs: 30_000, now: F + 1500 });
    assert.equal(res.runs.length, 1);
    await firer.fire(await rec(), F + MIN + 1000);
    const all = await runs();
    assert.deepEqual(
      all.map((r) => r.state),
      ['cancelled', 'queued'],
    );
    await broker.close();
  });
});

describe('overlap: buffer', () => {
  it('while the previous run is due or running, no fire; once it ended, one run for the latest time', async () => {
    const F = Math.floor(Date.now() / MIN) * MIN;
    const { broker, firer, rec, runs } = await setup({ overlap: 'buffer' }, F);
    await firer.fire(await rec(), F + 1000);
    assert.equal(await firer.fire(await rec(), F + MIN + 1000), 'skipped', 'buffered while the previous run waits');
    assert.equal((await rec()).next, F + MIN, 'the fire time stays due');
    assert.equal((await runs()).length, 1);
    const res = await broker.reserve({ workerId: 'w', queues: [Q], max: 1, leaseMs: 30_000, now: F + 2 * MIN });
    assert.equal(await firer.fire(await rec(), F + 2 * MIN + 1000), 'skipped', 'still running');
    await broker.settle(
      'w',
      [{ id: res.runs[0]!.id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: MIN }],
      F + 2 * MIN + 2000,
    );
    // Ended: F+1m and F+2m have passed (both within catchUpMs): one run, for F+2m; F+1m counted.
    assert.equal(await firer.fire(await rec(), F + 2 * MIN + 3000), 'fired');
    assert.deepEqual(
      (await runs()).map((r) => r.schedule?.at),
      [F, F + 2 * MIN],
    );
    const s = await rec();
    assert.equal(s.missed, 1);
    assert.equal(s.next, F + 3 * MIN);
    await broker.close();
  });
});

describe('expiry', () => {
  it('a run that could not start within its time is failed with reason expired, its handler not called', { timeout: 30_000 }, async () => {
    const path = join(tempDir('errand-sched-exp'), 'e.db');
    const app = createErrand({ broker: `sqlite:${path}`, logger: quietLogger });
    let called = 0;
    const t = app.task('pol.t', { input: z.object({}), queue: Q }, async () => {
      called++;
    });
    app.schedule('s', t, { every: '1m', input: {}, expire: 1000 });
    const broker = await app.broker();
    const [def] = app.scheduleDefinitions(Date.now());
    // Its first fire time 5 s ago: fired now (on time), its run due 5 s ago expired 4 s ago.
    const F = Date.now() - 5000;
    await broker.upsertSchedule({ ...def!, next: F }, Date.now());
    const firer = new ScheduleFirer({ broker, queues: [Q], logger: quietLogger });
    await firer.fire((await broker.getSchedule(Q, 's'))!, Date.now());
    const w = app.worker({ schedules: false });
    await w.start();
    const run = await waitFor(
      async () => {
        const page = await (broker as Broker & BrokerInspector).listRuns({ queue: Q, state: 'failed', limit: 5 });
        return page.runs[0];
      },
      { timeoutMs: 20_000, message: 'the expired run failed' },
    );
    await w.stop();
    assert.equal(called, 0);
    assert.equal(JSON.parse(run.error!).reason, 'expired');
    assert.match(JSON.parse(run.error!).message, /could not start by/);
    await app.close();
  });
});

describe('clock skew', () => {
  it('workers whose clocks are seconds apart, firing the same schedule in any order, create one run per fire time', async () => {
    const F0 = Math.floor(Date.now() / 1000) * 1000;
    const { broker, firer, rec, runs } = await setup({}, F0, '1s');
    const other = new ScheduleFirer({ broker, queues: [Q], logger: quietLogger });
    // Two workers, 3 s apart: each reads the stored schedule and fires with its own clock, interleaved.
    for (let i = 0; i < 20; i++) {
      const seenA = await rec();
      const seenB = await rec();
      const real = F0 + i * 1000;
      const outs = await Promise.all([firer.fire(seenA, real + 3000), other.fire(seenB, real - 3000)]);
      assert.equal(outs.filter((o) => o === 'fired').length, 1, `one of the two fired: ${outs}`);
    }
    const all = await runs();
    const times = all.map((r) => r.schedule?.at);
    assert.equal(new Set(times).size, all.length, 'no fire time twice');
    assert.deepEqual(
      times,
      Array.from({ length: 20 }, (_, i) => F0 + i * 1000),
    );
    await broker.close();
  });
});

describe('flow control', () => {
  it("fired, triggered and backfilled runs are under their task's limits, the key from the stored input", async () => {
    const path = join(tempDir('errand-sched-flow'), 'e.db');
    const app = createErrand({ broker: `sqlite:${path}`, logger: quietLogger });
    const t = app.task(
      'pol.lim',
      { input: z.object({ tenant: z.string() }), queue: Q, limits: { key: (i) => i.tenant, concurrency: 1, global: 3 } },
      async () => {},
    );
    app.schedule('s', t, { every: '1m', input: { tenant: 'acme' } });
    const broker = await app.broker();
    const [def] = app.scheduleDefinitions(Date.now());
    const F = Math.floor(Date.now() / MIN) * MIN;
    await broker.upsertSchedule({ ...def!, next: F }, Date.now());
    // As the worker builds it (worker.ts): the flow spec from the app's task definitions.
    const firer = new ScheduleFirer({
      broker,
      queues: [Q],
      logger: quietLogger,
      flowOf: (task, input) => app.tasks.get(task)?.flowOfStored(input),
    });
    assert.equal(await firer.fire((await broker.getSchedule(Q, 's'))!, F + 1000), 'fired');
    const trig = await app.triggerSchedule('s');
    const back = await app.backfillSchedule('s', F - 3 * MIN, F - MIN);
    assert.equal(back.created, 2);
    const page = await (broker as Broker & BrokerInspector).listRuns({ queue: Q, limit: 50 });
    assert.equal(page.runs.length, 4);
    for (const r of page.runs) assert.deepEqual({ group: r.flow?.group, key: r.flow?.key }, { group: 'pol.lim', key: 'acme' }, r.id);
    assert.ok(page.runs.some((r) => r.id === trig.id));
    // The key's limit of 1 holds across them all.
    const res = await broker.reserve({ workerId: 'w', queues: [Q], max: 10, leaseMs: 30_000, now: Date.now() + 2 * MIN });
    assert.equal(res.runs.length, 1);
    await app.close();
  });

  it("a worker's own fires carry the limits (the firer gets the app's task definitions)", { timeout: 30_000 }, async () => {
    const path = join(tempDir('errand-sched-flow-w'), 'e.db');
    const app = createErrand({ broker: `sqlite:${path}`, logger: quietLogger });
    const t = app.task(
      'pol.limw',
      { input: z.object({ tenant: z.string() }), queue: 'polw', limits: { key: (i) => i.tenant, concurrency: 1 } },
      async () => {},
    );
    app.schedule('sw', t, { every: '1s', input: { tenant: 'globex' } });
    const w = app.worker({ queues: ['polw'] });
    await w.start();
    const broker = (await app.broker()) as Broker & BrokerInspector;
    const run = await waitFor(async () => (await broker.listRuns({ queue: 'polw', limit: 10 })).runs.find((r) => r.schedule?.id === 'sw'), {
      timeoutMs: 20_000,
      message: 'the worker fired the schedule',
    });
    await w.stop();
    assert.deepEqual({ group: run.flow?.group, key: run.flow?.key }, { group: 'pol.limw', key: 'globex' });
    await app.close();
  });

  it('a stored input that no longer validates keeps the group limits, without a key', () => {
    const app = createErrand({ broker: 'sqlite::memory:', logger: quietLogger });
    const t = app.task(
      'pol.lim2',
      { input: z.object({ tenant: z.string() }), limits: { key: (i) => i.tenant, concurrency: 1, global: 2 } },
      async () => {},
    );
    assert.deepEqual(t.flowOfStored('{"tenant":"x"}'), { group: 'pol.lim2', key: 'x', concurrency: 1, groupConcurrency: 2 });
    assert.deepEqual(t.flowOfStored('{"other":1}'), { group: 'pol.lim2', key: '', groupConcurrency: 2 });
    assert.deepEqual(t.flowOfStored('not json'), { group: 'pol.lim2', key: '', groupConcurrency: 2 });
    const free = app.task('pol.free', { input: z.object({}) }, async () => {});
    assert.equal(free.flowOfStored('{}'), undefined);
  });
});
