/**
 * The task routes of `errandRoutes`: `POST /tasks/{name}` (one route per task, its input schema as
 * the body; options in the query string and headers) and `GET /tasks`.
 */
import type { FastifyReply, FastifyRequest, FastifySchemaCompiler } from 'fastify';
import { z } from 'zod';
import type { RunState } from '../broker/types.ts';
import { brokerFailure, ConfigError, InputError } from '../core/errors.ts';
import { checkSchema, nullAsMissing } from '../core/schema-issues.ts';
import type { Task } from '../errand.ts';
import type { RunHandle } from '../task/handle.ts';
import { type EnqueueOptions, MAX_DELAY_MS } from '../task/task.ts';
import { findBodyProblem } from './body.ts';
import { HttpError, issuesToDetail, RequestValidationError, type ValidationDetail } from '../web/errors.ts';
import { EnqueuedSchema, errorResponses, TaskInfoSchema } from './schemas.ts';

import type { RouteContext } from './route-context.ts';

const TRACEPARENT = /^([\da-f]{2})-([\da-f]{32})-([\da-f]{16})-([\da-f]{2})$/;

/** The request's W3C `traceparent`, when present and valid (an invalid one is ignored, as the spec says). */
export function traceparentOf(request: FastifyRequest): string | undefined {
  const h = request.headers.traceparent;
  if (typeof h !== 'string') return undefined;
  const m = TRACEPARENT.exec(h.trim());
  if (!m) return undefined;
  if (m[1] === 'ff' || /^0+$/.test(m[2]!) || /^0+$/.test(m[3]!)) return undefined;
  return m[0];
}

export const EnqueueQuerySchema = z
  .object({
    delay: z.coerce
      .number()
      .int()
      .min(0)
      .max(MAX_DELAY_MS)
      .optional()
      .describe('Start the run no sooner than this many milliseconds from now. Not together with run_at.'),
    run_at: z.iso
      .datetime({ offset: true })
      .optional()
      .describe('Start the run no sooner than this time: ISO 8601 with a zone, e.g. 2030-01-01T09:00:00Z. Not together with delay.'),
    priority: z.coerce
      .number()
      .int()
      .min(-1000)
      .max(1000)
      .optional()
      .describe("Higher runs first; an integer from -1000 to 1000. Default: the task's priority."),
    expires_in: z.coerce
      .number()
      .int()
      .min(1)
      .max(MAX_DELAY_MS)
      .optional()
      .describe(
        "Drop the run (failed, reason expired) if it has not started this many milliseconds after it is due. Default: the task's expiresIn. Not together with expires_at.",
      ),
    expires_at: z.iso
      .datetime({ offset: true })
      .optional()
      .describe('Drop the run if it has not started by this time: ISO 8601 with a zone. Not together with expires_in.'),
  })
  .superRefine((q, ctx) => {
    if (q.delay !== undefined && q.run_at !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['run_at'], message: 'give either delay or run_at, not both' });
    }
    if (q.expires_in !== undefined && q.expires_at !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['expires_at'], message: 'give either expires_in or expires_at, not both' });
    }
  });

export const EnqueueHeadersSchema = z.looseObject({
  'idempotency-key': z
    .string()
    .min(1)
    .max(512)
    .optional()
    .describe("Same key for this task within the task's idempotency window: the first run is returned, no second run is made"),
  traceparent: z.string().optional().describe('W3C trace context, carried to the worker (ignored when invalid)'),
});

/**
 * An InputError from enqueue as 422 details: option problems point at the query or header they came
 * from; `body` is the request's (null when it had none).
 */
function inputErrorToDetail(err: InputError, body: unknown): ValidationDetail[] {
  if (err.root !== 'options') return issuesToDetail('body', nullAsMissing(body, err.issues));
  return err.issues.map((i) => {
    const key = String(i.path[0] ?? '');
    return { loc: OPTION_LOC[key] ?? ['query', key], msg: i.message, type: i.code };
  });
}

const ENQUEUE_QUERY_KEYS = Object.keys(EnqueueQuerySchema.shape);

/**
 * The enqueue query for its schema, less what it would take wrongly: an option given twice
 * (`?delay=1&delay=2`) or empty (`?priority=`, which a number would read as 0) is an issue of its own.
 */
function enqueueQuery(query: unknown, issues: ValidationDetail[]): Record<string, unknown> {
  const q: Record<string, unknown> = { ...((query ?? {}) as Record<string, unknown>) };
  for (const key of ENQUEUE_QUERY_KEYS) {
    const v = q[key];
    if (Array.isArray(v)) issues.push({ loc: ['query', key], msg: 'given more than once; give one value', type: 'value_error' });
    else if (v === '') issues.push({ loc: ['query', key], msg: 'is empty; give a value or leave the parameter out', type: 'value_error' });
    else continue;
    delete q[key];
  }
  return q;
}

/** Route-level validator that lets a part through untouched: the handler validates it (to report every part at once). */
const passThrough: FastifySchemaCompiler<unknown> = () => (data) => ({ value: data });

/** Maps the option names of an `options` InputError to where they came from in the request. */
const OPTION_LOC: Record<string, (string | number)[]> = {
  delay: ['query', 'delay'],
  runAt: ['query', 'run_at'],
  priority: ['query', 'priority'],
  expiresIn: ['query', 'expires_in'],
  expiresAt: ['query', 'expires_at'],
  idempotencyKey: ['header', 'idempotency-key'],
  traceparent: ['header', 'traceparent'],
};

export function registerTaskRoutes(ctx: RouteContext): void {
  const { app, errand, options, prefix, guard, security, brokerCall } = ctx;

  // ---- tasks ---------------------------------------------------------------------------------------

  async function enqueue(task: Task, request: FastifyRequest, reply: FastifyReply) {
    const issues: ValidationDetail[] = [];
    const query = checkSchema(EnqueueQuerySchema, enqueueQuery(request.query, issues));
    if (!query.ok) issues.push(...issuesToDetail('query', query.issues));
    // The query's issues in its parameters' order, whichever check found them.
    issues.sort((a, b) => ENQUEUE_QUERY_KEYS.indexOf(String(a.loc[1])) - ENQUEUE_QUERY_KEYS.indexOf(String(b.loc[1])));
    const headers = checkSchema(EnqueueHeadersSchema, request.headers);
    if (!headers.ok) issues.push(...issuesToDetail('header', headers.issues));

    const body = request.body;
    const problem = findBodyProblem(body);
    if (problem?.kind === 'proto') throw new HttpError(400, `The JSON body is refused: ${problem.message}`);
    if (problem) {
      const shown = problem.path.slice(0, 8);
      const msg = problem.path.length > shown.length ? `${problem.message} (below this point)` : problem.message;
      issues.push({ loc: ['body', ...shown], msg, type: 'too_deep' });
    }

    const opts: EnqueueOptions = {};
    if (query.ok) {
      if (query.value.delay !== undefined) opts.delay = query.value.delay;
      if (query.value.run_at !== undefined) opts.runAt = new Date(query.value.run_at);
      if (query.value.priority !== undefined) opts.priority = query.value.priority;
      if (query.value.expires_in !== undefined) opts.expiresIn = query.value.expires_in;
      if (query.value.expires_at !== undefined) opts.expiresAt = new Date(query.value.expires_at);
    }
    if (headers.ok && headers.value['idempotency-key'] !== undefined) opts.idempotencyKey = headers.value['idempotency-key'];
    const traceparent = traceparentOf(request);
    if (traceparent) opts.traceparent = traceparent;

    // Validation first, every part at once: with bad options the body is still checked (dry run).
    if (issues.length || problem) {
      if (!problem) {
        try {
          task.prepare(body, {}, Date.now(), errand.maxInputBytes);
        } catch (err) {
          if (!(err instanceof InputError)) throw err;
          issues.push(...inputErrorToDetail(err, body));
        }
      }
      throw new RequestValidationError(issues);
    }

    // task.enqueue validates the body (InputError: 422), records its trace span and metrics, and enqueues.
    let handle: RunHandle;
    try {
      handle = await task.enqueue(body as never, opts);
    } catch (err) {
      if (err instanceof InputError) throw new RequestValidationError(inputErrorToDetail(err, body));
      if (err instanceof ConfigError) {
        // Either connecting the broker failed (bad URL, unwritable SQLite folder: 503), or the task's
        // idempotencyKey() misbehaved (a bug in the app: 500). Asking for the broker again tells which.
        await brokerCall(async () => undefined);
        throw err;
      }
      throw brokerFailure(err);
    }
    const status: RunState = handle.enqueuedState ?? 'queued';
    const statusUrl = `${prefix}/runs/${handle.id}`;
    reply.code(202).header('location', statusUrl);
    request.log.info({ runId: handle.id, task: task.name, created: handle.created }, 'run enqueued');
    return { id: handle.id, status, created: handle.created, status_url: statusUrl, events_url: `${statusUrl}/events` };
  }

  const enqueueResponses = { 202: EnqueuedSchema, ...errorResponses(400, 401, 403, 413, 415, 422, 503) };

  for (const task of errand.tasks.values()) {
    const url = `/tasks/${task.name.replace(/:/g, '::')}`;
    app.route({
      method: 'POST',
      url,
      onRequest: guard('admin'),
      validatorCompiler: passThrough,
      ...(options.bodyLimit !== undefined ? { bodyLimit: options.bodyLimit } : {}),
      schema: {
        summary: `Enqueue a run of ${task.name}`,
        description: [
          task.description,
          `Queue \`${task.queue}\`. Validates the body against the task's input schema, then answers 202 with the run id and the URLs to follow it. ` +
            'With an Idempotency-Key that matches an earlier run of this task, that run is returned (`created: false`, still 202).',
        ]
          .filter(Boolean)
          .join('\n\n'),
        tags: ['tasks'],
        operationId: `enqueue_${task.name.replace(/[^A-Za-z0-9_]/g, '_')}`,
        body: task.schema,
        querystring: EnqueueQuerySchema,
        headers: EnqueueHeadersSchema,
        response: enqueueResponses,
        security: security('admin'),
      },
      handler: (request, reply) => enqueue(task, request, reply),
    });
  }

  // Any other task name (or a name reached through percent-encoding): enqueue if known, else 404 listing the tasks.
  app.route({
    method: 'POST',
    url: '/tasks/:name',
    onRequest: guard('admin'),
    validatorCompiler: passThrough,
    ...(options.bodyLimit !== undefined ? { bodyLimit: options.bodyLimit } : {}),
    schema: { hide: true },
    handler: (request, reply) => {
      const name = (request.params as { name: string }).name;
      const task = errand.tasks.get(name);
      if (task) return enqueue(task, request, reply);
      const known = [...errand.tasks.keys()].sort();
      throw new HttpError(
        404,
        `Task ${JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}...` : name)} not found; known tasks: ${known.length ? known.join(', ') : '(none)'}`,
      );
    },
  });

  app.get(
    '/tasks',
    {
      onRequest: guard('read'),
      schema: {
        summary: 'List the tasks',
        operationId: 'list_tasks',
        tags: ['tasks'],
        response: { 200: z.object({ tasks: z.array(TaskInfoSchema) }), ...errorResponses(401) },
        security: security('read'),
      },
    },
    async () => ({
      tasks: [...errand.tasks.values()].map((t) => ({
        name: t.name,
        description: t.description ?? null,
        queue: t.queue,
        priority: t.priority,
        max_attempts: t.retries.maxAttempts,
        timeout_ms: t.timeout,
        enqueue_url: `${prefix}/tasks/${encodeURIComponent(t.name)}`,
      })),
    }),
  );
}
