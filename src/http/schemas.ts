/**
 * The JSON the HTTP layer answers with, as zod schemas (the OpenAPI document is generated from
 * them), and the conversion of a stored run into that JSON. Field names are snake_case, times are
 * ISO 8601 strings, absent values are null: every run has the same keys.
 */
import { z } from 'zod';
import { RUN_STATES, type RunRecord } from '../broker/types.ts';
import { decodeRun, readRunError } from '../core/run-info.ts';
import type { ScheduleView } from '../schedule/manage.ts';

export const RunStateSchema = z
  .enum(RUN_STATES as [string, ...string[]])
  .describe('waiting (a workflow run waiting for its dependencies), queued, scheduled, active, succeeded, failed or cancelled');

const IsoTime = z.string().describe('ISO 8601 time (UTC)');

export const RunErrorSchema = z
  .object({
    name: z.string(),
    message: z.string(),
    reason: z.string().optional().describe('Set when Errand (not the handler) failed the run: lease_lost, invalid_input, timeout, ...'),
    stack: z.string().optional().describe('Only when the server was created with errorStacks: true'),
  })
  .describe('The error kept on the run');

export const AttemptSchema = z.object({
  attempt: z.number().int(),
  worker: z.string(),
  started_at: IsoTime.nullable(),
  finished_at: IsoTime.nullable(),
  outcome: z.string().nullable().describe('succeeded, failed, retry, lost, released or cancelled'),
  error: RunErrorSchema.nullable(),
});

export const RunSchema = z
  .object({
    id: z.string(),
    task: z.string(),
    queue: z.string(),
    state: RunStateSchema,
    priority: z.number().int(),
    input: z.unknown().describe('The task input, as enqueued'),
    result: z.unknown().describe('What the handler returned (null until the run succeeded)'),
    error: RunErrorSchema.nullable(),
    progress: z.unknown().describe('The latest progress the handler reported, or null'),
    attempts: z.number().int().describe('How many times the run was started'),
    lease_losses: z.number().int().describe('How many times a worker running it died or stalled'),
    enqueued_at: IsoTime,
    run_at: IsoTime.nullable().describe(
      'When the run is (or was) due, when that is not its enqueue time: a delayed start, or the due time of a retry; kept once it has started. Null for a run due at once',
    ),
    started_at: IsoTime.nullable(),
    finished_at: IsoTime.nullable(),
    expires_at: IsoTime.nullable().describe('When a finished run will be deleted'),
    worker: z.string().nullable().describe('The worker of the latest attempt'),
    idempotency_key: z.string().nullable(),
    traceparent: z.string().nullable(),
    schedule: z
      .object({
        id: z.string().describe('The schedule that created the run'),
        at: IsoTime.describe('The nominal fire time the run stands for'),
        backfilled: z.boolean().describe('Created late: a missed fire run by the missed-fire policy, or a backfill'),
      })
      .nullable()
      .describe('Set when a schedule created the run'),
    history: z.array(AttemptSchema),
    corrupt: z.array(z.string()).optional().describe('Fields whose stored JSON could not be read (their raw text is given)'),
    origin: z
      .string()
      .optional()
      .describe(
        'Where a run recorded from elsewhere ran (`celery`: a Celery task served by an errand/celery worker); absent for Errand runs',
      ),
    start_by: IsoTime.optional().describe(
      'The deadline to start (expiresIn, expiresAt): a run not started by then is dropped, failed with reason `expired`. Absent: none',
    ),
    flow: z
      .object({
        group: z.string().describe('The task whose limits the run counts against'),
        key: z.string().describe("The run's key ('' when only the task's limits apply)"),
        waiting: z
          .object({
            reason: z
              .enum(['key_concurrency', 'group_concurrency', 'key_rate', 'group_rate', 'key_backoff', 'group_backoff'])
              .describe('At the limit of active runs, over the rate, or backed off by a handler (ctx.backOff)'),
            active: z.number().int().optional(),
            limit: z.number().int().optional(),
            until: IsoTime.optional().describe('When the key (or task) may start again'),
          })
          .optional()
          .describe('For a queued run: the limit that holds it back now, if one does'),
      })
      .optional()
      .describe('Flow control (docs/flow-control.md): present for a run of a task with limits'),
  })
  .describe('A run');

export type RunJson = z.infer<typeof RunSchema>;

export const EnqueuedSchema = z
  .object({
    id: z.string().describe('The run id'),
    status: RunStateSchema.describe('The run state: queued, or scheduled when delayed (the existing run state when created is false)'),
    created: z.boolean().describe('False when the Idempotency-Key matched an existing run: id is then that run'),
    status_url: z.string().describe('GET it for the run'),
    events_url: z.string().describe('GET it for server-sent events on the run'),
  })
  .describe('The run that was enqueued (or found by its idempotency key)');

export const RunActionSchema = z.object({
  id: z.string(),
  state: RunStateSchema,
  previous_state: RunStateSchema.optional().describe('For cancel: the state the run was cancelled from'),
});

export const TaskInfoSchema = z.object({
  name: z.string(),
  description: z.string().nullable(),
  queue: z.string(),
  priority: z.number().int(),
  max_attempts: z.number().int(),
  timeout_ms: z.number(),
  enqueue_url: z.string(),
});

export const ValidationDetailSchema = z.object({
  loc: z.array(z.union([z.string(), z.number()])).describe('Where: "body", "query", "path" or "header", then the path to the field'),
  msg: z.string(),
  type: z.string(),
});

export const ErrorSchema = z.object({ detail: z.string() }).describe('An error');
export const ValidationErrorSchema = z.object({ detail: z.array(ValidationDetailSchema) }).describe('Invalid request fields');

/** The error answers a route may give, for its OpenAPI document. */
export function errorResponses(...codes: number[]): Record<number, z.ZodType> {
  const out: Record<number, z.ZodType> = {};
  for (const code of codes) out[code] = code === 422 ? ValidationErrorSchema : ErrorSchema;
  return out;
}

function iso(ms: number | undefined | null): string | null {
  if (ms === undefined || ms === null || !Number.isFinite(ms)) return null;
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
}

function errorJson(text: string | undefined, stacks: boolean): z.infer<typeof RunErrorSchema> | null {
  const e = readRunError(text);
  if (!e) return null;
  if (!stacks) delete e.stack;
  return e;
}

/** A stored run as the HTTP layer shows it. */
export function runToJson(rec: RunRecord, options: { errorStacks?: boolean } = {}): RunJson {
  const stacks = options.errorStacks === true;
  const info = decodeRun(rec);
  const json: RunJson = {
    id: info.id,
    task: info.task,
    queue: info.queue,
    state: info.state,
    priority: info.priority,
    input: info.input ?? null,
    result: info.result ?? null,
    error: errorJson(rec.error, stacks),
    progress: info.progress ?? null,
    attempts: info.attempts,
    lease_losses: info.leaseLosses ?? 0,
    enqueued_at: iso(rec.enqueuedAt) ?? new Date(0).toISOString(),
    // Kept once the run has started: a delayed run's due time stays part of its story.
    run_at: rec.runAt !== undefined && (rec.state === 'scheduled' || rec.runAt > rec.enqueuedAt) ? iso(rec.runAt) : null,
    started_at: iso(rec.startedAt),
    finished_at: iso(rec.finishedAt),
    expires_at: iso(rec.expiresAt),
    worker: rec.worker ?? null,
    idempotency_key: rec.idempotencyKey ?? null,
    traceparent: rec.traceparent ?? null,
    schedule: rec.schedule
      ? { id: rec.schedule.id, at: iso(rec.schedule.at) ?? new Date(0).toISOString(), backfilled: rec.schedule.backfilled }
      : null,
    history: (rec.history ?? []).map((h) => ({
      attempt: h.attempt,
      worker: h.worker,
      started_at: iso(h.startedAt),
      finished_at: iso(h.finishedAt),
      outcome: h.outcome ?? null,
      error: errorJson(h.error, stacks),
    })),
  };
  if (info.corrupt?.length) json.corrupt = info.corrupt;
  if (rec.origin !== undefined) json.origin = rec.origin;
  if (rec.startBy !== undefined) json.start_by = new Date(rec.startBy).toISOString();
  if (rec.flow !== undefined) {
    const flow: NonNullable<RunJson['flow']> = { group: rec.flow.group, key: rec.flow.key };
    const w = rec.flow.waiting;
    if (w) {
      const waiting: NonNullable<NonNullable<RunJson['flow']>['waiting']> = { reason: w.reason };
      if (w.active !== undefined) waiting.active = w.active;
      if (w.limit !== undefined) waiting.limit = w.limit;
      if (w.until !== undefined) waiting.until = new Date(w.until).toISOString();
      flow.waiting = waiting;
    }
    json.flow = flow;
  }
  return json;
}

// ---- schedules ----------------------------------------------------------------------------------

export const ScheduleSchema = z
  .object({
    id: z.string(),
    queue: z.string(),
    task: z.string(),
    state: z.enum(['active', 'paused', 'ended']).describe('paused: no fires until resumed; ended: past its end, no fire left'),
    spec: z.record(z.string(), z.unknown()).describe('The time spec as stored: cron and timezone, or every (ms); start and end (epoch ms)'),
    input: z.unknown().describe('The input of every run'),
    policies: z.record(z.string(), z.unknown()).describe('missed, maxBackfill, catchUpMs, overlap, expire, priority'),
    version: z.number().describe("The stored definition's version: a definition of a smaller one never replaces it"),
    next_fire_at: IsoTime.nullable(),
    upcoming: z.array(IsoTime).describe('The next five fire times'),
    last_fire_at: IsoTime.nullable().describe('The nominal time of the latest fire'),
    last_run_id: z.string().nullable().describe('The run the latest fire created'),
    fires: z.number().int().describe('Runs created by fires'),
    missed: z.number().int().describe('Fire times given up (missed-fire and overlap policies)'),
    created_at: IsoTime.nullable(),
    updated_at: IsoTime.nullable(),
  })
  .describe('A schedule');

export type ScheduleJson = z.infer<typeof ScheduleSchema>;

function parsedOr(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** A stored schedule (with its next fire times) as the HTTP layer and the CLI answer it; `input` already redacted by the caller if needed. */
export function scheduleToJson(v: ScheduleView, input: unknown = parsedOr(v.input)): ScheduleJson {
  const spec = parsedOr(v.spec);
  const policies = parsedOr(v.options);
  return {
    id: v.id,
    queue: v.queue,
    task: v.task,
    state: v.state,
    spec: spec && typeof spec === 'object' ? (spec as Record<string, unknown>) : {},
    input,
    policies: policies && typeof policies === 'object' ? (policies as Record<string, unknown>) : {},
    version: v.version,
    next_fire_at: iso(v.next),
    upcoming: v.upcoming.map((t) => iso(t) ?? ''),
    last_fire_at: iso(v.lastFire),
    last_run_id: v.lastRun ?? null,
    fires: v.fires,
    missed: v.missed,
    created_at: iso(v.createdAt),
    updated_at: iso(v.updatedAt),
  };
}
