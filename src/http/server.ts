/**
 * `createServer`: a Fastify 5 app with Errand's HTTP conventions, ready for the app's own routes.
 *
 * - zod schemas for validation, serialization and the OpenAPI 3.1 document (`GET /openapi.json`,
 *   interactive docs at `/docs`);
 * - FastAPI's error shapes (`{"detail": ...}`; 422 naming each bad field), for every route;
 * - a JSON body parser that refuses prototype-pollution keys; non-JSON bodies get 415;
 * - 404 `{"detail":"Not Found"}` for unknown routes, 405 with `Allow` for a known path with the wrong method;
 * - request ids: a valid `X-Request-Id` header is kept, else one is made; echoed in the answer;
 * - optional rate limiting per client (`rateLimit`: 429 with Retry-After);
 * - `errandRoutes` registered (task, run and health routes);
 * - the dashboard at `/dashboard` and Prometheus metrics at `/metrics` (`dashboard: false` to leave them out).
 *
 * Add routes afterwards with `app.withTypeProvider<ZodTypeProvider>().post(...)`: they get the same
 * validation, errors and documentation.
 */
import { randomUUID } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type {} from '@fastify/swagger'; // its types (app.swagger()); the plugin is imported when docs are on
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerOptions,
} from 'fastify';
import { createJsonSchemaTransform, createJsonSchemaTransformObject, serializerCompiler } from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import { ConfigError } from '../core/errors.ts';
import { importPeer } from '../core/peers.ts';
import { show } from '../core/show.ts';
import { metricsPlugin } from '../dashboard/metrics-route.ts';
import { dashboardPlugin } from '../dashboard/plugin.ts';
import type { Errand } from '../errand.ts';
import { type HttpAuthOptions, TokenAuth } from '../web/auth.ts';
import { useJsonBodies } from './body.ts';
import { HttpError, httpErrorHandler, RETRY_AFTER_SECONDS } from '../web/errors.ts';
import { checkRateLimit, type HttpRateLimitOptions, registerRateLimit, withTooManyRequests } from './rate-limit.ts';
import { errandRoutes } from './routes.ts';
import { zodValidatorCompiler } from './validation.ts';

export interface CreateServerOptions {
  /** The Errand app whose tasks get routes and whose broker serves the run routes. */
  errand: Errand;
  /** Bearer tokens for the task and run routes; auth is off when none is configured. See `authFromEnv`. */
  auth?: HttpAuthOptions;
  /** Largest request body, in bytes (413 above it). Default 1048576 (1 MiB). */
  bodyLimit?: number;
  /**
   * Fastify's `logger` option (true, false, or pino options), or a pino logger to use as is.
   * Default: the Errand app's logger.
   */
  logger?: FastifyServerOptions['logger'] | Logger;
  /** OpenAPI `info.title`. Default "Errand API". */
  title?: string;
  /** OpenAPI `info.version`. Default "1.0.0". */
  version?: string;
  /** OpenAPI `info.description`. */
  description?: string;
  /**
   * OpenAPI `servers`. Default `[{ url: '/' }]`: the server that serves the document, whatever its
   * address (so /docs calls the server it was loaded from; client generators get a base URL).
   */
  servers?: { url: string; description?: string }[];
  /** Serve `/docs` and `/openapi.json`. Default true. */
  docs?: boolean;
  /** Include error stacks in run JSON. Default false: stacks reveal file paths. */
  errorStacks?: boolean;
  /** Serve the dashboard at `/dashboard` and Prometheus metrics at `/metrics` (same tokens). Default true. See docs/dashboard.md. */
  dashboard?: boolean;
  /** SSE heartbeat interval in ms. Default 15000. */
  heartbeatMs?: number;
  /**
   * Rate limiting per client: `{ max, timeWindow }` (429 with Retry-After above `max` requests per
   * `timeWindow` ms). Default off. See `./rate-limit.ts` and docs/http.md.
   */
  rateLimit?: HttpRateLimitOptions | false;
}

const DEFAULT_BODY_LIMIT = 1024 * 1024;

/** The answers to a request Node's HTTP parser refuses, by its error code (else 400). */
const CLIENT_ERRORS: Record<string, [number, string]> = {
  HPE_HEADER_OVERFLOW: [431, 'The request headers are too large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'The request took too long to arrive'],
};

/**
 * Fastify's default answer to a client error, in the one error shape (`{"detail": ...}`): the
 * connection is then closed, as Node does.
 */
function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, detail] = CLIENT_ERRORS[err.code ?? ''] ?? [400, 'The request is not valid HTTP'];
  const body = JSON.stringify({ detail });
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(err);
}
const REQUEST_ID = /^[\w.:@-]{1,128}$/;

/** Fastify route URL to a matcher for request paths (for 405 detection). */
function routeMatcher(url: string): RegExp {
  let re = '';
  for (let i = 0; i < url.length; i++) {
    const ch = url[i]!;
    if (ch === ':' && url[i + 1] === ':') {
      re += ':';
      i++;
    } else if (ch === ':') {
      // A parameter: its name, then an optional (regex); it matches one segment (or part of it).
      i++;
      while (i < url.length && /[\w$]/.test(url[i]!)) i++;
      if (url[i] === '(') {
        let depth = 0;
        for (; i < url.length; i++) {
          if (url[i] === '\\') i++;
          else if (url[i] === '(') depth++;
          else if (url[i] === ')' && --depth === 0) break;
        }
      } else i--;
      re += '[^/]+';
    } else if (ch === '*') re += '.*';
    else re += ch.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}/?$`);
}

function logOptions(logger: CreateServerOptions['logger'], errand: Errand): Pick<FastifyServerOptions, 'logger' | 'loggerInstance'> {
  if (logger === undefined) return { loggerInstance: errand.logger as unknown as FastifyServerOptions['loggerInstance'] };
  if (
    logger &&
    typeof logger === 'object' &&
    typeof (logger as Logger).child === 'function' &&
    typeof (logger as Logger).info === 'function'
  ) {
    return { loggerInstance: logger as unknown as FastifyServerOptions['loggerInstance'] };
  }
  return { logger: logger as FastifyServerOptions['logger'] };
}

type LogFn = (...args: unknown[]) => void;
type LevelLogger = FastifyBaseLogger & { isLevelEnabled(level: string): boolean };

/**
 * A request's logger, made on its first line actually logged. Fastify gives each request a child
 * logger bound to its request id; with pino that is a child built per request even when the level
 * set logs nothing from it. This one builds the pino child only when a line passes the level.
 */
class LazyRequestLogger {
  readonly #parent: LevelLogger;
  readonly #bindings: Record<string, unknown>;
  #child: FastifyBaseLogger | undefined;

  constructor(parent: LevelLogger, bindings: Record<string, unknown>) {
    this.#parent = parent;
    this.#bindings = bindings;
  }

  #real(): FastifyBaseLogger {
    this.#child ??= this.#parent.child(this.#bindings);
    return this.#child;
  }

  #log(level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace', args: unknown[]): void {
    if (!this.#child && !this.#parent.isLevelEnabled(level)) return;
    const real = this.#real();
    (real[level] as LogFn).apply(real, args);
  }

  get level(): string {
    return (this.#child ?? this.#parent).level;
  }
  set level(level: string) {
    this.#real().level = level;
  }
  isLevelEnabled(level: string): boolean {
    return ((this.#child ?? this.#parent) as LevelLogger).isLevelEnabled(level);
  }
  fatal(...args: unknown[]): void {
    this.#log('fatal', args);
  }
  error(...args: unknown[]): void {
    this.#log('error', args);
  }
  warn(...args: unknown[]): void {
    this.#log('warn', args);
  }
  info(...args: unknown[]): void {
    this.#log('info', args);
  }
  debug(...args: unknown[]): void {
    this.#log('debug', args);
  }
  trace(...args: unknown[]): void {
    this.#log('trace', args);
  }
  silent(): void {}
  child(bindings: Record<string, unknown>, options?: object): FastifyBaseLogger {
    return this.#real().child(bindings, options);
  }
  bindings(): Record<string, unknown> {
    const real = this.#real() as FastifyBaseLogger & { bindings?: () => Record<string, unknown> };
    return real.bindings ? real.bindings() : { ...this.#bindings };
  }
  flush(cb?: (err?: Error) => void): void {
    const real = (this.#child ?? this.#parent) as FastifyBaseLogger & { flush?: (cb?: (err?: Error) => void) => void };
    if (real.flush) real.flush(cb);
    else cb?.();
  }
}

/** Fastify's `childLoggerFactory`: a lazy child for a pino-like logger, else the logger's own child. */
function requestLoggerFactory(logger: FastifyBaseLogger, bindings: Record<string, unknown>, options: object): FastifyBaseLogger {
  const o = options as { level?: unknown; serializers?: unknown };
  if (o.level === undefined && o.serializers === undefined && typeof (logger as Partial<LevelLogger>).isLevelEnabled === 'function') {
    return new LazyRequestLogger(logger as LevelLogger, bindings) as unknown as FastifyBaseLogger;
  }
  return logger.child(bindings, options);
}

/** Builds the Fastify app (not listening yet). See `CreateServerOptions`. */
/** The OpenAPI transform of the routes: `base`, after each route's 429 is added when a rate limit is on. */
function openApiTransform<T extends { url: string; schema: { response?: unknown } }, R>(limited: boolean, base: (input: T) => R) {
  return limited ? (input: T) => base(withTooManyRequests(input)) : base;
}

export async function createServer(options: CreateServerOptions): Promise<FastifyInstance> {
  if (!options || typeof options !== 'object') throw new ConfigError('createServer: options are required ({ errand })');
  const { errand } = options;
  if (!errand || typeof errand.broker !== 'function' || !(errand.tasks instanceof Map)) {
    throw new ConfigError('createServer: options.errand must be an Errand app (createErrand())');
  }
  const bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
  if (!Number.isInteger(bodyLimit) || bodyLimit < 1) {
    throw new ConfigError(`createServer: bodyLimit must be a positive integer of bytes, got ${show(options.bodyLimit)}`);
  }
  const auth = new TokenAuth(options.auth); // validates the tokens now, not at the first request
  const rateLimit = options.rateLimit === undefined || options.rateLimit === false ? undefined : checkRateLimit(options.rateLimit);

  const app = Fastify({
    ...logOptions(options.logger, errand),
    childLoggerFactory: requestLoggerFactory as FastifyServerOptions['childLoggerFactory'],
    bodyLimit,
    // While closing, requests on open keep-alive connections get our own 503 (below), in the
    // documented shape with Retry-After, rather than Fastify's raw one.
    return503OnClosing: false,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    // Bad URL encodings (400) and over-long path parameters (414) answer in the same shape.
    frameworkErrors: (error, request, reply) => httpErrorHandler(error, request, reply),
    // And so are the requests Node's parser refuses before Fastify sees them (431, 408, 400).
    clientErrorHandler: answerClientError,
    genReqId: (req) => {
      const h = req.headers['x-request-id'];
      return typeof h === 'string' && REQUEST_ID.test(h) ? h : randomUUID();
    },
  }) as unknown as FastifyInstance;

  app.setValidatorCompiler(zodValidatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler(httpErrorHandler);
  useJsonBodies(app);
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  // A callback hook, not an async one: no promise per request.
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id);
    if (closing) {
      reply.header('connection', 'close');
      done(new HttpError(503, 'The server is shutting down; try again', { 'retry-after': String(RETRY_AFTER_SECONDS) }));
      return;
    }
    done();
  });

  // Remember every route so that a known path with another method gets 405 rather than 404.
  const routes: { methods: string[]; matcher: RegExp }[] = [];
  app.addHook('onRoute', (route) => {
    const methods = (Array.isArray(route.method) ? route.method : [route.method]).map((m) => String(m).toUpperCase());
    routes.push({ methods, matcher: routeMatcher(route.url) });
  });
  app.setNotFoundHandler((request: FastifyRequest, reply: FastifyReply) => {
    let path = request.url.split('?')[0] ?? '/';
    try {
      path = decodeURIComponent(path);
    } catch {
      // Keep the raw path: it matches no route either way.
    }
    const allowed = new Set<string>();
    for (const r of routes) if (r.matcher.test(path)) for (const m of r.methods) allowed.add(m);
    // A route with this method matches (a wildcard, or a route that called callNotFound): a plain 404.
    if (allowed.size > 0 && !allowed.has(request.method.toUpperCase())) {
      throw new HttpError(405, 'Method Not Allowed', { allow: [...allowed].sort().join(', ') });
    }
    reply.code(404).type('application/json; charset=utf-8').send({ detail: 'Not Found' });
  });

  // Before every route, so that each one gets the limiter's hook.
  if (rateLimit) await registerRateLimit(app, rateLimit);

  if (options.docs !== false) {
    // Optional peers: loaded only when the docs are served, with a message saying what to install.
    const peers = ['@fastify/swagger', '@fastify/swagger-ui'];
    const what = 'createServer (its docs at /docs and /openapi.json)';
    const { default: fastifySwagger } = await importPeer(() => import('@fastify/swagger'), what, peers, ', or pass docs: false');
    const { default: fastifySwaggerUi } = await importPeer(() => import('@fastify/swagger-ui'), what, peers, ', or pass docs: false');
    const zodToJsonConfig = { unrepresentable: 'any' as const };
    await app.register(fastifySwagger, {
      openapi: {
        openapi: '3.1.0',
        info: {
          title: options.title ?? 'Errand API',
          version: options.version ?? '1.0.0',
          ...(options.description ? { description: options.description } : {}),
        },
        servers: options.servers ?? [{ url: '/', description: 'The server that serves this document' }],
        // Without tokens nothing needs one: said once for the whole document (each operation says its own otherwise).
        ...(auth.enabled ? {} : { security: [] }),
        ...(auth.enabled
          ? {
              components: {
                securitySchemes: {
                  bearerAuth: {
                    type: 'http',
                    scheme: 'bearer',
                    description: 'A read token (GET routes) or an admin token (every route)',
                  },
                },
              },
            }
          : {}),
      },
      transform: openApiTransform(
        rateLimit !== undefined,
        createJsonSchemaTransform({
          skipList: [
            '/docs',
            '/docs/',
            '/docs/*',
            '/docs/json',
            '/docs/yaml',
            '/docs/static/*',
            '/docs/uiConfig',
            '/docs/initOAuth',
            '/openapi.json',
          ],
          zodToJsonConfig,
        }),
      ),
      transformObject: createJsonSchemaTransformObject({ zodToJsonConfig }),
    });
    await app.register(fastifySwaggerUi, { routePrefix: '/docs' });
    app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  }

  await app.register(errandRoutes, {
    errand,
    auth: options.auth,
    bodyLimit,
    errorStacks: options.errorStacks,
    heartbeatMs: options.heartbeatMs,
  });
  if (options.dashboard !== false) {
    await app.register(dashboardPlugin, { errand, auth: options.auth });
    await app.register(metricsPlugin, { errand, auth: options.auth });
  }
  return app;
}
