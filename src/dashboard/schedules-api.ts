/**
 * The dashboard's schedule API: the list (state, next fire times, last run, fires, misses, and what
 * the edit form needs: the stored spec and input, the app's tasks), and the actions (`checkAction`:
 * an admin token and a same-origin request): save (create or update, checked as HTTP PUT
 * /schedules/{id} is), pause, resume, trigger now, backfill a range, and delete, confirmed by the id.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { ConfigError, formatPath, InputError, ScheduleNotFoundError, ScheduleVersionError } from '../core/errors.ts';
import { redactValue } from '../core/redact.ts';
import { checkSchema } from '../core/schema-issues.ts';
import type { Errand } from '../errand.ts';
import { type ScheduleOptions, viewOf } from '../schedule/manage.ts';
import { intervalText, readInstant } from '../schedule/spec.ts';
import { HttpError } from '../web/errors.ts';
import { BackfillBody, ScheduleDefinitionFields } from '../web/schedule-body.ts';
import type { ScheduleJson, ScheduleList } from './api-types.ts';
import type { BrokerAccess } from './overview.ts';

function when(spec: string): string {
  try {
    const s = JSON.parse(spec) as { cron?: string; every?: number; timezone?: string };
    if (s.cron) return `cron ${s.cron}${s.timezone && s.timezone !== 'UTC' ? ` ${s.timezone}` : ''}`;
    if (typeof s.every === 'number') return `every ${intervalText(s.every)}`;
  } catch {
    // shown as stored
  }
  return spec.slice(0, 80);
}

/** The body of save: the fields of HTTP PUT /schedules/{id}, and the id. */
const SaveBody = z.strictObject({ id: z.string().min(1).max(128), ...ScheduleDefinitionFields });

/** A schedule action's errors as answers: a bad definition (or a task with limits this app lacks) 400, a greater stored version 409, a schedule gone 404. */
async function checked<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof ScheduleVersionError) throw new HttpError(409, err.message);
    // Found, then deleted by someone else before the action.
    if (err instanceof ScheduleNotFoundError) throw new HttpError(404, err.message);
    // The form shows one line: the input's issues as text, each with its path.
    if (err instanceof InputError) {
      const issues = err.issues.map((i) => `${formatPath(i.path, 'input')}: ${i.message}`);
      throw new HttpError(400, `The input does not fit the task's schema: ${issues.join('; ')}`);
    }
    if (err instanceof ConfigError) throw new HttpError(400, err.message);
    throw err;
  }
}

/** A body checked by `schema`: 400 naming the first field that is wrong (as the dashboard's other actions). */
function bodyOf<T>(schema: z.ZodType<T>, value: unknown): T {
  const r = checkSchema(schema, value ?? {});
  if (r.ok) return r.value;
  const issue = r.issues[0]!;
  throw new HttpError(400, `Invalid body field "${issue.path.length ? issue.path.join('.') : 'body'}": ${issue.message}`);
}

function instant(v: number | string, field: string): number {
  const r = readInstant(field, v);
  if ('error' in r) throw new HttpError(400, `${field}: ${r.error}`);
  return r.at;
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
      let spec: Record<string, unknown> = {};
      try {
        spec = JSON.parse(v.spec) as Record<string, unknown>;
      } catch {
        // none shown
      }
      // The input as the form may show it: secrets (the task's redact paths) as "[redacted]", and
      // said so, so that a save never stores the placeholder in their place.
      let input: unknown = null;
      let inputRedacted = false;
      try {
        const raw = JSON.parse(v.input) as unknown;
        input = redactValue(raw, o.errand.redactPaths(v.task));
        inputRedacted = JSON.stringify(input) !== JSON.stringify(raw);
      } catch {
        input = v.input;
      }
      const j: ScheduleJson = {
        id: v.id,
        queue: v.queue,
        task: v.task,
        state: v.state,
        when: when(v.spec),
        spec,
        input,
        inputRedacted,
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
    const tasks = [...o.errand.tasks.values()].map((t) => ({ name: t.name, queue: t.queue })).sort((a, b) => a.name.localeCompare(b.name));
    return { schedules, tasks, now: Date.now() };
  });

  fastify.post(`${api}/schedules/save`, { bodyLimit: 1_100_000 }, async (request) => {
    o.checkAction(request);
    const { id, task: name, ...options } = bodyOf(SaveBody, request.body);
    const task = o.errand.tasks.get(name);
    if (!task) throw new HttpError(404, `No task named ${JSON.stringify(name.slice(0, 256))} is defined in this app`);
    const v = await checked(() => o.errand.upsertSchedule(id, task, options as ScheduleOptions));
    request.log.info({ schedule: v.id, queue: v.queue }, 'dashboard: schedule saved');
    return { id: v.id, queue: v.queue, state: v.state, next: v.next };
  });

  fastify.post(`${api}/schedules/:queue/:id/backfill`, { bodyLimit: 16_384 }, async (request) => {
    o.checkAction(request);
    const body = bodyOf(BackfillBody, request.body);
    const from = instant(body.from, 'from');
    const to = instant(body.to, 'to');
    const rec = await target(request);
    const r = await checked(() => o.errand.backfillSchedule(rec.id, from, to, rec.queue));
    request.log.info({ schedule: rec.id, queue: rec.queue, created: r.created }, 'dashboard: schedule backfilled');
    return { id: rec.id, queue: rec.queue, created: r.created, existing: r.existing, truncated: r.truncated };
  });

  const target = async (request: FastifyRequest) => {
    const { queue, id } = request.params as { queue: string; id: string };
    const rec = await access.call((b) => b.getSchedule(queue, id));
    if (!rec) throw new HttpError(404, `Schedule "${id.slice(0, 128)}" of queue "${queue.slice(0, 64)}" not found`);
    return rec;
  };

  /** A schedule found by `target`, then deleted by someone else before the action. */
  const gone = (rec: { queue: string; id: string }) =>
    new HttpError(404, `Schedule "${rec.id.slice(0, 128)}" of queue "${rec.queue.slice(0, 64)}" not found (deleted since it was read)`);

  for (const verb of ['pause', 'resume'] as const) {
    fastify.post(`${api}/schedules/:queue/:id/${verb}`, { bodyLimit: 16_384 }, async (request) => {
      o.checkAction(request);
      const rec = await target(request);
      const done = await access.call((b) => b.pauseSchedule(rec.queue, rec.id, verb === 'pause', Date.now()));
      if (!done) throw gone(rec);
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
    if (!(await access.call((b) => b.deleteSchedule(rec.queue, rec.id)))) throw gone(rec);
    request.log.warn({ schedule: rec.id, queue: rec.queue }, 'dashboard: schedule deleted');
    return { id: rec.id, queue: rec.queue, deleted: true };
  });

  fastify.post(`${api}/schedules/:queue/:id/trigger`, { bodyLimit: 16_384 }, async (request) => {
    o.checkAction(request);
    const rec = await target(request);
    // Through the app, as backfill: its runs under the task's limits, or refused (400) when the task
    // has limits and this app does not define it (the dashboard of `errand dashboard`, say).
    const r = await checked(() => o.errand.triggerSchedule(rec.id, rec.queue));
    request.log.info({ schedule: rec.id, queue: rec.queue, run: r.id }, 'dashboard: schedule triggered');
    return { id: rec.id, queue: rec.queue, runId: r.id };
  });
}
