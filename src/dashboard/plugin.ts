/**
 * `dashboardPlugin`: the web dashboard at `/dashboard` (or `basePath`) and its JSON API at `/dashboard/api`.
 *
 *   GET  /dashboard, /dashboard/*              the single-page front end (built by Vite into `src/dashboard/dist`)
 *   GET  /dashboard/api/session                what the presented token may do, the app's task names
 *   GET  /dashboard/api/overview               every queue: counts by state, paused, throughput, failure rate, latency
 *   GET  /dashboard/api/stream                 server-sent events: an `overview` snapshot every ~2 s
 *   GET  /dashboard/api/runs                   runs, newest first: ?queue &task &state &id &limit &cursor
 *   GET  /dashboard/api/runs/:id               one run: input, result or error with stack, attempts, timeline
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
 * token to act. The browser keeps the token in sessionStorage and reads the event stream with
 * `fetch` (which can send the header) rather than `EventSource` (which cannot), so no token ever
 * travels in a URL.
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
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { type Broker, type BrokerInspector, RUN_STATES, type RunRecord, type RunState } from '../broker/types.ts';
import { brokerFailure } from '../core/errors.ts';
import { isRunId, QUEUE_NAME } from '../core/ids.ts';
import { redactRecord } from '../core/redact.ts';
import type { Errand } from '../errand.ts';
import { type HttpAuthOptions, type Scope, TokenAuth } from '../web/auth.ts';
import { HttpError, httpErrorHandler } from '../web/errors.ts';
import type { Overview, QueueOverview, RunList, Session, WorkerList } from './api-types.ts';
import { runDetail, runSummary, workerJson } from './run-json.ts';
import { buildSeries, emptyCounts, MINUTE, summarise } from './stats.ts';

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

export const DASHBOARD_PATH = '/dashboard';

const BASE_PATH = /^(\/[A-Za-z0-9._~-]+)+$/;

/** Checks a `basePath` option: `/admin/queues`, not `admin`, `/admin/` or `/`. */
export function checkBasePath(basePath: unknown, where = 'dashboard'): string {
  if (typeof basePath !== 'string' || !BASE_PATH.test(basePath) || /(^|\/)\.\.?(\/|$)/.test(basePath)) {
    throw new TypeError(
      `${where}: basePath must be a path such as "/dashboard" or "/admin/queues" (segments of letters, digits, ".", "_", "~", "-"; no trailing slash), got ${JSON.stringify(basePath)}`,
    );
  }
  return basePath;
}

export const DEFAULT_DIST_DIR = fileURLToPath(new URL('./dist', import.meta.url));

/** The content security policy of every dashboard response: no inline code, nothing from other origins, no framing. */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "manifest-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'permissions-policy': 'camera=(), microphone=(), geolocation=(), payment=()',
};

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.webp': 'image/webp',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
  '.webmanifest': 'application/manifest+json',
};

interface StaticFile {
  body: Buffer;
  type: string;
  etag: string;
  immutable: boolean;
}

/**
 * Every file of the built front end, read once: a fixed set of paths, so no request can reach
 * outside it. The build refers to `/dashboard/...`; index.html is rewritten for another `basePath`
 * (its asset URLs, and the `errand-base` meta tag the front end reads its root from).
 */
function loadDist(dir: string, basePath: string): Map<string, StaticFile> {
  const files = new Map<string, StaticFile>();
  if (!existsSync(join(dir, 'index.html'))) return files;
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const full = join(d, name);
      if (statSync(full).isDirectory()) walk(full);
      else {
        const rel = relative(dir, full).split(sep).join('/');
        let body = readFileSync(full);
        if (rel === 'index.html' && basePath !== DASHBOARD_PATH) {
          const html = body
            .toString('utf8')
            .replace(/(\s(?:href|src)=")\/dashboard\//g, `$1${basePath}/`)
            .replace(/(<meta name="errand-base" content=")\/dashboard(")/, `$1${basePath}$2`);
          body = Buffer.from(html);
        }
        files.set(rel, {
          body,
          type: CONTENT_TYPES[extname(name).toLowerCase()] ?? 'application/octet-stream',
          etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`,
          immutable: rel.startsWith('assets/'),
        });
      }
    }
  };
  walk(dir);
  return files;
}

const NOT_BUILT_PAGE = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Errand dashboard not built</title></head>
<body><h1>The dashboard's front end is not built</h1>
<p>Run <code>npm run build:dashboard</code> in the Errand package (<code>npm ci</code> and <code>npm install</code> run it),
then restart the server. The JSON API under <code>/dashboard/api/</code> works without it.</p></body></html>`;

function isInspector(b: Broker): b is Broker & BrokerInspector {
  const i = b as Partial<BrokerInspector>;
  return typeof i.listRuns === 'function' && typeof i.stats === 'function' && typeof i.listWorkers === 'function';
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
  const r = schema.safeParse(v);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
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
  fastify.addHook('onSend', async (request, reply, payload) => {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) reply.header(k, v);
    if (request.url.startsWith(`${API}/`)) reply.header('cache-control', 'no-store');
    return payload;
  });

  // ---- auth and request checks ------------------------------------------------------------------

  /** The scope of the request's token; throws 401 (no or unknown token) or 403 (read token on an action). */
  function authorize(request: FastifyRequest, need: Scope): Scope {
    if (!auth.enabled) return 'admin';
    const header = request.headers.authorization;
    const m = typeof header === 'string' ? /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header) : null;
    if (!m)
      throw new HttpError(401, 'Not authenticated: sign in with a read or admin token', { 'www-authenticate': 'Bearer realm="errand"' });
    const scope = auth.scopeOf(m[1]!);
    if (scope === null) throw new HttpError(401, 'Invalid token', { 'www-authenticate': 'Bearer realm="errand", error="invalid_token"' });
    if (need === 'admin' && scope !== 'admin') throw new HttpError(403, 'This token may only read: actions need an admin token');
    return scope;
  }

  /**
   * Actions change state: refuse what a page on another site could send (this matters when auth is
   * off). Browsers say where a request comes from in `Sec-Fetch-Site`; older ones only in `Origin`.
   */
  function checkAction(request: FastifyRequest): void {
    authorize(request, 'admin');
    const site = request.headers['sec-fetch-site'];
    if (typeof site === 'string') {
      if (site !== 'same-origin' && site !== 'none') throw new HttpError(403, 'Cross-site requests may not act on the dashboard');
    } else if (typeof request.headers.origin === 'string') {
      const origin = request.headers.origin;
      let host: string | null = null;
      try {
        host = origin === 'null' ? null : new URL(origin).host;
      } catch {
        host = null;
      }
      const forwarded = request.headers['x-forwarded-host'];
      if (host === null || (host !== request.headers.host && host !== forwarded))
        throw new HttpError(403, `Requests from ${origin.slice(0, 100)} may not act on the dashboard`);
    }
    const ct = request.headers['content-type'];
    if (typeof ct !== 'string' || !/^application\/json\s*(;|$)/i.test(ct))
      throw new HttpError(415, 'Send actions with a JSON body (content-type: application/json), e.g. {}');
  }

  /** The broker, as an inspector; broker failures become 503, a broker without inspection 501. */
  async function inspector(): Promise<Broker & BrokerInspector> {
    let broker: Broker;
    try {
      broker = await errand.broker();
    } catch (err) {
      throw brokerFailure(err, 'Cannot connect to the broker');
    }
    if (!isInspector(broker))
      throw new HttpError(501, `The ${broker.kind} broker in use does not support inspection (listRuns, stats, workers)`);
    return broker;
  }

  async function call<T>(fn: (b: Broker & BrokerInspector) => Promise<T>): Promise<T> {
    const b = await inspector();
    try {
      return await fn(b);
    } catch (err) {
      if (err instanceof HttpError) throw err;
      throw brokerFailure(err);
    }
  }

  // ---- reads ------------------------------------------------------------------------------------

  /** A run as the dashboard may show it: secrets in its input (the app's and its task's `redact` paths) as "[redacted]", and scrubbed from its errors, result and progress. */
  const shown = (rec: RunRecord): RunRecord => redactRecord(rec, errand.redactPaths(rec.task));

  async function overview(): Promise<Overview> {
    return call(async (b) => {
      const now = Date.now();
      const [counts, known, paused, workers] = await Promise.all([b.counts(), b.listQueues(), b.pausedQueues(), b.listWorkers(now)]);
      const pausedSet = new Set(paused);
      const names = [...new Set([...known, ...Object.keys(counts), ...paused, ...[...errand.tasks.values()].map((t) => t.queue)])].sort();
      const since = now - windowMinutes * MINUTE;
      const stats = names.length ? await b.stats(names, since) : {};
      const totals = emptyCounts();
      const queues: QueueOverview[] = names.map((name) => {
        const c = { ...emptyCounts(), ...(counts[name] ?? {}) };
        for (const s of RUN_STATES) totals[s] += c[s] ?? 0;
        return { name, paused: pausedSet.has(name), counts: c, ...summarise(stats[name] ?? [], now) };
      });
      const all = summarise(Object.values(stats).flat(), now);
      const lost = workers.filter((w) => w.lastSeen + w.ttlMs < now).length;
      return {
        now,
        broker: b.kind,
        windowMinutes,
        queues,
        totals,
        workers: { alive: workers.length - lost, lost },
        throughputPerMin: all.throughputPerMin,
        failureRate: all.failureRate,
        wait: all.wait,
        run: all.run,
        series: buildSeries(stats, since, now),
      };
    });
  }

  fastify.get(`${API}/session`, async (request): Promise<Session> => {
    const scope = authorize(request, 'read');
    const b = await inspector();
    return { auth: auth.enabled, scope, tasks: [...errand.tasks.keys()].sort(), broker: b.kind };
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

  fastify.post(`${API}/queues/:queue/pause`, { bodyLimit: 16_384 }, async (request) => {
    checkAction(request);
    parse(EmptyBody, request.body, 'body');
    const queue = queueParam(request);
    await call((b) => b.pause(queue));
    request.log.info({ queue }, 'dashboard: queue paused');
    return { queue, paused: true };
  });

  fastify.post(`${API}/queues/:queue/resume`, { bodyLimit: 16_384 }, async (request) => {
    checkAction(request);
    parse(EmptyBody, request.body, 'body');
    const queue = queueParam(request);
    await call((b) => b.resume(queue));
    request.log.info({ queue }, 'dashboard: queue resumed');
    return { queue, paused: false };
  });

  fastify.post(`${API}/queues/:queue/purge`, { bodyLimit: 16_384 }, async (request) => {
    checkAction(request);
    const queue = queueParam(request);
    const body = parse(PurgeBody, request.body, 'body');
    if (body.confirm !== queue)
      throw new HttpError(400, `To purge, confirm with the queue's name: send {"confirm": ${JSON.stringify(queue)}}`);
    const removed = await call((b) => b.purge(queue, Date.now()));
    request.log.warn({ queue, removed }, 'dashboard: queue purged');
    return { queue, removed };
  });

  // ---- live updates -----------------------------------------------------------------------------

  // One timer for every open stream: each snapshot is computed once and sent to all clients.
  const streams = new Set<ServerResponse>();
  let timer: NodeJS.Timeout | undefined;
  let ticking = false;
  const write = (res: ServerResponse, text: string) => {
    if (!res.writableEnded && !res.destroyed) res.write(text);
  };
  const snapshot = async (): Promise<string> => {
    try {
      return `event: overview\ndata: ${JSON.stringify(await overview())}\n\n`;
    } catch (err) {
      fastify.log.warn({ err }, 'dashboard stream: overview failed');
      const detail = err instanceof HttpError && typeof err.detail === 'string' ? err.detail : 'The task broker is unavailable; retrying';
      return `event: error\ndata: ${JSON.stringify({ detail })}\n\n`;
    }
  };
  const tick = async () => {
    if (ticking) return;
    ticking = true;
    try {
      const text = await snapshot();
      for (const res of streams) write(res, text);
    } finally {
      ticking = false;
    }
  };

  fastify.get(`${API}/stream`, async (request, reply: FastifyReply) => {
    authorize(request, 'read');
    await inspector();
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      ...SECURITY_HEADERS,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    write(res, `retry: 3000\n\n`);
    streams.add(res);
    res.on('close', () => {
      streams.delete(res);
      if (!streams.size && timer) {
        clearInterval(timer);
        timer = undefined;
      }
    });
    write(res, await snapshot());
    if (!timer) {
      timer = setInterval(() => void tick(), streamIntervalMs);
      timer.unref();
    }
  });

  fastify.addHook('preClose', async () => {
    if (timer) clearInterval(timer);
    timer = undefined;
    for (const res of streams) res.end();
    streams.clear();
  });

  // ---- the front end ----------------------------------------------------------------------------

  const sendFile = (request: FastifyRequest, reply: FastifyReply, file: StaticFile) => {
    reply.header('etag', file.etag);
    reply.header('cache-control', file.immutable ? 'public, max-age=31536000, immutable' : 'no-cache');
    if (request.headers['if-none-match'] === file.etag) return reply.code(304).send();
    return reply.type(file.type).send(file.body);
  };

  const page = async (request: FastifyRequest, reply: FastifyReply) => {
    const path = (request.params as { '*'?: string })['*'] ?? '';
    if (path === 'api' || path.startsWith('api/'))
      throw new HttpError(404, `No dashboard API route ${request.method} ${request.url.split('?')[0]}`);
    const file = files.get(path);
    if (file && path !== 'index.html') return sendFile(request, reply, file);
    // A missing built file is a 404; any other path is a page of the single-page app (its router reads
    // the path; run ids contain dots, so "has an extension" cannot tell files from pages).
    if (path.startsWith('assets/') || path === 'favicon.ico') throw new HttpError(404, `No dashboard file ${path.slice(0, 200)}`);
    const index = files.get('index.html');
    if (!index) return reply.code(503).type('text/html; charset=utf-8').send(NOT_BUILT_PAGE);
    return sendFile(request, reply, index);
  };
  fastify.get(base, page);
  fastify.get(`${base}/*`, page);
};
