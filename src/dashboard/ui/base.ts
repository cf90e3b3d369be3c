// Where the dashboard is mounted (`/dashboard` by default; `basePath` of the plugin or of
// createDashboardHandler): the server writes it into index.html's <meta name="errand-base">.
const meta = document.querySelector<HTMLMetaElement>('meta[name="errand-base"]')?.content ?? '';
export const ROOT = /^(\/[A-Za-z0-9._~-]+)+$/.test(meta) ? meta : '/dashboard';
