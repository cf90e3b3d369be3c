// Leaderless firing (src/worker/schedules.ts): several workers, each firing the schedules of its
// queues, on one storage: every nominal time gets exactly one run, and its handler sees the
// schedule in ctx. On each broker (SQLite file, Redis under its own prefix).
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { z } from 'zod';
import type { Errand } from '../../src/index.ts';
import { availableSetups } from '../fixtures/brokers.ts';
import { waitFor } from '../helpers.ts';

const { setups, skipped } = await availableSetups('errand-sched');
for (const s of skipped) describe(s, { skip: s }, () => {});

interface Seen {
  at: number;
  backfilled: boolean;
  id: string;
  worker: string;
}

function appWith(make: () => Errand, seen: Seen[], name: string): Errand {
  const app = make();
  const tick = app.task('sched.tick', { input: z.object({ n: z.number() }), queue: 'sched' }, async (input, ctx) => {
    assert.equal(input.n, 7);
    if (ctx.schedule) seen.push({ at: ctx.schedule.at.getTime(), backfilled: ctx.schedule.backfilled, id: ctx.schedule.id, worker: name });
  });
  app.schedule('tick-every-second', tick, { every: '1s', input: { n: 7 }, version: 1 });
  return app;
}

for (const setup of setups) {
  describe(`schedules fire once per nominal time across workers (${setup.name})`, () => {
    after(() => setup.cleanup());

    it('three workers on one storage: each second in the window runs exactly once, ctx carries the schedule', {
      timeout: 60_000,
    }, async () => {
      const seen: Seen[] = [];
      const apps = ['a', 'b', 'c'].map((n) => appWith(() => setup.app(), seen, n));
      const workers = apps.map((app) => app.worker({ concurrency: 2 }));
      await Promise.all(workers.map((w) => w.start()));
      try {
        // At least 6 distinct seconds fired and run.
        await waitFor(() => new Set(seen.map((s) => s.at)).size >= 6, { timeoutMs: 40_000, message: 'six fires run' });
      } finally {
        await Promise.all(workers.map((w) => w.stop()));
      }
      const times = seen.map((s) => s.at).sort((x, y) => x - y);
      assert.equal(new Set(times).size, times.length, `no nominal time ran twice: ${JSON.stringify(times)}`);
      for (let i = 1; i < times.length; i++) assert.equal(times[i]! - times[i - 1]!, 1000, `no second skipped: ${JSON.stringify(times)}`);
      assert.ok(seen.every((s) => s.id === 'tick-every-second' && !s.backfilled));
      // The stored schedule: one fire per run, nothing missed; the runs carry the mark in their info.
      const [view] = await apps[0]!.listSchedules(['sched']);
      assert.ok(view);
      assert.equal(view.missed, 0);
      assert.equal(view.state, 'active');
      assert.equal(view.upcoming.length, 5);
      assert.ok(view.fires >= times.length);
      assert.ok(view.lastRun);
      const info = await apps[0]!.getRun(view.lastRun);
      assert.equal(info.schedule?.id, 'tick-every-second');
      assert.equal(info.schedule?.at.getTime(), view.lastFire);
      for (const app of apps) await app.close();
    });

    it('pause, trigger, backfill (safe to repeat), delete through the app', { timeout: 30_000 }, async () => {
      const seen: Seen[] = [];
      const app = appWith(() => setup.app(), seen, 'x');
      // Stored by a worker that does not run (schedules: false would skip it): declare by starting one and stopping it.
      const w = app.worker({ schedules: true });
      await w.start();
      await app.pauseSchedule('tick-every-second');
      await w.stop();
      const v = await app.getSchedule('tick-every-second');
      assert.equal(v?.state, 'paused');
      const trig = await app.triggerSchedule('tick-every-second');
      const run = await app.getRun(trig.id);
      assert.equal(run.schedule?.id, 'tick-every-second');
      assert.equal(run.schedule?.backfilled, false);
      const to = Math.floor(Date.now() / 1000) * 1000 - 60_000;
      const first = await app.backfillSchedule('tick-every-second', to - 5000, to);
      assert.deepEqual([first.created, first.existing, first.times.length], [5, 0, 5]);
      const again = await app.backfillSchedule('tick-every-second', to - 8000, to);
      assert.deepEqual([again.created, again.existing], [3, 5]);
      await assert.rejects(
        app.backfillSchedule('tick-every-second', to, to - 1000),
        (err: Error) => err.message.endsWith(`from < to, got ${new Date(to).toISOString()} .. ${new Date(to - 1000).toISOString()}`),
        'the range in ISO times, not epoch milliseconds',
      );
      await app.resumeSchedule('tick-every-second');
      assert.equal((await app.getSchedule('tick-every-second'))?.state, 'active');
      await app.deleteSchedule('tick-every-second');
      assert.equal(await app.getSchedule('tick-every-second'), null);
      await assert.rejects(app.pauseSchedule('tick-every-second'), /not found/);
      await app.close();
    });
  });
}
