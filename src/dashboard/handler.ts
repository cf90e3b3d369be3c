/**
 * The dashboard outside Fastify: a request handler, `(req, res, next?) => void`, for Express, Koa
 * (through its `req`/`res`), Hono on Node, or a plain `node:http` server, as bull-board users mount
 * theirs:
 *
 *   app.use('/admin/queues', createDashboardHandler({ errand, basePath: '/admin/queues' }));   // Express
 *   http.createServer((req, res) => dashboard(req, res, () => { res.statusCode = 404; res.end(); }));
 *
 * One implementation: the handler is the Fastify plugin itself (`dashboardPlugin`, same routes,
 * auth, security headers and live stream), in a Fastify instance that never listens; each request
 * goes through `fastify.routing(req, res)`, Fastify's documented entry for a request that another
 * server received. Fastify must be installed (it is a dependency of the dashboard either way).
 *
 * - Requests outside `basePath` go to `next()` (or get a 404 without it).
 * - Mounted under a path (Express's `app.use(path, handler)`), the handler reads the full URL from
 *   `req.originalUrl`, so `basePath` is the path where users reach it.
 * - A body that middleware already read (`express.json()` before the dashboard) is handed over as
 *   parsed (`req.body`); the actions then work as when the dashboard reads the body itself.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import Fastify, { type FastifyBaseLogger, LogController } from 'fastify';
import type { Logger } from 'pino';
import type { Broker } from '../broker/types.ts';
import { createErrand, type Errand } from '../errand.ts';
import type { HttpAuthOptions } from '../web/auth.ts';
import { withoutCharset } from '../web/json-charset.ts';
import { checkBasePath, DASHBOARD_PATH, type DashboardOptions, dashboardPlugin } from './plugin.ts';

export interface DashboardHandlerOptions extends Omit<DashboardOptions, 'errand' | 'auth'> {
  /** The Errand app whose broker and tasks the dashboard shows (its task names fill the filters; its `redact` paths apply). */
  errand?: Errand;
  /**
   * Without an app: a broker URL or instance to show (default: `ERRAND_BROKER_URL`, `REDIS_URL`,
   * then `sqlite:./data/errand.db`). Only `ERRAND_REDACT` applies then; the handler's `close()`
   * closes a broker it opened from a URL.
   */
  broker?: string | Broker;
  /** Bearer tokens: read tokens see, admin tokens act (see docs/dashboard.md). Default: open. */
  auth?: HttpAuthOptions;
  /** Where users reach the dashboard, as they type it in the browser. Default `/dashboard`. */
  basePath?: string;
  /** Logger of the dashboard's own lines (actions, stream errors). Default: the app's. */
  logger?: Logger;
}

/** A connect-style request handler (Express, `node:http`), with its lifecycle. */
export interface DashboardHandler {
  (req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void): void;
  /** Where the dashboard answers. */
  readonly basePath: string;
  /** Resolves once the handler is ready (requests wait for it anyway); rejects if it cannot start. */
  ready(): Promise<void>;
  /** Ends the open live streams and stops their timer; closes the broker if the handler opened it. */
  close(): Promise<void>;
}

type MountedRequest = IncomingMessage & { originalUrl?: string; body?: unknown; _body?: boolean };

export function createDashboardHandler(options: DashboardHandlerOptions = {}): DashboardHandler {
  const { errand: given, broker, auth, basePath: rawBase, logger, ...rest } = options;
  if (given && broker !== undefined) throw new TypeError('createDashboardHandler: give errand or broker, not both');
  if (given && typeof given.broker !== 'function') throw new TypeError('createDashboardHandler: errand must be an Errand app');
  const basePath = checkBasePath(rawBase ?? DASHBOARD_PATH, 'createDashboardHandler');
  const errand = given ?? createErrand({ ...(broker !== undefined && { broker }), ...(logger && { logger }) });

  const app = Fastify({
    loggerInstance: (logger ?? errand.logger) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
  });
  // A body some middleware already consumed: parse what it parsed instead of waiting for a stream that has ended.
  app.addHook('preParsing', async (request, _reply, payload) => {
    const raw = request.raw as MountedRequest;
    if (!raw.readableEnded && raw._body !== true) return payload;
    const body = raw.body;
    const bytes =
      body === undefined || body === null
        ? Buffer.alloc(0)
        : Buffer.isBuffer(body)
          ? body
          : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    // What the middleware decoded (an object, a string) is handed over as UTF-8, whatever charset it came in.
    const ct = request.headers['content-type'];
    if (!Buffer.isBuffer(body) && typeof ct === 'string') request.headers['content-type'] = withoutCharset(ct);
    const stream = Readable.from([bytes]) as Readable & { receivedEncodedLength?: number };
    stream.receivedEncodedLength = bytes.length;
    request.headers['content-length'] = String(bytes.length);
    return stream;
  });
  const ready = (async () => {
    await app.register(dashboardPlugin, { ...rest, errand, basePath, ...(auth && { auth }) });
    await app.ready();
  })();
  // Reported to each request (and by ready()); not an unhandled rejection meanwhile.
  ready.catch(() => {});

  const handler = ((req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void): void => {
    const mounted = req as MountedRequest;
    const url = mounted.originalUrl ?? req.url ?? '/';
    const path = url.split('?', 1)[0]!;
    if (path !== basePath && !path.startsWith(`${basePath}/`)) {
      if (next) {
        next();
        return;
      }
      res.statusCode = 404;
      res.setHeader('content-type', 'text/plain; charset=utf-8');
      res.end(`Not found: the dashboard is at ${basePath}/`);
      return;
    }
    req.url = url;
    ready.then(
      () => app.routing(req, res),
      (err: unknown) => {
        if (next) {
          next(err);
          return;
        }
        res.statusCode = 500;
        res.setHeader('content-type', 'text/plain; charset=utf-8');
        res.end('The dashboard failed to start; see the server log');
      },
    );
  }) as DashboardHandler;
  Object.defineProperty(handler, 'basePath', { value: basePath, enumerable: true });
  handler.ready = () => ready;
  handler.close = async () => {
    await ready.catch(() => {});
    await app.close();
    if (!given) await errand.close();
  };
  return handler;
}
