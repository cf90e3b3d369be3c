// `npm run dev:dashboard`: Vite serves the UI's modules itself and forwards only the JSON API
// (/dashboard/api/...) to the running server. The UI has a module named /dashboard/api.ts: a
// proxy prefix that also matched it sent it to the backend, which answered HTML, and the page
// stayed blank ("Failed to load module script").
import assert from 'node:assert/strict';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createServer as createVite, type ViteDevServer } from 'vite';

const CONFIG = fileURLToPath(new URL('../../src/dashboard/vite.config.ts', import.meta.url));

describe('npm run dev:dashboard (Vite dev server)', () => {
  const seen: string[] = [];
  // The backend: JSON under /dashboard/api/, HTML anywhere else (as the real server's UI fallback).
  const backend = createHttpServer((req, res) => {
    seen.push(req.url ?? '');
    if (req.url?.startsWith('/dashboard/api/')) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ from: 'backend', url: req.url }));
    } else res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><p>backend page</p>');
  });
  let vite: ViteDevServer;
  let base: string;
  const previous = process.env.ERRAND_DASHBOARD_API;

  before(async () => {
    await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
    process.env.ERRAND_DASHBOARD_API = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`;
    vite = await createVite({
      configFile: CONFIG,
      server: { port: 0, host: '127.0.0.1', strictPort: false, hmr: false },
      logLevel: 'silent',
    });
    await vite.listen();
    const address = vite.httpServer!.address() as AddressInfo;
    base = `http://127.0.0.1:${address.port}`;
  });
  after(async () => {
    await vite?.close();
    await new Promise<void>((resolve) => backend.close(() => resolve()));
    if (previous === undefined) delete process.env.ERRAND_DASHBOARD_API;
    else process.env.ERRAND_DASHBOARD_API = previous;
  });

  it('serves the UI module /dashboard/api.ts itself, as JavaScript', async () => {
    const res = await fetch(`${base}/dashboard/api.ts`);
    assert.equal(res.status, 200);
    assert.match(String(res.headers.get('content-type')), /javascript/);
    assert.match(await res.text(), /export class ApiError/, 'the module itself, compiled by Vite');
    assert.ok(!seen.some((u) => u.startsWith('/dashboard/api.ts')), `the backend was asked for ${seen.join(', ')}`);
  });

  it('forwards the JSON API under /dashboard/api/ to the server', async () => {
    const res = await fetch(`${base}/dashboard/api/overview`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { from: 'backend', url: '/dashboard/api/overview' });
  });
});
