/**
 * The dashboard's live updates: `GET <api>/stream`, server-sent events carrying an `overview`
 * snapshot every `intervalMs`. One timer serves every open stream; a failed snapshot is sent as an
 * `error` event and the stream stays open.
 */
import type { ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { EmptyPrefixError } from '../core/errors.ts';
import type { Scope } from '../web/auth.ts';
import { EMPTY_PREFIX_DETAIL, HttpError } from '../web/errors.ts';
import type { Overview } from './api-types.ts';
import { SECURITY_HEADERS } from './security.ts';

export interface StreamOptions {
  api: string;
  intervalMs: number;
  authorize(request: FastifyRequest, need: Scope): Scope;
  /** Throws (401, 503, 501) before the stream opens when the broker cannot be read. */
  inspector(): Promise<unknown>;
  overview(): Promise<Overview>;
}

export function registerStream(fastify: FastifyInstance, options: StreamOptions): void {
  const { api, intervalMs, authorize, inspector, overview } = options;
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
      const detail =
        err instanceof HttpError && typeof err.detail === 'string'
          ? err.detail
          : err instanceof EmptyPrefixError
            ? EMPTY_PREFIX_DETAIL
            : 'The task broker is unavailable; retrying';
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

  fastify.get(`${api}/stream`, async (request, reply: FastifyReply) => {
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
      timer = setInterval(() => void tick(), intervalMs);
      timer.unref();
    }
  });

  fastify.addHook('preClose', async () => {
    if (timer) clearInterval(timer);
    timer = undefined;
    for (const res of streams) res.end();
    streams.clear();
  });
}
