/**
 * `metricsPlugin`: `GET /metrics` in the Prometheus text format (see `src/telemetry/metrics.ts` for
 * what is measured). When tokens are configured it needs a read or admin token, like the dashboard:
 * give Prometheus one with `authorization: { credentials: <token> }` in its scrape config.
 */
import type { FastifyPluginAsync, FastifySchema } from 'fastify';
import type { Errand } from '../errand.ts';
import type { HttpAuthOptions } from '../web/auth.ts';
import { TokenAuth } from '../web/auth.ts';
import { httpErrorHandler } from '../web/errors.ts';
import { createMetrics, type ErrandMetrics } from '../telemetry/metrics.ts';

export interface MetricsRouteOptions {
  errand: Errand;
  auth?: HttpAuthOptions;
  /** Metrics made elsewhere with `createMetrics(errand)`; default: made here. */
  metrics?: ErrandMetrics;
  /** Default `/metrics`. */
  path?: string;
}

export const metricsPlugin: FastifyPluginAsync<MetricsRouteOptions> = async (fastify, options) => {
  const { errand } = options;
  if (!errand || typeof errand.broker !== 'function') throw new TypeError('metricsPlugin: options.errand must be an Errand app');
  const auth = new TokenAuth(options.auth);
  const metrics = options.metrics ?? createMetrics(errand);
  fastify.setErrorHandler(httpErrorHandler);
  fastify.get(
    options.path ?? '/metrics',
    { onRequest: auth.hook('read'), schema: { hide: true } as FastifySchema },
    async (_request, reply) => {
      let text: string;
      try {
        text = await metrics.render();
      } catch (err) {
        // A gauge read from the broker failed: say so rather than serve partial figures as if complete.
        reply.log.warn({ err }, 'metrics: collecting from the broker failed');
        return reply.code(503).header('retry-after', '5').send({ detail: 'The task broker is unavailable; metrics cannot be collected' });
      }
      return reply.header('cache-control', 'no-store').type(metrics.contentType).send(text);
    },
  );
};
