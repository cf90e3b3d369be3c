// An isolated handler (a worker thread) sees its run's schedule in ctx, as an inline one does.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { sqliteSetup } from '../fixtures/brokers.ts';
import * as handlers from '../fixtures/isolated-tasks.ts';
import { waitFor } from '../helpers.ts';

const MODULE = new URL('../fixtures/isolated-tasks.ts', import.meta.url).href;

describe('schedules and isolated handlers', () => {
  it('ctx.schedule reaches a handler in a worker thread', { timeout: 30_000 }, async () => {
    const app = sqliteSetup('errand-sched-iso').app();
    const t = app.task('schedule_of', { input: z.object({}), isolation: 'thread', module: MODULE, queue: 'iso' }, handlers.scheduleOf);
    await app.upsertSchedule('hourly', t, { every: '1h', input: {} });
    const w = app.worker({ schedules: false });
    await w.start();
    try {
      const h = await app.triggerSchedule('hourly');
      const run = await waitFor(
        async () => {
          const r = await app.getRun(h.id);
          return r.state === 'succeeded' ? r : undefined;
        },
        { timeoutMs: 20_000, message: 'the run succeeded' },
      );
      const result = run.result as { id: string; at: number; backfilled: boolean };
      assert.equal(result.id, 'hourly');
      assert.equal(result.at, run.schedule?.at.getTime());
      assert.equal(result.backfilled, false);
    } finally {
      await w.stop();
      await app.close();
    }
  });
});
