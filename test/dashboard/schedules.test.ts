// The dashboard's schedule API: the list (state, next five fire times, last run, fires, misses),
// and pause, resume and run now. SQLite file, no tokens (admin scope).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { ScheduleList } from '../../src/dashboard/api-types.ts';
import { dashboardPlugin } from '../../src/dashboard/index.ts';
import { createErrand, type Errand } from '../../src/errand.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { tempDir } from '../helpers.ts';

describe('dashboard: schedules', () => {
  let errand: Errand;
  let app: FastifyInstance;
  before(async () => {
    errand = createErrand({ broker: `sqlite:${join(tempDir('errand-dash-sched'), 'e.db')}`, logger: quietLogger });
    const t = errand.task('digest', { input: z.object({}), queue: 'mail' }, async () => null);
    await errand.upsertSchedule('daily-digest', t, { cron: '0 8 * * *', timezone: 'Europe/Paris', input: {} });
    app = Fastify();
    await app.register(dashboardPlugin, { errand, distDir: tempDir('errand-dash-sched-nodist') });
  });
  after(async () => {
    await app.close();
    await errand.close();
  });
  const post = (url: string) => app.inject({ method: 'POST', url, payload: '{}', headers: { 'content-type': 'application/json' } });

  it('lists schedules with their next fire times; pause, resume, run now', async () => {
    const list = (await app.inject('/dashboard/api/schedules')).json<ScheduleList>();
    assert.equal(list.schedules.length, 1);
    const s = list.schedules[0]!;
    assert.deepEqual([s.id, s.queue, s.task, s.state, s.when], ['daily-digest', 'mail', 'digest', 'active', 'cron 0 8 * * * Europe/Paris']);
    assert.equal(s.upcoming.length, 5);
    assert.equal(s.next, s.upcoming[0]);
    assert.deepEqual((await post('/dashboard/api/schedules/mail/daily-digest/pause')).json(), {
      id: 'daily-digest',
      queue: 'mail',
      paused: true,
    });
    assert.equal((await app.inject('/dashboard/api/schedules')).json<ScheduleList>().schedules[0]!.state, 'paused');
    assert.equal((await post('/dashboard/api/schedules/mail/daily-digest/resume')).json().paused, false);
    const run = await post('/dashboard/api/schedules/mail/daily-digest/trigger');
    assert.equal(run.statusCode, 200);
    const detail = (await app.inject(`/dashboard/api/runs/${run.json().runId}`)).json();
    assert.equal(detail.schedule.id, 'daily-digest');
    assert.equal((await post('/dashboard/api/schedules/mail/nope/pause')).statusCode, 404);
    assert.equal((await post('/dashboard/api/schedules/mail/daily-digest/delete')).statusCode, 400, 'not confirmed');
    const del = await app.inject({
      method: 'POST',
      url: '/dashboard/api/schedules/mail/daily-digest/delete',
      payload: JSON.stringify({ confirm: 'daily-digest' }),
      headers: { 'content-type': 'application/json' },
    });
    assert.deepEqual(del.json(), { id: 'daily-digest', queue: 'mail', deleted: true });
    assert.deepEqual((await app.inject('/dashboard/api/schedules')).json<ScheduleList>().schedules, []);
  });
});
