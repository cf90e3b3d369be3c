// A schedule found, then deleted by someone else before the pause, resume or delete that found it:
// the app's methods, the dashboard's actions and `errand schedules` say not found (ScheduleNotFoundError,
// 404, exit code 2 with `schedule_not_found`), never that the schedule was paused or deleted. The
// broker is wrapped so that the schedule is deleted just before each of those calls.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Fastify from 'fastify';
import { z } from 'zod';
import type { Broker } from '../../src/broker/types.ts';
import { changeSchedule } from '../../src/cli/schedules.ts';
import { CliError } from '../../src/cli/admin-shared.ts';
import { dashboardPlugin } from '../../src/dashboard/plugin.ts';
import { createErrand, ScheduleNotFoundError } from '../../src/index.ts';
import { findSchedule } from '../../src/schedule/manage.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { tempDir } from '../helpers.ts';

/** `real`, but the schedule is deleted (by "someone else") right before each pause or delete reaches the storage. */
function deletingFirst(real: Broker): Broker {
  return new Proxy(real, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (prop === 'pauseSchedule' || prop === 'deleteSchedule')
        return async (queue: string, id: string, ...rest: unknown[]) => {
          await target.deleteSchedule(queue, id);
          return (v as (...a: unknown[]) => Promise<boolean>).apply(target, [queue, id, ...rest]);
        };
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

async function setup() {
  const app = createErrand({ broker: `sqlite:${join(tempDir('errand-sched-gone'), 'e.db')}`, logger: quietLogger });
  const t = app.task('report', { input: z.object({}), queue: 'reports' }, async () => null);
  const real = await app.broker();
  const store = () => app.upsertSchedule('hourly', t, { every: '1h', input: {} });
  const racing = createErrand({ broker: deletingFirst(real), logger: quietLogger });
  return { app, real, store, racing };
}

describe('a schedule deleted between being found and being changed', () => {
  it('the app: pause, resume and delete throw ScheduleNotFoundError', async () => {
    const { app, store, racing } = await setup();
    try {
      for (const act of [
        () => racing.pauseSchedule('hourly'),
        () => racing.resumeSchedule('hourly'),
        () => racing.deleteSchedule('hourly'),
      ]) {
        await store();
        await assert.rejects(act(), (e: unknown) => e instanceof ScheduleNotFoundError && e.scheduleId === 'hourly');
        assert.equal(await app.getSchedule('hourly'), null, 'deleted by the other');
      }
    } finally {
      await app.close();
    }
  });

  it('the dashboard: pause, resume and delete answer 404', async () => {
    const { app, store, racing } = await setup();
    const server = Fastify();
    await server.register(dashboardPlugin, { errand: racing, distDir: tempDir('errand-sched-gone-dist') });
    try {
      for (const [verb, body] of [
        ['pause', {}],
        ['resume', {}],
        ['delete', { confirm: 'hourly' }],
      ] as const) {
        await store();
        const r = await server.inject({ method: 'POST', url: `/dashboard/api/schedules/reports/hourly/${verb}`, payload: body });
        assert.equal(r.statusCode, 404, `${verb}: ${r.body}`);
        assert.match(r.json().detail, /Schedule "hourly" of queue "reports" not found \(deleted since it was read\)/);
      }
    } finally {
      await server.close();
      await app.close();
    }
  });

  it('errand schedules pause | resume | delete: schedule_not_found, exit code 2', async () => {
    const { app, real, store } = await setup();
    try {
      for (const action of ['pause', 'resume', 'delete'] as const) {
        await store();
        const rec = await findSchedule(real, 'hourly');
        assert.ok(rec, 'found first');
        await real.deleteSchedule(rec.queue, rec.id); // by someone else, after the CLI found it
        await assert.rejects(
          changeSchedule(real, rec, action, Date.now()),
          (e: unknown) =>
            e instanceof CliError &&
            e.code === 'schedule_not_found' &&
            e.exitCode === 2 &&
            /"hourly" not found \(deleted since it was read\)/.test(e.message),
        );
      }
    } finally {
      await app.close();
    }
  });
});
