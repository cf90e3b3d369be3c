/**
 * The dashboard's security: the headers on every response (a content security policy without
 * inline code, no framing, no sniffing), who may call its API (bearer tokens: read to see, admin to
 * act), and the refusal of cross-site actions and of action bodies that are not JSON.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Scope, TokenAuth } from '../web/auth.ts';
import { HttpError } from '../web/errors.ts';

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

/** Every response gets SECURITY_HEADERS; the API's answers are never cached. */
export function useSecurityHeaders(fastify: FastifyInstance, api: string): void {
  fastify.addHook('onSend', async (request, reply, payload) => {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) reply.header(k, v);
    if (request.url.startsWith(`${api}/`)) reply.header('cache-control', 'no-store');
    return payload;
  });
}

/** Why a request is not signed in: it sent no token, or one that matches none. */
export type SignedOutReason = 'missing' | 'invalid';

export interface DashboardAccess {
  /** The scope of the request's token (admin when auth is off), or why it has none; never throws. */
  scopeOf(request: FastifyRequest): Scope | SignedOutReason;
  /** The scope of the request's token; throws 401 (no or unknown token) or 403 (read token on an action). */
  authorize(request: FastifyRequest, need: Scope): Scope;
  /** An admin token, a same-site request and a JSON body, or an HttpError. */
  checkAction(request: FastifyRequest): void;
}

/** What a request refused for its token is told (a 401's detail, the signed-out session's). */
export const SIGNED_OUT_DETAIL: Readonly<Record<SignedOutReason, string>> = {
  missing: 'Not authenticated: sign in with a read or admin token',
  invalid: 'Invalid token',
};

export function dashboardAccess(auth: TokenAuth): DashboardAccess {
  function scopeOf(request: FastifyRequest): Scope | SignedOutReason {
    if (!auth.enabled) return 'admin';
    const header = request.headers.authorization;
    const m = typeof header === 'string' ? /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header) : null;
    if (!m) return 'missing';
    return auth.scopeOf(m[1]!) ?? 'invalid';
  }

  /** The scope of the request's token; throws 401 (no or unknown token) or 403 (read token on an action). */
  function authorize(request: FastifyRequest, need: Scope): Scope {
    const scope = scopeOf(request);
    if (scope === 'missing') throw new HttpError(401, SIGNED_OUT_DETAIL.missing, { 'www-authenticate': 'Bearer realm="errand"' });
    if (scope === 'invalid')
      throw new HttpError(401, SIGNED_OUT_DETAIL.invalid, { 'www-authenticate': 'Bearer realm="errand", error="invalid_token"' });
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

  return { scopeOf, authorize, checkAction };
}
