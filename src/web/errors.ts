/**
 * One error shape for every HTTP answer that is not a success, the one FastAPI users know:
 *
 * - `{"detail": "text"}` for most errors (400, 401, 403, 404, 405, 409, 413, 415, 500, 503);
 * - `{"detail": [{"loc": ["body", "email"], "msg": "...", "type": "..."}]}` for 422, one item per
 *   bad field. `loc` starts with `body`, `query`, `path` or `header`.
 *
 * `httpErrorHandler` turns any error (Fastify's own, a schema validation failure, an Errand error,
 * an `HttpError` thrown by a route) into that shape. Unexpected errors become a plain 500 and are
 * logged with the request id; the broker being down is a 503 with `Retry-After`, never a 500.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ZodError } from 'zod';
import {
  BrokerFullError,
  type BrokerStorage,
  BrokerUnavailableError,
  EmptyPrefixError,
  InputError,
  type InputIssue,
  RunNotFoundError,
  WorkflowNotFoundError,
} from '../core/errors.ts';
import { tightestBounds } from '../core/schema-issues.ts';
import { discardRestOfBody } from './discard.ts';

/** One bad field, as in FastAPI's 422 answers. */
export interface ValidationDetail {
  loc: (string | number)[];
  msg: string;
  type: string;
}

/** Where a value came from: the first element of `loc`. */
export type Location = 'body' | 'query' | 'path' | 'header';

/** Seconds a client should wait before trying again when the broker is down. */
export const RETRY_AFTER_SECONDS = 5;

/**
 * The 503 of a broker that may not write under an empty key prefix (`EmptyPrefixError`: `errand
 * dashboard` on a Redis prefix no app has written to yet, or a mistyped `ERRAND_PREFIX`).
 */
export const EMPTY_PREFIX_DETAIL =
  "Nothing is stored under the broker's key prefix yet: runs show here once an app using that prefix writes there " +
  '(a worker starting, an enqueue); if they should be here already, check ERRAND_PREFIX';

/** The 503 of a broker whose storage is full (`BrokerFullError`): nothing was stored, and the client may try again. */
export const FULL_DETAIL: Record<BrokerStorage, string> = {
  memory:
    'The task broker is out of memory (Redis at its maxmemory) and stores nothing new until memory is freed; nothing was done: try again later',
  disk: 'The task broker is out of disk space and stores nothing new until space is freed; nothing was done: try again later',
};

/** An error with an HTTP status, a `detail` (text, or the 422 list) and headers. Throw it from a route. */
export class HttpError extends Error {
  override name = 'HttpError';
  readonly statusCode: number;
  readonly detail: string | ValidationDetail[];
  readonly headers: Record<string, string>;
  constructor(statusCode: number, detail: string | ValidationDetail[], headers: Record<string, string> = {}) {
    super(typeof detail === 'string' ? detail : `${detail.length} invalid field${detail.length === 1 ? '' : 's'}`);
    this.statusCode = statusCode;
    this.detail = detail;
    this.headers = headers;
  }
}

/** A 422 naming each bad field. */
export class RequestValidationError extends HttpError {
  override name = 'RequestValidationError';
  constructor(detail: ValidationDetail[]) {
    super(422, detail);
  }
}

/** Input issues (from `task.prepare`, a zod parse, ...) as 422 details under `root`. */
export function issuesToDetail(root: Location, issues: readonly InputIssue[]): ValidationDetail[] {
  return issues.map((i) => ({ loc: [root, ...i.path], msg: i.message, type: i.code }));
}

/** A ZodError's issues as 422 details under `root`. */
export function zodErrorToDetail(root: Location, error: ZodError): ValidationDetail[] {
  return tightestBounds(error.issues).map((i) => ({
    loc: [root, ...i.path.map((p) => (typeof p === 'symbol' ? String(p) : p))],
    msg: i.message,
    type: i.code,
  }));
}

const CONTEXT_TO_LOCATION: Record<string, Location> = {
  body: 'body',
  querystring: 'query',
  query: 'query',
  params: 'path',
  headers: 'header',
};

/** A JSON pointer (`/a/0/b`, with `~1` and `~0` escapes) as path segments; numeric segments become numbers. */
function pointerToPath(pointer: string): (string | number)[] {
  if (!pointer || pointer === '/') return [];
  return pointer
    .replace(/^\//, '')
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^(0|[1-9]\d{0,8})$/.test(s) ? Number(s) : s));
}

interface FastifyValidationItem {
  instancePath?: string;
  message?: string;
  keyword?: string;
  params?: Record<string, unknown>;
  /** Set by Errand's validator compiler: the zod issue path, exact (keys may contain "/"). */
  path?: (string | number)[];
}

/**
 * Fastify's `error.validation` (from the zod validator compiler, Errand's, or Fastify's default
 * JSON-schema validator) as 422 details.
 */
export function fastifyValidationToDetail(context: string | undefined, items: readonly FastifyValidationItem[]): ValidationDetail[] {
  const root = CONTEXT_TO_LOCATION[context ?? 'body'] ?? 'body';
  return items.map((item) => {
    const path = Array.isArray(item.path) ? [...item.path] : pointerToPath(item.instancePath ?? '');
    // JSON-schema validators report a missing property on the parent object.
    const missing = item.params?.missingProperty;
    if (typeof missing === 'string' && item.keyword === 'required') path.push(missing);
    const extra = item.params?.additionalProperty;
    if (typeof extra === 'string' && item.keyword === 'additionalProperties') path.push(extra);
    return { loc: [root, ...path], msg: item.message ?? 'is invalid', type: item.keyword ?? 'invalid' };
  });
}

type ErrorLike = Error & {
  statusCode?: number;
  status?: number;
  code?: string;
  validation?: FastifyValidationItem[];
  validationContext?: string;
};

/** The limit to name in a 413: the route's body limit. */
function bodyLimitOf(request: FastifyRequest): number | undefined {
  const limit = (request.routeOptions as { bodyLimit?: number } | undefined)?.bodyLimit;
  return typeof limit === 'number' && Number.isFinite(limit) ? limit : undefined;
}

function contentTypeOf(request: FastifyRequest): string {
  const ct = request.headers['content-type'];
  return typeof ct === 'string' ? ct.slice(0, 100) : '';
}

/** The request's path for a message, cut at 100 characters. */
function pathOf(request: FastifyRequest): string {
  const path = (request.raw.url ?? request.url ?? '').split('?')[0] ?? '';
  return JSON.stringify(path.length > 100 ? `${path.slice(0, 100)}...` : path);
}

/** What to answer for an error: status, body and headers. Exported for apps with their own error handler. */
export function errorResponse(
  error: unknown,
  request: FastifyRequest,
): { statusCode: number; body: { detail: string | ValidationDetail[] }; headers: Record<string, string>; log?: 'warn' | 'error' } {
  if (error instanceof HttpError) return { statusCode: error.statusCode, body: { detail: error.detail }, headers: error.headers };
  if (error instanceof InputError) return { statusCode: 422, body: { detail: issuesToDetail('body', error.issues) }, headers: {} };
  if (error instanceof RunNotFoundError || error instanceof WorkflowNotFoundError)
    return { statusCode: 404, body: { detail: error.message }, headers: {} };
  if (error instanceof EmptyPrefixError) {
    return { statusCode: 503, body: { detail: EMPTY_PREFIX_DETAIL }, headers: { 'retry-after': String(RETRY_AFTER_SECONDS) } };
  }
  if (error instanceof BrokerFullError) {
    return {
      statusCode: 503,
      body: { detail: FULL_DETAIL[error.storage] },
      headers: { 'retry-after': String(RETRY_AFTER_SECONDS) },
      log: 'warn',
    };
  }
  if (error instanceof BrokerUnavailableError) {
    return {
      statusCode: 503,
      body: { detail: 'The task broker is unavailable; try again later' },
      headers: { 'retry-after': String(RETRY_AFTER_SECONDS) },
      log: 'warn',
    };
  }
  if (error instanceof ZodError) {
    // A route that parsed a request part itself with schema.parse(): its input was bad.
    return { statusCode: 422, body: { detail: zodErrorToDetail('body', error) }, headers: {} };
  }
  const e = (error ?? {}) as ErrorLike;
  if (Array.isArray(e.validation)) {
    return { statusCode: 422, body: { detail: fastifyValidationToDetail(e.validationContext, e.validation) }, headers: {} };
  }
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE': {
      const limit = bodyLimitOf(request);
      return {
        statusCode: 413,
        body: { detail: `Request body is too large: the limit is ${limit === undefined ? 'set by the server' : `${limit} bytes`}` },
        headers: {},
      };
    }
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': {
      const ct = contentTypeOf(request);
      return {
        statusCode: 415,
        body: { detail: `Unsupported media type${ct ? ` "${ct}"` : ''}: send the body as application/json` },
        headers: {},
      };
    }
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { statusCode: 400, body: { detail: 'The body is empty but the content type is application/json' }, headers: {} };
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return { statusCode: 400, body: { detail: 'The body is not valid JSON' }, headers: {} };
    // Fastify's words quote the whole path, which may be as long as the server lets a URL be.
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return { statusCode: 414, body: { detail: `A path parameter is too long: ${pathOf(request)}` }, headers: {} };
    case 'FST_ERR_BAD_URL':
      return { statusCode: 400, body: { detail: `The URL has a bad percent-encoding: ${pathOf(request)}` }, headers: {} };
  }
  const status = typeof e.statusCode === 'number' ? e.statusCode : typeof e.status === 'number' ? e.status : 500;
  if (status >= 400 && status < 500 && Number.isInteger(status)) {
    return { statusCode: status, body: { detail: typeof e.message === 'string' && e.message ? e.message : 'Bad Request' }, headers: {} };
  }
  return { statusCode: 500, body: { detail: 'Internal Server Error' }, headers: {}, log: 'error' };
}

/**
 * The Fastify error handler of Errand's HTTP layer. `createServer` installs it; apps that build their
 * own instance install it with `app.setErrorHandler(httpErrorHandler)`.
 */
export function httpErrorHandler(error: unknown, request: FastifyRequest, reply: FastifyReply): void {
  const res = errorResponse(error, request);
  if (res.log === 'error') request.log.error({ err: error, reqId: request.id }, 'request failed with an unexpected error');
  else if (res.log === 'warn')
    request.log.warn({ err: error, reqId: request.id }, error instanceof BrokerFullError ? 'broker storage full' : 'broker unavailable');
  if (reply.sent || reply.raw.headersSent) return;
  // An answer before the body was read (413, 415, 503 while closing): the connection closes after
  // it, but only once the rest of the body is read and discarded (bounded), so that the client reads it.
  if (!request.raw.complete) discardRestOfBody(request.raw);
  reply.code(res.statusCode).headers(res.headers).type('application/json; charset=utf-8').send(res.body);
}
