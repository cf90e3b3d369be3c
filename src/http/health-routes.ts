/** The health routes of `errandRoutes`: `GET /healthz` (the process is up) and `GET /readyz` (the broker answers a ping). */
import { z } from 'zod';
import { BrokerUnavailableError } from '../core/errors.ts';
import { ErrorSchema } from './schemas.ts';

import type { RouteContext } from './route-context.ts';

export function registerHealthRoutes(ctx: RouteContext): void {
  const { app, auth, brokerCall, readyTimeoutMs } = ctx;

  // ---- health --------------------------------------------------------------------------------------

  app.get(
    '/healthz',
    {
      schema: {
        summary: 'Liveness',
        operationId: 'healthz',
        // Open even when tokens are configured (load balancers probe them): said so, for the docs and linters.
        security: auth.enabled ? [] : undefined,
        description: 'Answers 200 while the process is up; does not check the broker.',
        tags: ['health'],
        response: { 200: z.object({ status: z.literal('ok') }) },
      },
    },
    async () => ({ status: 'ok' as const }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        summary: 'Readiness',
        operationId: 'readyz',
        security: auth.enabled ? [] : undefined,
        description: 'Answers 200 when the broker answers a ping, else 503 with Retry-After.',
        tags: ['health'],
        response: { 200: z.object({ status: z.literal('ok'), broker: z.string() }), 503: ErrorSchema },
      },
    },
    async () => {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new BrokerUnavailableError(`The broker did not answer a ping within ${readyTimeoutMs} ms`)),
          readyTimeoutMs,
        );
      });
      const ping = brokerCall(async (b) => {
        await b.ping();
        return b.kind;
      });
      ping.catch(() => {}); // when the timeout wins, a late failure must not go unhandled
      try {
        const kind = await Promise.race([ping, timeout]);
        return { status: 'ok' as const, broker: kind };
      } finally {
        clearTimeout(timer);
      }
    },
  );
}
