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
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { serializerCompiler } from 'fastify-type-provider-zod';
import type { Broker } from '../broker/types.ts';
import { brokerFailure, ConfigError, RunNotFoundError } from '../core/errors.ts';
import { isRunId } from '../core/ids.ts';
import { redactRecord } from '../core/redact.ts';
import { show } from '../core/show.ts';
import type { Errand } from '../errand.ts';
import { MAX_DELAY_MS } from '../task/task.ts';
import { type HttpAuthOptions, type Scope, TokenAuth } from '../web/auth.ts';
import { useJsonBodies } from './body.ts';
import { httpErrorHandler } from '../web/errors.ts';
import { runToJson } from './schemas.ts';
import type { RunStream } from './sse.ts';
import { zodValidatorCompiler } from './validation.ts';

import { registerHealthRoutes } from './health-routes.ts';
import type { RouteContext } from './route-context.ts';
import { registerRunRoutes } from './run-routes.ts';
import { registerScheduleRoutes } from './schedule-routes.ts';
import { registerTaskRoutes } from './task-routes.ts';
import { registerWorkflowRoutes } from './workflow-routes.ts';

export { EnqueueHeadersSchema, EnqueueQuerySchema, traceparentOf } from './task-routes.ts';

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

function positive(value: number, name: string): number {
  if (!Number.isInteger(value) || value < 1) throw new ConfigError(`errandRoutes: ${name} must be a positive integer, got ${show(value)}`);
  return value;
}

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

  const ctx: RouteContext = {
    app,
    errand,
    auth,
    options,
    prefix,
    guard,
    security,
    toJson,
    brokerCall,
    checkRunId,
    streams,
    heartbeatMs,
    readyTimeoutMs,
  };
  registerTaskRoutes(ctx);
  registerRunRoutes(ctx);
  registerWorkflowRoutes(ctx);
  registerScheduleRoutes(ctx);
  registerHealthRoutes(ctx);
};

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

/** Builds the `onRequest` hook that requires a scope, for apps protecting their own routes with the same tokens. */
export function requireScope(
  auth: HttpAuthOptions | undefined,
  scope: Scope,
): (request: FastifyRequest, reply: FastifyReply) => Promise<void> {
  return new TokenAuth(auth).hook(scope);
}
