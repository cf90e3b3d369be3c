/**
 * The dashboard on its own: a Fastify server with the dashboard, its JSON API and `/metrics`, for a
 * broker whose tasks live elsewhere (`errand dashboard --broker URL`). `/` redirects to the dashboard.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import type { Errand } from '../errand.ts';
import type { HttpAuthOptions } from '../web/auth.ts';
import { metricsPlugin } from './metrics-route.ts';
import { DASHBOARD_PATH, type DashboardOptions, dashboardPlugin } from './plugin.ts';

export interface DashboardServerOptions extends Omit<DashboardOptions, 'errand' | 'auth'> {
  errand: Errand;
  auth?: HttpAuthOptions;
}

export async function createDashboardServer(options: DashboardServerOptions): Promise<FastifyInstance> {
  const { errand, auth, ...rest } = options;
  // No line per request. Through a LogController: Fastify 5.12 deprecates the top-level
  // `disableRequestLogging` option (warning FSTDEP023 on every start).
  const app = Fastify({
    loggerInstance: errand.logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
  });
  await app.register(dashboardPlugin, { errand, ...(auth && { auth }), ...rest });
  await app.register(metricsPlugin, { errand, ...(auth && { auth }) });
  app.get('/', async (_request, reply) => reply.redirect(`${DASHBOARD_PATH}/`));
  return app;
}
