// errand/testing and schedules: a drain does not fire the app's schedules (it runs what is due,
// deterministically); a schedule's run is made with triggerSchedule and drained, its ctx carrying
// the schedule.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { createErrand } from '../../src/index.ts';
import { createTesting } from '../../src/testing/index.ts';

describe('errand/testing with schedules', () => {
  it('a drain fires nothing; a triggered run of a schedule drains with ctx.schedule', async () => {
    const app = createErrand();
    const t = createTesting(app);
    const seen: unknown[] = [];
    const tick = app.task('tick', { input: z.object({}) }, async (_i, ctx) => {
      seen.push(ctx.schedule?.id);
    });
    app.schedule('every-second', tick, { every: '1s', input: {} });
    assert.equal((await t.drain()).runs.length, 0);
    assert.deepEqual(await app.listSchedules(), [], 'the drain stored no schedule');
    await app.upsertSchedule('every-second', tick, { every: '1s', input: {} });
    await app.triggerSchedule('every-second');
    const r = await t.drain();
    assert.equal(r.succeeded, 1);
    assert.deepEqual(seen, ['every-second']);
    await t.close();
  });
});
