/**
 * Errand's dashboard (`import { dashboardPlugin } from 'errand/dashboard'`): the web UI and JSON API
 * at /dashboard, `/metrics` as a plugin, and a server with just those (`errand dashboard`).
 * See docs/dashboard.md.
 */
export type * from './api-types.ts';
export { type MetricsRouteOptions, metricsPlugin } from './metrics-route.ts';
export { CONTENT_SECURITY_POLICY, DASHBOARD_PATH, type DashboardOptions, dashboardPlugin, SECURITY_HEADERS } from './plugin.ts';
export { createDashboardServer, type DashboardServerOptions } from './server.ts';
export { percentiles, quantile } from './stats.ts';
