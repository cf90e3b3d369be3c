// The dashboard outside Fastify (src/dashboard/handler.ts): mounted in an Express app under
// /admin/queues (after express.json(), which reads bodies first) and in a plain node:http server
// at /dashboard. The JSON API, the actions, the live stream, auth, and other routes left alone;
// then each in Debian's chromium: the page loads, shows the queues, navigates, and a screenshot is
// taken (test-results/dashboard/mount-<server>-*.png).
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import express from 'express';
import type { Browser, Page } from 'playwright-core';
import { z } from 'zod';
import { createDashboardHandler, type DashboardHandler } from '../../src/dashboard/index.ts';
import { createErrand, type Errand, type RunHandle, type Worker } from '../../src/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { tempDir, waitFor } from '../helpers.ts';
import { browserUnavailable, ensureDashboardBuilt, launchChromium, SCREENSHOTS } from './helpers.ts';

const unavailable = browserUnavailable();
const ADMIN = 'admin-token-for-the-mount-test';

interface Mounted {
  name: 'express' | 'node-http';
  base: string;
  url: string;
  handler: DashboardHandler;
  server: Server;
}

function listen(server: Server): Promise<string> {
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)),
  );
}

let errand: Errand;
let worker: Worker;
let failed: RunHandle;
const mounts: Mounted[] = [];
let secured: Mounted;

before(async () => {
  ensureDashboardBuilt();
  errand = createErrand({ broker: `sqlite:${join(tempDir('errand-mount'), 'errand.db')}`, logger: quietLogger });
  const control = { failing: true };
  const email = errand.task('send_welcome_email', { input: z.object({ to: z.string() }), queue: 'emails' }, ({ to }) => ({ sent: to }));
  const report = errand.task('build_report', { input: z.object({ month: z.string() }), queue: 'reports', retries: 0 }, ({ month }) => {
    if (control.failing) throw new TypeError(`no sales data for ${month}`);
    return { rows: 42 };
  });
  worker = errand.worker({ concurrency: 4 });
  await worker.start();
  for (const h of await email.enqueueMany([1, 2, 3].map((i) => ({ input: { to: `user${i}@example.com` } }))))
    await h.result({ timeout: 20_000 });
  failed = await report.enqueue({ month: '2026-11' });
  await assert.rejects(failed.result({ timeout: 20_000 }));
  control.failing = false;
  await email.enqueue({ to: 'later@example.com' }, { delay: 3_600_000 });

  // Express: other routes, a JSON body parser that runs first, the dashboard under /admin/queues.
  const app = express();
  app.use(express.json());
  app.get('/hello', (_req, res) => {
    res.json({ hello: 'world' });
  });
  const expressDash = createDashboardHandler({ errand, basePath: '/admin/queues', streamIntervalMs: 300 });
  app.use('/admin/queues', expressDash);
  const expressServer = createServer(app);
  mounts.push({ name: 'express', base: '/admin/queues', url: await listen(expressServer), handler: expressDash, server: expressServer });

  // node:http: the handler first, the app's own 404 as its `next`.
  const httpDash = createDashboardHandler({ errand, streamIntervalMs: 300 });
  const httpServer = createServer((req, res) =>
    httpDash(req, res, () => {
      res.statusCode = 404;
      res.end('not the dashboard');
    }),
  );
  mounts.push({ name: 'node-http', base: '/dashboard', url: await listen(httpServer), handler: httpDash, server: httpServer });

  const securedDash = createDashboardHandler({ errand, auth: { admin: [ADMIN] } });
  const securedServer = createServer((req, res) => securedDash(req, res));
  secured = { name: 'node-http', base: '/dashboard', url: await listen(securedServer), handler: securedDash, server: securedServer };
});

after(async () => {
  await worker?.stop({ graceMs: 1000 });
  for (const m of [...mounts, secured].filter(Boolean)) {
    m.server.closeAllConnections();
    await new Promise((r) => m.server.close(r));
    await m.handler.close();
  }
  await errand?.close();
});

describe('dashboard handler: the JSON API and the page, outside Fastify', () => {
  test('serves the page with its assets under the base path, and the security headers', async () => {
    for (const m of mounts) {
      const res = await fetch(`${m.url}${m.base}/`);
      assert.equal(res.status, 200, m.name);
      assert.match(res.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
      const html = await res.text();
      assert.ok(html.includes(`<meta name="errand-base" content="${m.base}"`), `${m.name}: the base path is in the page`);
      const scripts = [...html.matchAll(/src="([^"]+\.js)"/g)].map((x) => x[1]!);
      assert.equal(scripts.length, 1);
      assert.ok(scripts[0]!.startsWith(`${m.base}/assets/`), `${m.name}: ${scripts[0]}`);
      const js = await fetch(`${m.url}${scripts[0]}`);
      assert.equal(js.status, 200);
      assert.match(js.headers.get('content-type') ?? '', /javascript/);
      // A page of the single-page app (a deep link) is the same document.
      assert.equal((await fetch(`${m.url}${m.base}/runs/${failed.id}`)).status, 200);
    }
  });

  test('answers the JSON API with the queues', async () => {
    for (const m of mounts) {
      const res = await fetch(`${m.url}${m.base}/api/overview`);
      assert.equal(res.status, 200, m.name);
      const body = (await res.json()) as { queues: { name: string; counts: Record<string, number> }[] };
      const emails = body.queues.find((q) => q.name === 'emails');
      assert.equal(emails?.counts.succeeded, 3);
      assert.equal(emails?.counts.scheduled, 1);
      const unknown = await fetch(`${m.url}${m.base}/api/nothing`);
      assert.equal(unknown.status, 404);
      assert.match(((await unknown.json()) as { detail: string }).detail, /No dashboard API route/);
    }
  });

  test('leaves other routes to the app', async () => {
    const [ex, http] = mounts as [Mounted, Mounted];
    assert.deepEqual(await (await fetch(`${ex.url}/hello`)).json(), { hello: 'world' });
    assert.equal((await fetch(`${ex.url}/dashboard/`)).status, 404, 'Express: not mounted there');
    const other = await fetch(`${http.url}/users`);
    assert.equal(other.status, 404);
    assert.equal(await other.text(), 'not the dashboard');
    assert.equal((await fetch(`${http.url}/dashboardx`)).status, 404, 'a path that merely starts like the base path');
  });

  test('acts, with the body read by express.json() first or by the dashboard itself', async () => {
    const [ex, http] = mounts as [Mounted, Mounted];
    const post = (m: Mounted, path: string, body: string, type = 'application/json') =>
      fetch(`${m.url}${m.base}/api${path}`, { method: 'POST', headers: { 'content-type': type }, body });
    const retried = await post(ex, `/runs/${failed.id}/retry`, '{}');
    assert.equal(retried.status, 200, await retried.clone().text());
    assert.deepEqual(await retried.json(), { id: failed.id, outcome: 'queued' });
    assert.deepEqual(await failed.result({ timeout: 20_000 }), { rows: 42 });
    const bad = await post(ex, '/queues/emails/purge', '{"confirm": "other"}');
    assert.equal(bad.status, 400, 'the parsed body reached the route');
    assert.match(((await bad.json()) as { detail: string }).detail, /confirm with the queue's name/);
    assert.equal((await post(http, '/queues/reports/pause', '{}')).status, 200);
    assert.equal((await post(http, '/queues/reports/resume', '{}')).status, 200);
    assert.equal((await post(http, '/queues/reports/pause', 'x=1', 'application/x-www-form-urlencoded')).status, 415);
    // JSON in another charset than UTF-8: 415 naming it, where the dashboard reads the body; a body
    // express.json() decoded (it reads UTF-16) is handed over as UTF-8 and taken.
    const latin1 = await post(http, '/queues/reports/pause', '{}', 'application/json; charset=latin1');
    assert.equal(latin1.status, 415);
    assert.match(((await latin1.json()) as { detail: string }).detail, /^Unsupported charset "latin1": JSON bodies must be UTF-8/);
    const utf16 = await fetch(`${ex.url}${ex.base}/api/queues/reports/pause`, {
      method: 'POST',
      headers: { 'content-type': 'application/json; charset=utf-16le' },
      body: Buffer.from('{}', 'utf16le'),
    });
    assert.equal(utf16.status, 200, await utf16.clone().text());
    assert.equal((await post(ex, '/queues/reports/resume', '{}', 'application/json; charset=UTF-8')).status, 200);
  });

  test('streams the live overview', async () => {
    for (const m of mounts) {
      const controller = new AbortController();
      const res = await fetch(`${m.url}${m.base}/api/stream`, { signal: controller.signal });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
      const reader = res.body!.getReader();
      let text = '';
      while (!text.includes('event: overview')) text += new TextDecoder().decode((await reader.read()).value);
      controller.abort();
    }
  });

  test('checks tokens when auth is configured', async () => {
    assert.equal((await fetch(`${secured.url}/dashboard/api/overview`)).status, 401);
    const ok = await fetch(`${secured.url}/dashboard/api/overview`, { headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(ok.status, 200);
    assert.equal((await fetch(`${secured.url}/elsewhere`)).status, 404, 'without next, other paths get a 404');
  });

  test('refuses a bad base path, or an app and a broker together', () => {
    for (const basePath of ['admin', '/admin/', '/', '/a b', '/../x'])
      assert.throws(() => createDashboardHandler({ errand, basePath }), /basePath must be a path such as/, basePath);
    assert.throws(() => createDashboardHandler({ errand, broker: 'sqlite::memory:' }), /errand or broker, not both/);
  });

  test('opens a broker from a URL when given no app, and closes it', async () => {
    const dash = createDashboardHandler({ broker: 'sqlite::memory:', logger: quietLogger });
    const server = createServer((req, res) => dash(req, res));
    const url = await listen(server);
    const res = await fetch(`${url}/dashboard/api/session`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { authenticated: true, auth: false, scope: 'admin', tasks: [], broker: 'sqlite' });
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await dash.close();
  });
});

describe('dashboard handler in chromium', { skip: unavailable ?? false }, () => {
  let browser: Browser;
  before(async () => {
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
  });

  for (const name of ['express', 'node-http'] as const) {
    test(`${name}: the page loads, shows the queues, navigates under its base path`, async () => {
      const m = mounts.find((x) => x.name === name)!;
      const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
      const page: Page = await context.newPage();
      const problems: string[] = [];
      page.on('console', (msg) => {
        if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
      });
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      const text = async (selector: string) => ((await page.locator(selector).first().textContent()) ?? '').trim();
      try {
        await page.goto(`${m.url}${m.base}/`);
        await waitFor(async () => /^live/.test(await text('[data-testid="live"]')), { timeoutMs: 15_000, message: 'the stream is live' });
        await waitFor(async () => (await text('tr[data-queue="emails"] td[data-state="succeeded"]')) === '3', {
          timeoutMs: 15_000,
          message: 'emails shows 3 succeeded',
        });
        assert.equal(await text('tr[data-queue="emails"] td[data-state="scheduled"]'), '1');
        assert.equal(await page.locator('tr[data-queue="reports"]').count(), 1);
        await page.screenshot({ path: join(SCREENSHOTS, `mount-${name}-overview.png`), fullPage: true });

        await page.click(`nav a[href="${m.base}/runs"]`);
        await page.locator('tr[data-run]').first().waitFor({ timeout: 15_000 });
        assert.equal(new URL(page.url()).pathname, `${m.base}/runs`);
        assert.ok((await page.locator('tr[data-run]').count()) >= 5);
        await page.click(`tr[data-run="${failed.id}"] td.col-id a`);
        await waitFor(async () => (await page.locator('.run-body').textContent())?.includes('build_report'), {
          timeoutMs: 15_000,
          message: 'the run page shows the run',
        });
        assert.equal(new URL(page.url()).pathname, `${m.base}/runs/${failed.id}`);
        await page.screenshot({ path: join(SCREENSHOTS, `mount-${name}-run.png`), fullPage: true });
        assert.deepEqual(problems, []);
      } finally {
        await context.close();
      }
    });
  }
});
