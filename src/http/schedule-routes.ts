/**
 * The schedule routes of `errandRoutes`: list, get, create or update (PUT), pause, resume, trigger,
 * backfill, delete. Reads need the `read` scope, changes `admin`. A schedule is named by its id (and
 * `?queue=` when the same id exists in several queues).
 */
import { z } from 'zod';
import {
  BrokerUnavailableError,
  brokerFailure,
  ConfigError,
  InputError,
  ScheduleNotFoundError,
  ScheduleVersionError,
} from '../core/errors.ts';
import { QUEUE_NAME } from '../core/ids.ts';
import { redactValue } from '../core/redact.ts';
import { MAX_SCHEDULE_VERSION, SCHEDULE_ID, SCHEDULE_VERSION_RULE } from '../broker/shared/schedules.ts';
import type { ScheduleOptions, ScheduleView } from '../schedule/manage.ts';
import { SchedulePolicyError } from '../schedule/plan.ts';
import { readInstant, ScheduleSpecError } from '../schedule/spec.ts';
import { HttpError, RequestValidationError, type ValidationDetail } from '../web/errors.ts';
import { BackfillBody, ScheduleDefinitionFields } from '../web/schedule-body.ts';
import type { RouteContext } from './route-context.ts';
import { errorResponses, RunStateSchema, ScheduleSchema, scheduleToJson } from './schemas.ts';

const Params = z.object({
  id: z.string().regex(SCHEDULE_ID, 'must be 1 to 128 characters without spaces').describe('The schedule id'),
});
const QueueQuery = z.object({
  queue: z
    .string()
    .regex(QUEUE_NAME, 'must be 1 to 64 letters, digits, "_" or "-"')
    .optional()
    .describe('The queue, when the id exists in several'),
});
const UpsertBody = z.strictObject({
  ...ScheduleDefinitionFields,
  version: z
    .number()
    .int({ error: `must be ${SCHEDULE_VERSION_RULE}` })
    .min(0, { error: `must be ${SCHEDULE_VERSION_RULE}` })
    .max(MAX_SCHEDULE_VERSION, { error: `must be ${SCHEDULE_VERSION_RULE}` })
    .optional()
    .describe(`The definition's version, ${SCHEDULE_VERSION_RULE}. Default: the time of the request in ms (a later update wins)`),
});

const Done = z.object({ id: z.string(), queue: z.string(), state: z.string() }).describe('The schedule after the action');

/** A backfill's bounds, read as every schedule instant is (readInstant: a zone required); a 422 naming each bad one. */
function range(body: { from: number | string; to: number | string }): { from: number; to: number } {
  const issues: ValidationDetail[] = [];
  const at = (field: 'from' | 'to'): number => {
    const r = readInstant(field, body[field]);
    if ('at' in r) return r.at;
    issues.push({ loc: ['body', field], msg: r.error, type: 'value_error' });
    return Number.NaN;
  };
  const from = at('from');
  const to = at('to');
  if (!issues.length && !(from < to)) {
    issues.push({ loc: ['body', 'to'], msg: `must be after from (${new Date(from).toISOString()})`, type: 'value_error' });
  } else if (!issues.length && to > Date.now()) {
    issues.push({ loc: ['body', 'to'], msg: 'must be at or before now (later times are fired as usual)', type: 'value_error' });
  }
  if (issues.length) throw new RequestValidationError(issues);
  return { from, to };
}

/** A refused schedule definition as 422 details: each issue at its field of the body. */
function definitionDetail(err: ScheduleSpecError | SchedulePolicyError): ValidationDetail[] {
  return err.issues.map((i) => ({ loc: i.field === '(spec)' ? ['body'] : ['body', i.field], msg: i.message, type: 'value_error' }));
}

export function registerScheduleRoutes(ctx: RouteContext): void {
  const { app, errand, guard, security } = ctx;
  const json = (v: ScheduleView) => {
    const input = (() => {
      try {
        return redactValue(JSON.parse(v.input), errand.redactPaths(v.task));
      } catch {
        return v.input;
      }
    })();
    return scheduleToJson(v, input);
  };
  /** Errand's errors of a schedule action as HTTP answers. */
  async function act<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof ScheduleNotFoundError) throw new HttpError(404, err.message);
      if (err instanceof ScheduleVersionError) throw new HttpError(409, err.message);
      // The schedule's input refused by its task's schema: the problems are under the body's `input`.
      if (err instanceof InputError && err.root === 'input') {
        throw new RequestValidationError(err.issues.map((i) => ({ loc: ['body', 'input', ...i.path], msg: i.message, type: i.code })));
      }
      if (err instanceof ScheduleSpecError || err instanceof SchedulePolicyError) throw new RequestValidationError(definitionDetail(err));
      if (err instanceof InputError || err instanceof BrokerUnavailableError) throw err;
      if (err instanceof ConfigError) throw new HttpError(400, err.message);
      throw brokerFailure(err);
    }
  }
  const found = async (id: string, queue?: string): Promise<ScheduleView> => {
    const v = await act(() => errand.getSchedule(id, queue));
    if (!v) throw new HttpError(404, new ScheduleNotFoundError(id).message);
    return v;
  };

  app.get(
    '/schedules',
    {
      onRequest: guard('read'),
      schema: {
        summary: 'List schedules',
        operationId: 'list_schedules',
        description: 'Every stored schedule (of one queue with ?queue=): state, next five fire times, last fire and run, fires and misses.',
        tags: ['schedules'],
        querystring: QueueQuery,
        response: { 200: z.object({ schedules: z.array(ScheduleSchema) }), ...errorResponses(401, 422, 503) },
        security: security('read'),
      },
    },
    async (request) => {
      const { queue } = request.query;
      const list = await act(() => errand.listSchedules(queue ? [queue] : undefined));
      return { schedules: list.map(json) };
    },
  );

  app.get(
    '/schedules/:id',
    {
      onRequest: guard('read'),
      schema: {
        summary: 'Get a schedule',
        operationId: 'get_schedule',
        tags: ['schedules'],
        params: Params,
        querystring: QueueQuery,
        response: { 200: ScheduleSchema, ...errorResponses(400, 401, 404, 422, 503) },
        security: security('read'),
      },
    },
    async (request) => json(await found(request.params.id, request.query.queue)),
  );

  app.put(
    '/schedules/:id',
    {
      onRequest: guard('admin'),
      schema: {
        summary: 'Create or update a schedule',
        operationId: 'put_schedule',
        description:
          "Stores the schedule of a task defined on the server: a cron or an interval (with timezone, start, end), the runs' input and the policies. " +
          'Its version is the time of the request unless given: a definition of a smaller version (an older deploy) never replaces it, and gets 409 naming the stored version.',
        tags: ['schedules'],
        params: Params,
        body: UpsertBody,
        response: { 200: ScheduleSchema, ...errorResponses(400, 401, 403, 404, 409, 413, 415, 422, 503) },
        security: security('admin'),
      },
    },
    async (request) => {
      const { task: name, ...options } = request.body;
      const task = errand.tasks.get(name);
      if (!task) throw new HttpError(404, `No task named ${JSON.stringify(name)} is defined on this server`);
      return json(await act(() => errand.upsertSchedule(request.params.id, task, options as ScheduleOptions)));
    },
  );

  for (const action of ['pause', 'resume'] as const) {
    app.post(
      `/schedules/:id/${action}`,
      {
        onRequest: guard('admin'),
        schema: {
          summary: action === 'pause' ? 'Pause a schedule' : 'Resume a schedule',
          operationId: `${action}_schedule`,
          description:
            action === 'pause'
              ? 'No fires until resumed. The fire times it passes are handled by its missed-fire policy when resumed.'
              : 'Fires again; the fire times passed while paused are handled by its missed-fire policy.',
          tags: ['schedules'],
          params: Params,
          querystring: QueueQuery,
          response: { 200: Done, ...errorResponses(400, 401, 403, 404, 422, 503) },
          security: security('admin'),
        },
      },
      async (request) => {
        const v = await found(request.params.id, request.query.queue);
        await act(() => errand.pauseSchedule(v.id, action === 'pause', v.queue));
        return { id: v.id, queue: v.queue, state: action === 'pause' ? 'paused' : v.next === null ? 'ended' : 'active' };
      },
    );
  }

  app.post(
    '/schedules/:id/trigger',
    {
      onRequest: guard('admin'),
      schema: {
        summary: 'Run a schedule now',
        operationId: 'trigger_schedule',
        description: 'One run of the schedule now, outside its fire times (also while paused).',
        tags: ['schedules'],
        params: Params,
        querystring: QueueQuery,
        response: { 200: z.object({ run_id: z.string(), status: RunStateSchema }), ...errorResponses(400, 401, 403, 404, 422, 503) },
        security: security('admin'),
      },
    },
    async (request) => {
      const v = await found(request.params.id, request.query.queue);
      const h = await act(() => errand.triggerSchedule(v.id, v.queue));
      return { run_id: h.id, status: h.enqueuedState ?? 'queued' };
    },
  );

  app.post(
    '/schedules/:id/backfill',
    {
      onRequest: guard('admin'),
      schema: {
        summary: 'Backfill a time range',
        operationId: 'backfill_schedule',
        description:
          'A run, marked backfilled, for each fire time in [from, to) that has none yet (at most 1000 per call). Safe to repeat: a time keeps its one run.',
        tags: ['schedules'],
        params: Params,
        querystring: QueueQuery,
        body: BackfillBody,
        response: {
          200: z.object({
            created: z.number().int(),
            existing: z.number().int().describe('Fire times that already had their run'),
            truncated: z.boolean().describe('More than 1000 fire times in the range: only the first 1000 were done'),
          }),
          ...errorResponses(400, 401, 403, 404, 413, 415, 422, 503),
        },
        security: security('admin'),
      },
    },
    async (request) => {
      const v = await found(request.params.id, request.query.queue);
      const { from, to } = range(request.body);
      const r = await act(() => errand.backfillSchedule(v.id, from, to, v.queue));
      return { created: r.created, existing: r.existing, truncated: r.truncated };
    },
  );

  app.delete(
    '/schedules/:id',
    {
      onRequest: guard('admin'),
      schema: {
        summary: 'Delete a schedule',
        operationId: 'delete_schedule',
        description: 'Its runs stay. A schedule declared in code is stored again by the next worker that starts.',
        tags: ['schedules'],
        params: Params,
        querystring: QueueQuery,
        response: { 200: Done, ...errorResponses(400, 401, 403, 404, 422, 503) },
        security: security('admin'),
      },
    },
    async (request) => {
      const v = await found(request.params.id, request.query.queue);
      await act(() => errand.deleteSchedule(v.id, v.queue));
      return { id: v.id, queue: v.queue, state: 'deleted' };
    },
  );
}
