/**
 * `dashboardPlugin`: the web dashboard at `/dashboard` (or `basePath`) and its JSON API at `/dashboard/api`.
 *
 *   GET  /dashboard, /dashboard/*              the single-page front end (built by Vite into `src/dashboard/dist`)
 *   GET  /dashboard/api/session                what the presented token may do, the app's task names (200 without
 *                                              a token too: { authenticated: false }, the sign-in form's probe)
 *   GET  /dashboard/api/overview               every queue: counts by state, paused, throughput, failure rate, latency
 *   GET  /dashboard/api/stream                 server-sent events: an `overview` snapshot every ~2 s
 *   GET  /dashboard/api/runs                   runs, newest first: ?queue &task &state &id &limit &cursor
 *   GET  /dashboard/api/runs/:id               one run: input, result or error with stack, attempts, timeline
 *   GET  /dashboard/api/workflows/:id          one workflow: its steps, their states, values and dependencies
 *   GET  /dashboard/api/workers                workers with heartbeat age; lost ones flagged
 *   POST /dashboard/api/runs/:id/retry         replay a failed run                      (admin)
 *   POST /dashboard/api/runs/:id/cancel        cancel a queued, scheduled or active run (admin)
 *   POST /dashboard/api/retry-failed           { queue?, task? }: replay every failed run that matches (admin)
 *   POST /dashboard/api/queues/:queue/pause    stop workers taking runs from the queue  (admin)
 *   POST /dashboard/api/queues/:queue/resume                                            (admin)
 *   POST /dashboard/api/queues/:queue/purge    { confirm: "<queue>" }: delete its queued and scheduled runs (admin)
 *
 * Auth (when tokens are configured): the page and its scripts load without a token (they hold no
 * data); every API call needs `Authorization: Bearer <token>`, a read token to see and an admin
 * token to act, but `GET /session`, which answers `{ authenticated: false }` without one. The browser
 * keeps the token in sessionStorage and reads the event stream with `fetch` (which can send the
 * header) rather than `EventSource` (which cannot), so no token ever travels in a URL.
 *
 * Every response of the plugin carries security headers: a content security policy without inline
 * scripts or styles and with `frame-ancestors 'none'`, `X-Content-Type-Options: nosniff`,
 * `Referrer-Policy: no-referrer`. Actions also refuse cross-site requests (`Sec-Fetch-Site`,
 * `Origin`) and bodies that are not JSON, so a form on another site cannot purge a queue when auth
 * is off.
 *
 * The plugin is encapsulated: register it without a prefix (`app.register(dashboardPlugin, { errand })`);
 * its paths are absolute (the `basePath` option, `/dashboard` by default), and it tells the front end
 * its root in the page it serves. Outside Fastify (Express, Koa, `node:http`), see `handler.ts`.

 *
 * This file holds the options and the API's routes; its pieces are `assets.ts` (the base path and the
 * built front end), `security.ts` (headers, tokens, cross-site checks), `overview.ts` (the broker as
 * an inspector, the overview) and `stream.ts` (the event stream).
 */
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { registerFlowApi } from './flow-api.ts';
import { registerScheduleApi } from './schedules-api.ts';
import { RUN_STATES, type RunRecord, type RunState } from '../broker/types.ts';
import { isRunId, QUEUE_NAME } from '../core/ids.ts';
import { redactRecord } from '../core/redact.ts';
import { checkSchema } from '../core/schema-issues.ts';
import type { Errand } from '../errand.ts';
import { type HttpAuthOptions, TokenAuth } from '../web/auth.ts';
import { HttpError, httpErrorHandler } from '../web/errors.ts';
import { checkJsonCharset } from '../web/json-charset.ts';
import type { RunList, Session, SignedOut, WorkerList } from './api-types.ts';
import { checkBasePath, DASHBOARD_PATH, DEFAULT_DIST_DIR, loadDist, registerFrontEnd } from './assets.ts';
import { brokerAccess, overviewOf } from './overview.ts';
import { runDetail, runSummary, workerJson, workflowDetail } from './run-json.ts';
import { dashboardAccess, SIGNED_OUT_DETAIL, useSecurityHeaders } from './security.ts';
import { registerStream } from './stream.ts';

export { checkBasePath, DASHBOARD_PATH, DEFAULT_DIST_DIR } from './assets.ts';
export { CONTENT_SECURITY_POLICY, SECURITY_HEADERS } from './security.ts';

export interface DashboardOptions {
  errand: Errand;
  /** Bearer tokens (see `authFromEnv`): read tokens see, admin tokens act. Auth is off when no token is configured. */
  auth?: HttpAuthOptions;
  /** How often the event stream sends an overview snapshot, in ms. Default 2000. */
  streamIntervalMs?: number;
  /** Minutes of history behind the overview's charts, throughput and percentiles. Default 60. */
  windowMinutes?: number;
  /** Show error stacks on the run page. Default true: the dashboard is an operator's tool (stacks reveal file paths). */
  errorStacks?: boolean;
  /** Folder of the built front end. Default `src/dashboard/dist` (built by `npm run build:dashboard`, which `npm ci` runs). */
  distDir?: string;
  /**
   * Where the dashboard lives: its pages under `basePath/`, its API under `basePath/api/`. Default
   * `/dashboard`. One or more `/segment`s (letters, digits, `.`, `_`, `~`, `-`), no trailing slash.
   */
  basePath?: string;
}

const QueueName = z.string().regex(QUEUE_NAME, 'a queue name is 1 to 64 letters, digits, "_" or "-"');
const TaskName = z.string().min(1).max(200);

const RunsQuery = z.object({
  queue: QueueName.optional(),
  task: TaskName.optional(),
  state: z.enum(RUN_STATES as [RunState, ...RunState[]]).optional(),
  id: z.string().max(200).optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z.string().min(1).max(1000).optional(),
});

const RetryFailedBody = z.strictObject({ queue: QueueName.optional(), task: TaskName.optional() });
const PurgeBody = z.strictObject({ confirm: z.string() });
const EmptyBody = z.strictObject({});

function parse<T>(schema: z.ZodType<T>, value: unknown, where: 'query' | 'body'): T {
  // Blank query values (`?queue=`) mean "no filter": the form sends them.
  const v =
    where === 'query' && value && typeof value === 'object'
      ? Object.fromEntries(Object.entries(value).filter(([, x]) => x !== ''))
      : (value ?? (where === 'body' ? {} : value));
  const r = checkSchema(schema, v);
  if (r.ok) return r.value;
  const issue = r.issues[0]!;
  const path = issue.path.length ? issue.path.join('.') : where;
  throw new HttpError(400, `Invalid ${where} ${where === 'query' ? 'parameter' : 'field'} "${path}": ${issue.message}`);
}

function runIdParam(request: FastifyRequest): string {
  const { id } = request.params as { id: string };
  if (!isRunId(id)) throw new HttpError(404, `"${id.slice(0, 200)}" is not a run id (expected <queue>.<26-character id>)`);
  return id;
}

function queueParam(request: FastifyRequest): string {
  const { queue } = request.params as { queue: string };
  if (!QUEUE_NAME.test(queue))
    throw new HttpError(400, `Invalid queue name "${queue.slice(0, 100)}": use 1 to 64 letters, digits, "_" or "-"`);
  return queue;
}

export const dashboardPlugin: FastifyPluginAsync<DashboardOptions> = async (fastify, options) => {
  const { errand } = options;
  if (!errand || typeof errand.broker !== 'function') throw new TypeError('dashboardPlugin: options.errand must be an Errand app');
  const auth = new TokenAuth(options.auth);
  const streamIntervalMs = options.streamIntervalMs ?? 2000;
  const windowMinutes = options.windowMinutes ?? 60;
  if (!Number.isInteger(windowMinutes) || windowMinutes < 5 || windowMinutes > 24 * 60)
    throw new TypeError('dashboardPlugin: windowMinutes must be an integer from 5 to 1440');
  if (!(streamIntervalMs >= 100)) throw new TypeError('dashboardPlugin: streamIntervalMs must be at least 100');
  const errorStacks = options.errorStacks !== false;
  const distDir = options.distDir ?? DEFAULT_DIST_DIR;
  const base = checkBasePath(options.basePath ?? DASHBOARD_PATH, 'dashboardPlugin');
  const API = `${base}/api`;
  const files = loadDist(distDir, base);
  if (!files.size) fastify.log.warn({ distDir }, 'dashboard front end not built: run `npm run build:dashboard`; the JSON API still works');

  fastify.setErrorHandler(httpErrorHandler);
  // Not part of the app's public API: keep these routes out of its OpenAPI document (@fastify/swagger reads `hide`).
  fastify.addHook('onRoute', (route) => {
    route.schema = { ...route.schema, hide: true } as typeof route.schema;
  });
  useSecurityHeaders(fastify, API);
  // A JSON body that says it is in a charset other than UTF-8 is refused (415) before it is read:
  // Fastify's own parser (the dashboard served alone, or by its handler) would read it as UTF-8.
  fastify.addHook('preParsing', (request, _reply, payload, done) => {
    try {
      checkJsonCharset(request.headers['content-type']);
    } catch (err) {
      done(err as Error);
      return;
    }
    done(null, payload);
  });

  // ---- auth and request checks ------------------------------------------------------------------

  const { scopeOf, authorize, checkAction } = dashboardAccess(auth);
  const access = brokerAccess(errand);
  const { inspector, call } = access;

  // ---- reads ------------------------------------------------------------------------------------

  /** A run as the dashboard may show it: secrets in its input (the app's and its task's `redact` paths) as "[redacted]", and scrubbed from its errors, result and progress. */
  const shown = (rec: RunRecord): RunRecord => redactRecord(rec, errand.redactPaths(rec.task));

  const overview = () => overviewOf(access, errand, windowMinutes);

  // The sign-in form's probe: 200 whether or not the token is accepted (a 401 here would be an error
  // in the browser's console on every visit before sign-in); it tells nothing but that auth is on.
  fastify.get(`${API}/session`, async (request): Promise<Session | SignedOut> => {
    const scope = scopeOf(request);
    if (scope === 'missing' || scope === 'invalid')
      return { authenticated: false, auth: true, reason: scope, detail: SIGNED_OUT_DETAIL[scope] };
    const b = await inspector();
    return { authenticated: true, auth: auth.enabled, scope, tasks: [...errand.tasks.keys()].sort(), broker: b.kind };
  });

  fastify.get(`${API}/overview`, async (request) => {
    authorize(request, 'read');
    return overview();
  });

  fastify.get(`${API}/runs`, async (request): Promise<RunList> => {
    authorize(request, 'read');
    const q = parse(RunsQuery, request.query, 'query');
    if (q.id !== undefined) {
      const id = q.id.trim();
      if (!isRunId(id)) throw new HttpError(400, `"${id.slice(0, 200)}" is not a run id: ids look like <queue>.<26 characters>`);
      const rec = await call((b) => b.getRun(id));
      return { runs: rec ? [runSummary(shown(rec))] : [], next: null, total: rec ? 1 : 0 };
    }
    return call(async (b) => {
      const filter = {
        limit: q.limit,
        ...(q.queue && { queue: q.queue }),
        ...(q.task && { task: q.task }),
        ...(q.state && { state: q.state }),
      };
      const [page, counts] = await Promise.all([
        b.listRuns(q.cursor ? { ...filter, cursor: q.cursor } : filter),
        q.task ? Promise.resolve(null) : b.counts(q.queue ? [q.queue] : undefined),
      ]);
      let total: number | null = null;
      if (counts) {
        total = 0;
        for (const [queue, c] of Object.entries(counts)) {
          if (q.queue && queue !== q.queue) continue;
          for (const s of q.state ? [q.state] : RUN_STATES) total += c[s] ?? 0;
        }
      }
      return { runs: page.runs.map((r) => runSummary(shown(r))), next: page.next, total };
    });
  });

  fastify.get(`${API}/runs/:id`, async (request) => {
    authorize(request, 'read');
    const id = runIdParam(request);
    const rec = await call((b) => b.getRun(id));
    if (!rec) throw new HttpError(404, `Run "${id}" not found (it never existed, or it finished and its retention passed)`);
    const detail = runDetail(shown(rec));
    if (!errorStacks) {
      if (detail.runError) delete detail.runError.stack;
      for (const a of detail.history) if (a.error) delete a.error.stack;
    }
    return detail;
  });

  fastify.get(`${API}/workflows/:id`, async (request) => {
    authorize(request, 'read');
    const { id } = request.params as { id: string };
    if (!isRunId(id)) throw new HttpError(404, `"${id.slice(0, 200)}" is not a workflow id (expected <queue>.<26-character id>)`);
    const rec = await call((b) => b.getWorkflow(id));
    if (!rec) throw new HttpError(404, `Workflow "${id}" not found (it never existed, or all its runs finished and were pruned)`);
    return workflowDetail({ ...rec, runs: rec.runs.map(shown) });
  });

  fastify.get(`${API}/workers`, async (request): Promise<WorkerList> => {
    authorize(request, 'read');
    return call(async (b) => {
      const now = Date.now();
      const workers = (await b.listWorkers(now)).map((w) => workerJson(w, now));
      workers.sort((a, b) => Number(a.lost) - Number(b.lost) || a.id.localeCompare(b.id));
      return { now, workers };
    });
  });

  // ---- actions ----------------------------------------------------------------------------------

  fastify.post(`${API}/runs/:id/retry`, { bodyLimit: 16_384 }, async (request) => {
    checkAction(request);
    parse(EmptyBody, request.body, 'body');
    const id = runIdParam(request);
    const r = await call((b) => b.retry(id, Date.now()));
    if (r.outcome === 'not_found') throw new HttpError(404, `Run "${id}" not found`);
    if (r.outcome === 'not_failed') throw new HttpError(409, `Only failed or cancelled runs can be retried; this run is ${r.state}`);
    if (r.outcome === 'recorded') throw new HttpError(409, `This run is a record of a task that ran in ${r.origin}: retry it there`);
    request.log.info({ run: id }, 'dashboard: run retried');
    return { id, outcome: r.outcome };
  });

  fastify.post(`${API}/runs/:id/cancel`, { bodyLimit: 16_384 }, async (request) => {
    checkAction(request);
    parse(EmptyBody, request.body, 'body');
    const id = runIdParam(request);
    const r = await call((b) => b.cancel(id, Date.now()));
    if (r.outcome === 'not_found') throw new HttpError(404, `Run "${id}" not found`);
    if (r.outcome === 'finished' && r.state === 'cancelled') return { id, outcome: 'cancelled' as const, previous: 'cancelled' as const };
    if (r.outcome === 'finished')
      throw new HttpError(409, `The run already finished (${r.state}); only queued, scheduled or active runs can be cancelled`);
    request.log.info({ run: id, previous: r.previous }, 'dashboard: run cancelled');
    return { id, outcome: r.outcome, previous: r.previous };
  });

  fastify.post(`${API}/retry-failed`, { bodyLimit: 16_384 }, async (request) => {
    checkAction(request);
    const body = parse(RetryFailedBody, request.body, 'body');
    const retried = await call(async (b) => {
      const queues = body.queue ? [body.queue] : await b.listQueues();
      let n = 0;
      for (const queue of queues) n += await b.retryFailed(queue, body.task, Date.now());
      return n;
    });
    request.log.info({ queue: body.queue ?? '*', task: body.task ?? '*', retried }, 'dashboard: failed runs retried');
    return { retried };
  });

  /**
   * The queue a queue action names, if the app's tasks use it or the broker has seen it: pausing a
   * mistyped name would otherwise list a queue that does not exist from then on.
   */
  async function knownQueue(request: FastifyRequest): Promise<string> {
    const queue = queueParam(request);
    if ([...errand.tasks.values()].some((t) => t.queue === queue)) return queue;
    if ((await call((b) => b.listQueues())).includes(queue)) return queue;
    throw new HttpError(404, `Queue "${queue}" is not known: no task of this app uses it and the broker has no run in it`);
  }

  fastify.post(`${API}/queues/:queue/pause`, { bodyLimit: 16_384 }, async (request) => {
    checkAction(request);
    parse(EmptyBody, request.body, 'body');
    const queue = await knownQueue(request);
    await call((b) => b.pause(queue));
    request.log.info({ queue }, 'dashboard: queue paused');
    return { queue, paused: true };
  });

  fastify.post(`${API}/queues/:queue/resume`, { bodyLimit: 16_384 }, async (request) => {
    checkAction(request);
    parse(EmptyBody, request.body, 'body');
    const queue = await knownQueue(request);
    await call((b) => b.resume(queue));
    request.log.info({ queue }, 'dashboard: queue resumed');
    return { queue, paused: false };
  });

  fastify.post(`${API}/queues/:queue/purge`, { bodyLimit: 16_384 }, async (request) => {
    checkAction(request);
    const queue = await knownQueue(request);
    const body = parse(PurgeBody, request.body, 'body');
    if (body.confirm !== queue)
      throw new HttpError(400, `To purge, confirm with the queue's name: send {"confirm": ${JSON.stringify(queue)}}`);
    const removed = await call((b) => b.purge(queue, Date.now()));
    request.log.warn({ queue, removed }, 'dashboard: queue purged');
    return { queue, removed };
  });

  registerScheduleApi(fastify, { api: API, errand, access, authorize, checkAction });
  registerFlowApi(fastify, { api: API, errand, access, authorize });

  // ---- live updates -----------------------------------------------------------------------------

  registerStream(fastify, { api: API, intervalMs: streamIntervalMs, authorize, inspector, overview });

  // ---- the front end ----------------------------------------------------------------------------

  registerFrontEnd(fastify, base, files);
};
