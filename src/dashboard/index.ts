/**
 * Errand's dashboard (`import { dashboardPlugin } from 'errand/dashboard'`): the web UI and JSON API
 * at /dashboard, `/metrics` as a plugin, a server with just those (`errand dashboard`), and a request
 * handler for Express or `node:http` (`createDashboardHandler`).
 * See docs/dashboard.md.
 */
export type * from './api-types.ts';
export { createDashboardHandler, type DashboardHandler, type DashboardHandlerOptions } from './handler.ts';
export { type MetricsRouteOptions, metricsPlugin } from './metrics-route.ts';
export {
  CONTENT_SECURITY_POLICY,
  checkBasePath,
  DASHBOARD_PATH,
  type DashboardOptions,
  dashboardPlugin,
  SECURITY_HEADERS,
} from './plugin.ts';
export { createDashboardServer, type DashboardServerOptions } from './server.ts';
export { percentiles, quantile } from './stats.ts';
