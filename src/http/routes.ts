/**
 * `errandRoutes`: the Fastify plugin with Errand's task and run routes.
 *
 *   POST /tasks/{name}         enqueue a run (one route per task: its input schema is the body)
 *   GET  /tasks                the tasks this app defines
 *   GET  /runs/{id}            a run: state, input, result or error, progress, attempts, history
 *   GET  /runs/{id}/events     server-sent events on a run until it finishes
 *   POST /runs/{id}/cancel     cancel a queued, scheduled or active run (an already cancelled one: 200, nothing changes)
 *   POST /runs/{id}/retry      replay a failed or cancelled run
 *   GET  /healthz, /readyz     liveness, and readiness (the broker answers)
 *
 * The plugin is encapsulated: it sets its own zod validator, serializer, JSON body parser and error
 * handler, so it answers the same way inside any Fastify app. Every broker call is wrapped: any
 * error from the broker becomes `BrokerUnavailableError` (503 with Retry-After), never a 500.
 */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest, FastifySchemaCompiler } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { serializerCompiler } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { Broker, RunState } from '../broker/types.ts';
import { BrokerUnavailableError, brokerFailure, ConfigError, InputError, RunNotFoundError } from '../core/errors.ts';
import { isRunId } from '../core/ids.ts';
import { redactRecord } from '../core/redact.ts';
import type { Errand, Task } from '../errand.ts';
import type { RunHandle } from '../task/handle.ts';
import { type EnqueueOptions, MAX_DELAY_MS } from '../task/task.ts';
import { type HttpAuthOptions, type Scope, TokenAuth } from '../web/auth.ts';
import { findBodyProblem, useJsonBodies } from './body.ts';
import {
  HttpError,
  httpErrorHandler,
  issuesToDetail,
  RequestValidationError,
  type ValidationDetail,
  zodErrorToDetail,
} from '../web/errors.ts';
import { EnqueuedSchema, ErrorSchema, errorResponses, RunActionSchema, RunSchema, runToJson, TaskInfoSchema } from './schemas.ts';
import { RunStream } from './sse.ts';
import { zodValidatorCompiler } from './validation.ts';

export interface ErrandRoutesOptions {
  errand: Errand;
  /** Bearer tokens. Auth is off when no token is configured. See `authFromEnv`. */
  auth?: HttpAuthOptions;
  /** Largest request body on these routes, in bytes. Default: the Fastify instance's `bodyLimit` (1 MiB unless set). */
  bodyLimit?: number;
  /** Include error stacks in run JSON. Default false (stacks reveal file paths). */
  errorStacks?: boolean;
  /** Interval of SSE heartbeat comments, in ms. Default 15000. */
  heartbeatMs?: number;
  /** How long `/readyz` waits for the broker's ping, in ms. Default 2000. */
  readyTimeoutMs?: number;
}

/** The longest `delay` accepted: 100 years, in ms (the same bound as `task.enqueue`'s). */
export { MAX_DELAY_MS };

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
  })
  .superRefine((q, ctx) => {
    if (q.delay !== undefined && q.run_at !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['run_at'], message: 'give either delay or run_at, not both' });
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

const RunParams = z.object({ id: z.string().describe('The run id') });

function positive(value: number, name: string): number {
  if (!Number.isInteger(value) || value < 1)
    throw new ConfigError(`errandRoutes: ${name} must be a positive integer, got ${String(value)}`);
  return value;
}

/** An InputError from enqueue as 422 details: option problems point at the query or header they came from. */
function inputErrorToDetail(err: InputError): ValidationDetail[] {
  if (err.root !== 'options') return issuesToDetail('body', err.issues);
  return err.issues.map((i) => {
    const key = String(i.path[0] ?? '');
    return { loc: OPTION_LOC[key] ?? ['query', key], msg: i.message, type: i.code };
  });
}

/** Route-level validator that lets a part through untouched: the handler validates it (to report every part at once). */
const passThrough: FastifySchemaCompiler<unknown> = () => (data) => ({ value: data });

/** Maps the option names of an `options` InputError to where they came from in the request. */
const OPTION_LOC: Record<string, (string | number)[]> = {
  delay: ['query', 'delay'],
  runAt: ['query', 'run_at'],
  priority: ['query', 'priority'],
  idempotencyKey: ['header', 'idempotency-key'],
  traceparent: ['header', 'traceparent'],
};

/**
 * The task and run routes as a Fastify plugin. Register it on your own instance with
 * `app.register(errandRoutes, { errand, auth })` (optionally with a `prefix`), or let
 * `createServer` do it.
 */
export const errandRoutes: FastifyPluginAsync<ErrandRoutesOptions> = async (fastify, options) => {
  const { errand } = options;
  if (!errand || typeof errand.broker !== 'function') throw new ConfigError('errandRoutes: options.errand must be an Errand app');
  const auth = new TokenAuth(options.auth);
  const errorStacks = options.errorStacks === true;
  const heartbeatMs = positive(options.heartbeatMs ?? 15_000, 'heartbeatMs');
  const readyTimeoutMs = positive(options.readyTimeoutMs ?? 2000, 'readyTimeoutMs');
  if (options.bodyLimit !== undefined) positive(options.bodyLimit, 'bodyLimit');
  const prefix = fastify.prefix;
  const streams = new Set<RunStream>();

  fastify.setValidatorCompiler(zodValidatorCompiler);
  fastify.setSerializerCompiler(serializerCompiler);
  fastify.setErrorHandler(httpErrorHandler);
  useJsonBodies(fastify);
  fastify.addHook('preClose', async () => {
    for (const s of [...streams]) s.close();
  });

  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const guard = (scope: Scope) => auth.hook(scope);
  // The OpenAPI security requirement of a route (the scope is said in its description of 401/403).
  const security = (_scope: Scope) => (auth.enabled ? [{ bearerAuth: [] as string[] }] : undefined);
  // Secrets in inputs (the app's and the task's `redact` paths) are shown as "[redacted]".
  const toJson = (rec: Parameters<typeof runToJson>[0]) => runToJson(redactRecord(rec, errand.redactPaths(rec.task)), { errorStacks });

  /** Any broker failure (including failing to connect) as BrokerUnavailableError. */
  async function brokerCall<T>(fn: (broker: Broker) => Promise<T>): Promise<T> {
    try {
      return await fn(await errand.broker());
    } catch (err) {
      throw brokerFailure(err);
    }
  }

  function checkRunId(id: string): void {
    if (!isRunId(id)) throw new RunNotFoundError(id.length > 200 ? `${id.slice(0, 200)}...` : id);
  }

  // ---- tasks ---------------------------------------------------------------------------------------

  async function enqueue(task: Task, request: FastifyRequest, reply: FastifyReply) {
    const issues: ValidationDetail[] = [];
    const query = EnqueueQuerySchema.safeParse(request.query ?? {});
    if (!query.success) issues.push(...zodErrorToDetail('query', query.error));
    const headers = EnqueueHeadersSchema.safeParse(request.headers);
    if (!headers.success) issues.push(...zodErrorToDetail('header', headers.error));

    const body = request.body;
    const problem = findBodyProblem(body);
    if (problem?.kind === 'proto') throw new HttpError(400, `The JSON body is refused: ${problem.message}`);
    if (problem) {
      const shown = problem.path.slice(0, 8);
      const msg = problem.path.length > shown.length ? `${problem.message} (below this point)` : problem.message;
      issues.push({ loc: ['body', ...shown], msg, type: 'too_deep' });
    }

    const opts: EnqueueOptions = {};
    if (query.success) {
      if (query.data.delay !== undefined) opts.delay = query.data.delay;
      if (query.data.run_at !== undefined) opts.runAt = new Date(query.data.run_at);
      if (query.data.priority !== undefined) opts.priority = query.data.priority;
    }
    if (headers.success && headers.data['idempotency-key'] !== undefined) opts.idempotencyKey = headers.data['idempotency-key'];
    const traceparent = traceparentOf(request);
    if (traceparent) opts.traceparent = traceparent;

    // Validation first, every part at once: with bad options the body is still checked (dry run).
    if (issues.length || problem) {
      if (!problem) {
        try {
          task.prepare(body, {}, Date.now(), errand.maxInputBytes);
        } catch (err) {
          if (!(err instanceof InputError)) throw err;
          issues.push(...issuesToDetail('body', err.issues));
        }
      }
      throw new RequestValidationError(issues);
    }

    // task.enqueue validates the body (InputError: 422), records its trace span and metrics, and enqueues.
    let handle: RunHandle;
    try {
      handle = await task.enqueue(body as never, opts);
    } catch (err) {
      if (err instanceof InputError) throw new RequestValidationError(inputErrorToDetail(err));
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

  // ---- runs ----------------------------------------------------------------------------------------

  app.get(
    '/runs/:id',
    {
      onRequest: guard('read'),
      schema: {
        summary: 'Get a run',
        operationId: 'get_run',
        description: 'The run: state, input, result or error, progress, attempts, times (ISO 8601), worker and attempt history.',
        tags: ['runs'],
        params: RunParams,
        response: { 200: RunSchema, ...errorResponses(401, 404, 503) },
        security: security('read'),
      },
    },
    async (request) => {
      const { id } = request.params;
      checkRunId(id);
      const rec = await brokerCall((b) => b.getRun(id));
      if (!rec) throw new RunNotFoundError(id);
      return toJson(rec);
    },
  );

  app.get(
    '/runs/:id/events',
    {
      onRequest: guard('read'),
      exposeHeadRoute: false,
      schema: {
        summary: 'Follow a run (server-sent events)',
        operationId: 'follow_run',
        description:
          'A text/event-stream. `event: state` carries the run JSON (as GET /runs/{id}): once at once, then on each change of state, attempt or progress. ' +
          '`event: end` (`{"id", "state"}`) follows the final state, then the server closes the stream: close your EventSource on it, or it reconnects. ' +
          '`event: error` (`{"detail"}`) when the run disappears or the broker fails; reconnecting resumes. A comment line is sent every 15 s as a heartbeat.',
        tags: ['runs'],
        params: RunParams,
        response: {
          200: { description: 'Server-sent events', content: { 'text/event-stream': { schema: z.string() } } },
          ...errorResponses(401, 404, 503),
        },
        security: security('read'),
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      checkRunId(id);
      const broker = await brokerCall(async (b) => b);
      let stream: RunStream | undefined;
      let early = false;
      const unwatch = await brokerCall((b) =>
        b.watch(id, () => {
          if (stream) stream.changed();
          else early = true;
        }),
      );
      let first: Awaited<ReturnType<Broker['getRun']>>;
      try {
        first = await brokerCall((b) => b.getRun(id));
      } catch (err) {
        unwatch();
        throw err;
      }
      if (!first) {
        unwatch();
        throw new RunNotFoundError(id);
      }
      if (request.raw.destroyed) {
        unwatch();
        return reply;
      }
      stream = new RunStream({
        reply,
        first,
        read: () => brokerCall(() => broker.getRun(id)),
        unwatch,
        toJson,
        heartbeatMs,
        registry: streams,
        onError: (err) => request.log.warn({ err, runId: id }, 'run event stream failed'),
      });
      if (early) stream.changed();
      return reply;
    },
  );

  app.post(
    '/runs/:id/cancel',
    {
      onRequest: guard('admin'),
      schema: {
        summary: 'Cancel a run',
        operationId: 'cancel_run',
        description:
          'A queued or scheduled run never starts; an active run has its signal aborted. Cancelling a run that is already cancelled answers 200 (`previous_state: "cancelled"`) and changes nothing, as `run.cancel()` does; 409 when the run has succeeded or failed (the detail names its state).',
        tags: ['runs'],
        params: RunParams,
        response: { 200: RunActionSchema, ...errorResponses(401, 403, 404, 409, 503) },
        security: security('admin'),
      },
    },
    async (request) => {
      const { id } = request.params;
      checkRunId(id);
      const out = await brokerCall((b) => b.cancel(id, Date.now()));
      if (out.outcome === 'not_found') throw new RunNotFoundError(id);
      if (out.outcome === 'finished') {
        if (out.state === 'cancelled') return { id, state: 'cancelled' as const, previous_state: 'cancelled' as const };
        throw new HttpError(409, `Run "${id}" has already finished: it is ${out.state}`);
      }
      request.log.info({ runId: id, previous: out.previous }, 'run cancelled');
      return { id, state: 'cancelled' as const, previous_state: out.previous };
    },
  );

  app.post(
    '/runs/:id/retry',
    {
      onRequest: guard('admin'),
      schema: {
        summary: 'Retry a failed or cancelled run',
        operationId: 'retry_run',
        description:
          'Moves a failed run (the dead-letter state) or a cancelled run back to queued with its attempts reset, under the same id. 409 when the run is queued, scheduled, active or succeeded.',
        tags: ['runs'],
        params: RunParams,
        response: { 200: RunActionSchema, ...errorResponses(401, 403, 404, 409, 503) },
        security: security('admin'),
      },
    },
    async (request) => {
      const { id } = request.params;
      checkRunId(id);
      const out = await brokerCall((b) => b.retry(id, Date.now()));
      if (out.outcome === 'not_found') throw new RunNotFoundError(id);
      if (out.outcome === 'not_failed')
        throw new HttpError(409, `Run "${id}" is ${out.state}: only failed or cancelled runs can be retried`);
      request.log.info({ runId: id }, 'run retried');
      return { id, state: 'queued' as const };
    },
  );

  // ---- health --------------------------------------------------------------------------------------

  app.get(
    '/healthz',
    {
      schema: {
        summary: 'Liveness',
        operationId: 'healthz',
        // Open even when tokens are configured (load balancers probe them): said so, for the docs and linters.
        security: auth.enabled ? [] : undefined,
        description: 'Answers 200 while the process is up; does not check the broker.',
        tags: ['health'],
        response: { 200: z.object({ status: z.literal('ok') }) },
      },
    },
    async () => ({ status: 'ok' as const }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        summary: 'Readiness',
        operationId: 'readyz',
        security: auth.enabled ? [] : undefined,
        description: 'Answers 200 when the broker answers a ping, else 503 with Retry-After.',
        tags: ['health'],
        response: { 200: z.object({ status: z.literal('ok'), broker: z.string() }), 503: ErrorSchema },
      },
    },
    async () => {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new BrokerUnavailableError(`The broker did not answer a ping within ${readyTimeoutMs} ms`)),
          readyTimeoutMs,
        );
      });
      const ping = brokerCall(async (b) => {
        await b.ping();
        return b.kind;
      });
      ping.catch(() => {}); // when the timeout wins, a late failure must not go unhandled
      try {
        const kind = await Promise.race([ping, timeout]);
        return { status: 'ok' as const, broker: kind };
      } finally {
        clearTimeout(timer);
      }
    },
  );
};

/** Builds the `onRequest` hook that requires a scope, for apps protecting their own routes with the same tokens. */
/**
 * The OpenAPI `security` of a route for your own routes, matching `requireScope`: with tokens
 * configured, the bearer scheme `createServer` declares (so that /docs sends the token after
 * "Authorize") for a route that needs `scope`, or `[]` for a route that stays open; without tokens,
 * undefined (no security in the document).
 */
export function openApiSecurity(auth: HttpAuthOptions | undefined, scope: Scope | 'open'): { bearerAuth: string[] }[] | undefined {
  if (!new TokenAuth(auth).enabled) return undefined;
  return scope === 'open' ? [] : [{ bearerAuth: [] }];
}

export function requireScope(
  auth: HttpAuthOptions | undefined,
  scope: Scope,
): (request: FastifyRequest, reply: FastifyReply) => Promise<void> {
  return new TokenAuth(auth).hook(scope);
}
