/**
 * Optional HTTP rate limiting for `createServer` (`rateLimit: { max, timeWindow }`), on
 * `@fastify/rate-limit`. Off unless configured.
 *
 * Each client (its IP address, or the key `keyGenerator` returns) may make `max` requests per
 * `timeWindow`; the next ones get 429 in FastAPI's error shape, `{"detail": "Too many requests: ..."}`,
 * with `Retry-After` (seconds) and the `x-ratelimit-*` headers. The health probes (`/healthz`,
 * `/readyz`) are never limited: a load balancer polling them must not take its own instance out.
 *
 * Counts live in the memory of each server process: with several API processes behind a load
 * balancer, each allows `max` per window. Behind a reverse proxy, set Fastify's `trustProxy` (or
 * give a `keyGenerator`), else every client shares the proxy's address.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ConfigError } from '../core/errors.ts';
import { importPeer } from '../core/peers.ts';
import { show } from '../core/show.ts';
import { HttpError } from '../web/errors.ts';
import { ErrorSchema } from './schemas.ts';

export interface HttpRateLimitOptions {
  /** Requests each client may make per `timeWindow`. A positive integer. */
  max: number;
  /** The window, in ms (or a string such as `"1 minute"`). Default 60000. */
  timeWindow?: number | string;
  /** The client's key. Default: the request's IP address (`request.ip`; mind `trustProxy` behind a proxy). */
  keyGenerator?: (request: FastifyRequest) => string | number | Promise<string | number>;
  /** Keys (IP addresses by default) that are never limited. */
  allowList?: string[];
}

/** Paths never limited. */
const EXEMPT = new Set(['/healthz', '/readyz']);

/**
 * The OpenAPI transform input of a route with its 429 answer added (when a limit is on): every
 * documented route but the exempt ones may answer it.
 */
export function withTooManyRequests<T extends { url: string; schema: { response?: unknown } }>(input: T): T {
  const response = input.schema.response as Record<number, unknown> | undefined;
  if (!response || EXEMPT.has(input.url) || response[429]) return input;
  return { ...input, schema: { ...input.schema, response: { ...response, 429: ErrorSchema } } };
}

/** Checks the options (a `ConfigError` names the bad one). */
export function checkRateLimit(options: unknown): HttpRateLimitOptions {
  if (options === null || typeof options !== 'object') {
    throw new ConfigError('createServer: rateLimit must be an object { max, timeWindow } (or false for none)');
  }
  const o = options as Record<string, unknown>;
  if (typeof o.max !== 'number' || !Number.isInteger(o.max) || o.max < 1) {
    throw new ConfigError(`createServer: rateLimit.max must be a positive integer of requests, got ${show(o.max)}`);
  }
  const w = o.timeWindow;
  if (w !== undefined && !(typeof w === 'number' && Number.isFinite(w) && w >= 1) && !(typeof w === 'string' && w.trim() !== '')) {
    throw new ConfigError(`createServer: rateLimit.timeWindow must be a number of ms >= 1 (or a string like "1 minute"), got ${show(w)}`);
  }
  if (o.keyGenerator !== undefined && typeof o.keyGenerator !== 'function') {
    throw new ConfigError('createServer: rateLimit.keyGenerator must be a function of the request');
  }
  if (o.allowList !== undefined && (!Array.isArray(o.allowList) || o.allowList.some((k) => typeof k !== 'string'))) {
    throw new ConfigError('createServer: rateLimit.allowList must be an array of strings');
  }
  return o as unknown as HttpRateLimitOptions;
}

function pathOf(request: FastifyRequest): string {
  const url = request.url;
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}

/**
 * Registers the limiter on `app` (before the routes it should cover). Its check is an `onRequest`
 * hook of the app itself, so it runs before every route's own hooks: a request that the auth hook
 * refuses (401, 403) still counts, and token guessing is throttled like any other request. (The
 * plugin's `global` mode would append its hook after each route's own, so a refused token would
 * never be counted.) Unknown paths (404) count too.
 */
export async function registerRateLimit(app: FastifyInstance, options: HttpRateLimitOptions): Promise<void> {
  const allow = new Set(options.allowList ?? []);
  // An optional peer, loaded only when a limit is asked for.
  const { default: fastifyRateLimit } = await importPeer(() => import('@fastify/rate-limit'), 'The rate limit (rateLimit)', [
    '@fastify/rate-limit',
  ]);
  await app.register(fastifyRateLimit, {
    global: false,
    max: options.max,
    timeWindow: options.timeWindow ?? 60_000,
    ...(options.keyGenerator ? { keyGenerator: options.keyGenerator } : {}),
    allowList: (request, key) => EXEMPT.has(pathOf(request)) || allow.has(String(key)),
    errorResponseBuilder: (_request, context) => {
      const seconds = Math.max(1, Math.ceil(context.ttl / 1000));
      return new HttpError(
        context.statusCode,
        `Too many requests: at most ${context.max} per ${describeWindow(options.timeWindow ?? 60_000)}; try again in ${seconds} s`,
        { 'retry-after': String(seconds) },
      );
    },
  });
  app.addHook('onRequest', app.rateLimit());
}

function describeWindow(w: number | string): string {
  if (typeof w === 'string') return w;
  if (w % 60_000 === 0) return w === 60_000 ? 'minute' : `${w / 60_000} minutes`;
  if (w % 1000 === 0) return w === 1000 ? 'second' : `${w / 1000} seconds`;
  return `${w} ms`;
}
