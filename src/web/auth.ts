/**
 * Optional bearer-token auth for the task and run routes.
 *
 * Off when no token is configured. `read` tokens may call the GET routes (run status, events, the
 * task list); `admin` tokens may call everything (enqueue, cancel, retry). Tokens are compared in
 * constant time: both sides are hashed with SHA-256 and compared with `crypto.timingSafeEqual`, and
 * every configured token is checked, so neither the length nor the position of a match leaks.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ConfigError } from '../core/errors.ts';
import { HttpError } from './errors.ts';

export interface HttpAuthOptions {
  /** Tokens that may call every route (enqueue, cancel, retry, and all reads). */
  admin?: string[];
  /** Tokens that may call the read-only routes (GET). */
  read?: string[];
}

export type Scope = 'read' | 'admin';

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest();

function checkTokens(tokens: unknown, name: string): string[] {
  if (tokens === undefined) return [];
  if (!Array.isArray(tokens)) throw new ConfigError(`auth.${name} must be an array of token strings`);
  tokens.forEach((t, i) => {
    if (typeof t !== 'string' || t.trim() === '')
      throw new ConfigError(`auth.${name}[${i}] is empty: every token must be a non-empty string`);
    if (/\s/.test(t)) throw new ConfigError(`auth.${name}[${i}] contains whitespace, which a bearer token cannot carry`);
  });
  return tokens as string[];
}

/** Decides the scope of a request from its `Authorization` header. */
export class TokenAuth {
  readonly enabled: boolean;
  readonly #admin: Buffer[];
  readonly #read: Buffer[];

  constructor(options: HttpAuthOptions | undefined) {
    if (options !== undefined && (options === null || typeof options !== 'object')) {
      throw new ConfigError('auth must be an object: { admin?: string[], read?: string[] }');
    }
    this.#admin = checkTokens(options?.admin, 'admin').map(sha256);
    this.#read = checkTokens(options?.read, 'read').map(sha256);
    this.enabled = this.#admin.length + this.#read.length > 0;
  }

  /** The scope a presented token grants, or null when it matches no configured token. */
  scopeOf(token: string): Scope | null {
    const h = sha256(token);
    let admin = false;
    let read = false;
    // No early exit: every comparison runs whatever matches.
    for (const t of this.#admin) admin = timingSafeEqual(h, t) || admin;
    for (const t of this.#read) read = timingSafeEqual(h, t) || read;
    return admin ? 'admin' : read ? 'read' : null;
  }

  /** Throws 401 or 403 when the request may not use a route that needs `scope`. */
  check(request: FastifyRequest, scope: Scope): void {
    if (!this.enabled) return;
    const header = request.headers.authorization;
    const match = typeof header === 'string' ? /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header) : null;
    if (!match) {
      throw new HttpError(401, 'Not authenticated: send "Authorization: Bearer <token>"', {
        'www-authenticate': 'Bearer realm="errand"',
      });
    }
    const granted = this.scopeOf(match[1]!);
    if (granted === null) {
      throw new HttpError(401, 'Invalid token', { 'www-authenticate': 'Bearer realm="errand", error="invalid_token"' });
    }
    if (scope === 'admin' && granted !== 'admin') {
      // The route named (its method and path): the check guards the app's own routes too.
      const path = (request.raw.url ?? request.url ?? '').split('?')[0] ?? '';
      throw new HttpError(
        403,
        `This token may only read: ${request.method} ${path.length > 100 ? `${path.slice(0, 100)}...` : path} needs an admin token`,
      );
    }
  }

  /** An `onRequest` hook that requires `scope`. Use it on your own routes: `{ onRequest: auth.hook('admin') }`. */
  hook(scope: Scope): (request: FastifyRequest, reply: FastifyReply) => Promise<void> {
    return async (request) => this.check(request, scope);
  }
}

function parseList(env: NodeJS.ProcessEnv, name: string): string[] | undefined {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return undefined;
  const parts = raw.split(',').map((s) => s.trim());
  parts.forEach((p, i) => {
    if (p === '') {
      throw new ConfigError(
        `${name} has an empty entry at position ${i + 1} of ${parts.length}: give comma-separated tokens without empty items (check for a doubled or trailing comma)`,
      );
    }
    if (/\s/.test(p)) throw new ConfigError(`${name} entry ${i + 1} contains whitespace, which a bearer token cannot carry`);
  });
  return parts;
}

/**
 * Reads tokens from `ERRAND_ADMIN_TOKENS` and `ERRAND_READ_TOKENS` (comma-separated). A variable
 * that is unset or blank configures no token of its kind; an empty item (`a,,b`, `a,`) is an error.
 */
export function authFromEnv(env: NodeJS.ProcessEnv = process.env): HttpAuthOptions {
  const auth: HttpAuthOptions = {};
  const admin = parseList(env, 'ERRAND_ADMIN_TOKENS');
  const read = parseList(env, 'ERRAND_READ_TOKENS');
  if (admin) auth.admin = admin;
  if (read) auth.read = read;
  return auth;
}
