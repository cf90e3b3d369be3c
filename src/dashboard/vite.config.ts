// Builds the dashboard's front end (src/dashboard/ui) into src/dashboard/dist, which the Fastify
// plugin serves at /dashboard. `npm run build:dashboard` (run by `npm ci` through `prepare`);
// `npm run dev:dashboard` serves the UI with live reload and forwards the API to a running server
// (ERRAND_DASHBOARD_API, default http://127.0.0.1:8080).
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

export default defineConfig({
  root: fileURLToPath(new URL('./ui', import.meta.url)),
  base: '/dashboard/',
  publicDir: false,
  logLevel: 'warn',
  build: {
    outDir: fileURLToPath(new URL('./dist', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
    // No inline data: URLs and no inline scripts: everything is a file the CSP allows as 'self'.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
  },
  server: {
    // A pattern, not the prefix '/dashboard/api': that would also take the UI's own module
    // /dashboard/api.ts to the backend (which answers HTML) and leave the page blank.
    proxy: { '^/dashboard/api(/|$)': process.env.ERRAND_DASHBOARD_API ?? 'http://127.0.0.1:8080' },
  },
});
