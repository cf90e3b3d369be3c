/**
 * The dashboard's schedule API: the list (state, next fire times, last run, fires, misses), and
 * pause, resume, trigger now and delete, confirmed by the id (`checkAction`: an admin token and a
 * same-origin request).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Errand } from '../errand.ts';
import { triggerSchedule, viewOf } from '../schedule/manage.ts';
import { HttpError } from '../web/errors.ts';
import type { ScheduleJson, ScheduleList } from './api-types.ts';
import type { BrokerAccess } from './overview.ts';

function when(spec: string): string {
  try {
    const s = JSON.parse(spec) as { cron?: string; every?: number; timezone?: string };
    if (s.cron) return `cron ${s.cron}${s.timezone && s.timezone !== 'UTC' ? ` ${s.timezone}` : ''}`;
    if (typeof s.every === 'number') {
      const e = s.every;
      const unit = e % 3_600_000 === 0 ? [3_600_000, 'h'] : e % 60_000 === 0 ? [60_000, 'm'] : e % 1000 === 0 ? [1000, 's'] : [1, 'ms'];
      return `every ${e / (unit[0] as number)}${unit[1]}`;
    }
  } catch {
    // shown as stored
  }
  return spec.slice(0, 80);
}

export function registerScheduleApi(
  fastify: FastifyInstance,
  o: {
    api: string;
    errand: Errand;
    access: BrokerAccess;
    authorize: (request: FastifyRequest, scope: 'read' | 'admin') => unknown;
    checkAction: (request: FastifyRequest) => void;
  },
): void {
  const { api, access } = o;

  fastify.get(`${api}/schedules`, async (request): Promise<ScheduleList> => {
    o.authorize(request, 'read');
    const list = await access.call((b) => b.listSchedules());
    const schedules = list.map(viewOf).map((v): ScheduleJson => {
      let policies: Record<string, unknown> = {};
      try {
        policies = JSON.parse(v.options) as Record<string, unknown>;
      } catch {
        // none shown
      }
      const j: ScheduleJson = {
        id: v.id,
        queue: v.queue,
        task: v.task,
        state: v.state,
        when: when(v.spec),
        next: v.next,
        upcoming: v.upcoming,
        fires: v.fires,
        missed: v.missed,
        policies,
      };
      if (v.lastFire !== undefined) j.lastFire = v.lastFire;
      if (v.lastRun !== undefined) j.lastRun = v.lastRun;
      return j;
    });
    return { schedules, now: Date.now() };
  });

  const target = async (request: FastifyRequest) => {
    const { queue, id } = request.params as { queue: string; id: string };
    const rec = await access.call((b) => b.getSchedule(queue, id));
    if (!rec) throw new HttpError(404, `Schedule "${id.slice(0, 128)}" of queue "${queue.slice(0, 64)}" not found`);
    return rec;
  };

  for (const verb of ['pause', 'resume'] as const) {
    fastify.post(`${api}/schedules/:queue/:id/${verb}`, { bodyLimit: 16_384 }, async (request) => {
      o.checkAction(request);
      const rec = await target(request);
      await access.call((b) => b.pauseSchedule(rec.queue, rec.id, verb === 'pause', Date.now()));
      request.log.info({ schedule: rec.id, queue: rec.queue }, `dashboard: schedule ${verb}d`);
      return { id: rec.id, queue: rec.queue, paused: verb === 'pause' };
    });
  }

  fastify.post(`${api}/schedules/:queue/:id/delete`, { bodyLimit: 16_384 }, async (request) => {
    o.checkAction(request);
    const rec = await target(request);
    const confirm = (request.body as { confirm?: unknown } | undefined)?.confirm;
    if (confirm !== rec.id)
      throw new HttpError(400, `To delete, confirm with the schedule's id: send {"confirm": ${JSON.stringify(rec.id)}}`);
    await access.call((b) => b.deleteSchedule(rec.queue, rec.id));
    request.log.warn({ schedule: rec.id, queue: rec.queue }, 'dashboard: schedule deleted');
    return { id: rec.id, queue: rec.queue, deleted: true };
  });

  fastify.post(`${api}/schedules/:queue/:id/trigger`, { bodyLimit: 16_384 }, async (request) => {
    o.checkAction(request);
    const rec = await target(request);
    const flowOf = (task: string, input: string) => o.errand.tasks.get(task)?.flowOfStored(input);
    const r = await access.call((b) => triggerSchedule(b, rec, Date.now(), flowOf));
    request.log.info({ schedule: rec.id, queue: rec.queue, run: r.id }, 'dashboard: schedule triggered');
    return { id: rec.id, queue: rec.queue, runId: r.id };
  });
}
