// The dashboard's schedule API: the list (state, next five fire times, last run, fires, misses, the
// stored spec and input, the app's tasks), and save, pause, resume, run now, backfill, delete.
// SQLite file, no tokens (admin scope); a read token may not act.
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
    errand.task(
      'report',
      { input: z.object({ kind: z.string(), apiKey: z.string().optional() }), queue: 'reports', redact: ['apiKey'] },
      async () => null,
    );
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

  it('run now of a task with limits: under them; refused (400, nothing created) by a dashboard whose app lacks the task', async () => {
    // Two apps on this broker: one defines the task (and declares the schedule), the other (as
    // `errand dashboard` runs one) defines none. Each with its dashboard.
    const full = createErrand({ broker: await errand.broker(), logger: quietLogger });
    const sync = full.task(
      'sync',
      { input: z.object({ tenant: z.string() }), queue: 'syncs', limits: { key: (i) => i.tenant, concurrency: 1 } },
      async () => null,
    );
    await full.upsertSchedule('tenant-sync', sync, { every: '1h', input: { tenant: 'acme' } });
    const bare = createErrand({ broker: await errand.broker(), logger: quietLogger });
    const dashboards = [Fastify(), Fastify()] as const;
    await dashboards[0].register(dashboardPlugin, { errand: full, distDir: tempDir('errand-dash-sched-nodist') });
    await dashboards[1].register(dashboardPlugin, { errand: bare, distDir: tempDir('errand-dash-sched-nodist') });
    const trigger = (d: FastifyInstance) =>
      d.inject({
        method: 'POST',
        url: '/dashboard/api/schedules/syncs/tenant-sync/trigger',
        payload: '{}',
        headers: { 'content-type': 'application/json' },
      });
    try {
      const run = await trigger(dashboards[0]);
      assert.equal(run.statusCode, 200, run.body);
      assert.deepEqual((await errand.getRun(run.json().runId)).flow, { group: 'sync', key: 'acme' });
      const r = await trigger(dashboards[1]);
      assert.equal(r.statusCode, 400, r.body);
      assert.match(r.json().detail, /runs task "sync", which has flow-control limits, .*nothing was created/);
      assert.equal((await (await errand.broker()).counts(['syncs'])).syncs?.queued, 1);
    } finally {
      await Promise.all(dashboards.map((d) => d.close()));
      await (await errand.broker()).deleteSchedule('syncs', 'tenant-sync');
    }
  });

  const send = (url: string, body: unknown, headers: Record<string, string> = {}) =>
    app.inject({ method: 'POST', url, payload: JSON.stringify(body), headers: { 'content-type': 'application/json', ...headers } });

  it('save creates and updates a schedule with the checks of HTTP PUT; each refusal says what is wrong', async () => {
    const created = await send('/dashboard/api/schedules/save', {
      id: 'weekly',
      task: 'report',
      cron: '0 6 * * 1',
      timezone: 'America/New_York',
      input: { kind: 'w', apiKey: 'secret-1' },
      overlap: 'skip',
      priority: 3,
    });
    assert.equal(created.statusCode, 200, created.body);
    assert.equal(created.json().queue, 'reports');
    let list = (await app.inject('/dashboard/api/schedules')).json<ScheduleList>();
    assert.deepEqual(
      list.tasks.map((t) => t.name),
      ['digest', 'report'],
    );
    let s = list.schedules.find((x) => x.id === 'weekly')!;
    assert.deepEqual(s.spec, { cron: '0 6 * * 1', timezone: 'America/New_York' });
    assert.deepEqual([s.policies.overlap, s.policies.priority], ['skip', 3]);
    // The secret is not shown, and the form is told so (an edit must give the input again).
    assert.deepEqual(s.input, { kind: 'w', apiKey: '[redacted]' });
    assert.equal(s.inputRedacted, true);
    assert.equal((await errand.getSchedule('weekly'))?.input, '{"kind":"w","apiKey":"secret-1"}');
    const updated = await send('/dashboard/api/schedules/save', { id: 'weekly', task: 'report', every: '2h', input: { kind: 'x' } });
    assert.equal(updated.statusCode, 200, updated.body);
    list = (await app.inject('/dashboard/api/schedules')).json<ScheduleList>();
    s = list.schedules.find((x) => x.id === 'weekly')!;
    assert.deepEqual([s.spec, s.input, s.inputRedacted], [{ every: 7_200_000 }, { kind: 'x' }, false]);

    const refused = async (body: unknown, status: number, re: RegExp) => {
      const r = await send('/dashboard/api/schedules/save', body);
      assert.equal(r.statusCode, status, r.body);
      assert.match(r.json().detail, re);
    };
    await refused({ id: 'x', task: 'report', cron: '61 * * * *', input: { kind: 'a' } }, 400, /cron/);
    await refused({ id: 'x', task: 'report', every: '1m', timezone: 'Mars/Base', input: { kind: 'a' } }, 400, /Mars\/Base/);
    await refused({ id: 'x', task: 'report', cron: '0 * * * *', every: '1m', input: { kind: 'a' } }, 400, /cron|every/);
    await refused({ id: 'x', task: 'report', every: '1m', input: { kind: 5 } }, 400, /input\.kind: /);
    await refused({ id: 'x', task: 'nope', every: '1m' }, 404, /No task named "nope"/);
    await refused({ id: 'has space', task: 'report', every: '1m', input: { kind: 'a' } }, 400, /1 to 128 characters without spaces/);
    await refused({ id: 'x', task: 'report', every: '1m', colour: 'red' }, 400, /Invalid body field/);
    await refused({ id: 'x', task: 'report', every: '1m', overlap: 'sometimes' }, 400, /overlap/);
    // A definition stored with a greater version (a deploy ahead) is not replaced from here.
    await errand.upsertSchedule('ahead', errand.tasks.get('digest')!, { every: '1h', input: {}, version: Date.now() + 86_400_000 });
    await refused({ id: 'ahead', task: 'digest', every: '5m', input: {} }, 409, /not updated: the stored definition has version/);
    assert.equal(await errand.getSchedule('x'), null, 'nothing refused was stored');
  });

  it('backfill creates the runs of a past range once; a bad range is refused, naming the field', async () => {
    await send('/dashboard/api/schedules/save', { id: 'hourly', task: 'digest', every: '1h', input: {} });
    const to = new Date(Math.floor(Date.now() / 3_600_000) * 3_600_000).toISOString();
    const from = new Date(Date.parse(to) - 3 * 3_600_000).toISOString();
    const r1 = await send('/dashboard/api/schedules/mail/hourly/backfill', { from, to });
    assert.equal(r1.statusCode, 200, r1.body);
    assert.deepEqual([r1.json().created, r1.json().existing], [3, 0]);
    const r2 = await send('/dashboard/api/schedules/mail/hourly/backfill', { from, to });
    assert.deepEqual([r2.json().created, r2.json().existing], [0, 3]);
    const local = await send('/dashboard/api/schedules/mail/hourly/backfill', { from: '2026-01-01T00:00:00', to });
    assert.equal(local.statusCode, 400);
    assert.match(local.json().detail, /^from: /);
    const future = await send('/dashboard/api/schedules/mail/hourly/backfill', { from, to: Date.now() + 3_600_000 });
    assert.equal(future.statusCode, 400);
    assert.match(future.json().detail, /end at or before now/);
    assert.equal((await send('/dashboard/api/schedules/mail/nope/backfill', { from, to })).statusCode, 404);
  });

  it('with tokens, a read token sees the schedules but may not save or backfill', async () => {
    const secured = Fastify();
    await secured.register(dashboardPlugin, {
      errand,
      auth: { read: ['r-token'], admin: ['a-token'] },
      distDir: tempDir('errand-dash-sched-nodist2'),
    });
    const read = { authorization: 'Bearer r-token' };
    assert.equal((await secured.inject({ url: '/dashboard/api/schedules', headers: read })).statusCode, 200);
    for (const [url, body] of [
      ['/dashboard/api/schedules/save', { id: 'r', task: 'digest', every: '1h', input: {} }],
      ['/dashboard/api/schedules/mail/hourly/backfill', { from: 0, to: 1 }],
    ] as const) {
      const r = await secured.inject({
        method: 'POST',
        url,
        payload: JSON.stringify(body),
        headers: { ...read, 'content-type': 'application/json' },
      });
      assert.equal(r.statusCode, 403, url);
    }
    const cross = await secured.inject({
      method: 'POST',
      url: '/dashboard/api/schedules/save',
      payload: JSON.stringify({ id: 'r', task: 'digest', every: '1h', input: {} }),
      headers: { authorization: 'Bearer a-token', 'content-type': 'application/json', 'sec-fetch-site': 'cross-site' },
    });
    assert.equal(cross.statusCode, 403);
    assert.equal(await errand.getSchedule('r'), null);
    await secured.close();
  });
});
