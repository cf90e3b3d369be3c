// The dashboard in a real browser (Debian's chromium driven by playwright-core) against a real
// broker: runs seeded in every state, pages checked for what they show, actions clicked, live
// updates seen without a reload, and a screenshot of each page in test-results/dashboard/.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { z } from 'zod';
import type { BrokerInspector } from '../../src/broker/types.ts';
import type { Errand, RunHandle, Worker } from '../../src/index.ts';
import { brokerSetup } from '../fixtures/brokers.ts';
import { requires } from '../fixtures/prereq.ts';
import { waitFor } from '../helpers.ts';
import {
  browserUnavailable,
  dialogProblems,
  ensureDashboardBuilt,
  launchChromium,
  layoutProblems,
  SCREENSHOTS,
  type Served,
  serveDashboard,
} from './helpers.ts';

const unavailable = requires('chromium (dashboard browser tests)', browserUnavailable());

/** Runs in the `firehose` queue: the lists must stay fast and the layout intact. */
const BIG = 100_000;
const LONG_TASK = 'generate_thumbnail_for_every_uploaded_image_in_the_media_library_and_store_all_variants_v2';
const READ_TOKEN = 'read-token-for-the-dashboard-test';
const ADMIN_TOKEN = 'admin-token-for-the-dashboard-test';

interface Seeded {
  errand: Errand;
  worker: Worker;
  control: { failing: boolean };
  releaseSlow: () => void;
  failed: RunHandle;
  active: RunHandle;
  scheduled: RunHandle;
  cancelled: RunHandle;
  long: RunHandle;
}

/** Runs in every state: succeeded (emails), failed after a retry (reports), active with progress, scheduled, queued, cancelled; 120 queued in `bulk` and 100,000 in `firehose`. */
async function seed(errand: Errand, started: (worker: Worker) => void): Promise<Seeded> {
  const control = { failing: true };
  let releaseSlow: () => void = () => {};
  const slowGate = new Promise<void>((r) => {
    releaseSlow = r;
  });
  const email = errand.task('send_welcome_email', { input: z.object({ to: z.string() }), queue: 'emails' }, async ({ to }) => ({
    sent: to,
  }));
  const report = errand.task(
    'build_report',
    { input: z.object({ month: z.string() }), queue: 'reports', retries: { maxAttempts: 2, base: 20, jitter: 0 } },
    async ({ month }) => {
      if (control.failing) throw new TypeError(`no sales data for ${month}`);
      return { rows: 42 };
    },
  );
  const resize = errand.task('resize_image', { input: z.object({ file: z.string() }), queue: 'reports' }, async (_input, ctx) => {
    ctx.progress({ done: 3, total: 10 });
    await Promise.race([slowGate, new Promise((r) => ctx.signal.addEventListener('abort', r, { once: true }))]);
    return { resized: true };
  });
  const thumb = errand.task(LONG_TASK, { input: z.object({ image: z.number() }), queue: 'backlog' }, async () => 'done');
  const importRow = errand.task('import_row', { input: z.object({ row: z.number() }), queue: 'bulk' }, async () => 'ok');

  await importRow.enqueueMany(Array.from({ length: 120 }, (_, row) => ({ input: { row } })));
  const firehose = errand.task('ingest_event', { input: z.object({ n: z.number() }), queue: 'firehose' }, async () => 'ok');
  for (let k = 0; k < BIG / 5000; k++) await firehose.enqueueMany(Array.from({ length: 5000 }, (_, i) => ({ input: { n: k * 5000 + i } })));
  const worker = errand.worker({ queues: ['emails', 'reports'], concurrency: 4, leaseMs: 5000 });
  started(worker);
  await worker.start();
  const emails = await email.enqueueMany(Array.from({ length: 5 }, (_, i) => ({ input: { to: `user${i}@example.com` } })));
  for (const h of emails) await h.result({ timeout: 20_000 });
  const failed = await report.enqueue({ month: '2026-10' });
  await assert.rejects(failed.result({ timeout: 20_000 }));
  const active = await resize.enqueue({ file: 'cat.png' });
  await waitFor(async () => (await active.status()) === 'active', { timeoutMs: 20_000, message: 'resize_image run active' });
  await waitFor(async () => (await errand.getRun(active.id)).progress !== undefined, { timeoutMs: 20_000, message: 'progress stored' });
  const scheduled = await email.enqueue({ to: 'later@example.com' }, { delay: 3_600_000 });
  const long = await thumb.enqueue({ image: 1 });
  await thumb.enqueue({ image: 2 });
  const cancelled = await thumb.enqueue({ image: 3 });
  await cancelled.cancel();
  return { errand, worker, control, releaseSlow, failed, active, scheduled, cancelled, long };
}

for (const kind of ['sqlite', 'redis'] as const) {
  describe(`dashboard in chromium (${kind} broker)`, { skip: unavailable }, () => {
    let s: Seeded;
    // Set as soon as they exist, so that a failed set-up still closes them (else the process hangs).
    let errand: Errand | undefined;
    let worker: Worker | undefined;
    const setup = brokerSetup(kind, 'errand-dashboard');
    let served: Served;
    let securedServer: Served;
    let browser: Browser;
    let context: BrowserContext;
    let page: Page;
    const problems: string[] = [];
    const shot = (name: string) => page.screenshot({ path: join(SCREENSHOTS, `${kind}-${name}.png`), fullPage: true });
    const text = async (selector: string) => ((await page.locator(selector).first().textContent()) ?? '').trim();
    const untilText = (selector: string, want: string | RegExp, message: string) =>
      waitFor(
        async () => {
          const t = await text(selector);
          return typeof want === 'string' ? t === want : want.test(t);
        },
        { timeoutMs: 15_000, intervalMs: 50, message },
      );

    before(async () => {
      ensureDashboardBuilt();
      errand = setup.app();
      s = await seed(errand, (w) => {
        worker = w;
      });
      served = await serveDashboard({ errand, streamIntervalMs: 400 });
      securedServer = await serveDashboard({ errand, streamIntervalMs: 400, auth: { read: [READ_TOKEN], admin: [ADMIN_TOKEN] } });
      browser = await launchChromium();
      context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
      page = await context.newPage();
      page.on('console', (m) => {
        if (m.type() === 'error') problems.push(`console: ${m.text()}`);
      });
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    });

    after(async () => {
      await context?.close();
      await browser?.close();
      s?.releaseSlow();
      await worker?.stop({ graceMs: 1000 });
      await served?.close();
      await securedServer?.close();
      await errand?.close();
      await setup.cleanup();
    });

    test('overview: every queue with its counts, paused flag, charts; no console error or CSP violation', async () => {
      await page.goto(`${served.url}/dashboard/`);
      await untilText('[data-testid="live"]', /^live/, 'the event stream is live');
      await untilText('tr[data-queue="backlog"] td[data-state="queued"]', '2', 'backlog shows 2 queued');
      assert.equal(await text('tr[data-queue="backlog"] td[data-state="cancelled"]'), '1');
      assert.equal(await text('tr[data-queue="emails"] td[data-state="succeeded"]'), '5');
      assert.equal(await text('tr[data-queue="emails"] td[data-state="scheduled"]'), '1');
      assert.equal(await text('tr[data-queue="reports"] td[data-state="failed"]'), '1');
      assert.equal(await text('tr[data-queue="reports"] td[data-state="active"]'), '1');
      assert.equal(await text('tr[data-queue="bulk"] td[data-state="queued"]'), '120');
      assert.equal(await text('tr[data-queue="firehose"] td[data-state="queued"]'), '100,000');
      // Latency percentiles come from the broker's histograms once runs have finished.
      assert.match(await text('tr[data-queue="emails"] td:nth-child(12)'), /ms|s/);
      assert.equal(await text('tr[data-queue="emails"] td[data-state="waiting"]'), '0', 'a waiting column, empty here');
      assert.equal((await page.locator('.chart canvas').count()) >= 2, true, 'two uPlot charts drawn');
      const clippedCards = await page
        .locator('.stat-value')
        .evaluateAll((els) => els.filter((e) => e.scrollWidth > e.clientWidth).map((e) => e.textContent));
      assert.deepEqual(clippedCards, [], 'every figure fits its card');
      assert.equal(await page.locator('.stat.state-queued').getAttribute('title'), '100,122 queued runs');
      await shot('overview');
      assert.deepEqual(problems, []);
    });

    test('a new run appears live, without a reload', async () => {
      await page.evaluate(() => {
        (window as unknown as { marker: number }).marker = 42;
      });
      const thumb = s.errand.tasks.get(LONG_TASK)!;
      await thumb.enqueue({ image: 4 });
      await untilText('tr[data-queue="backlog"] td[data-state="queued"]', '3', 'the new queued run is counted live');
      assert.equal(await page.evaluate(() => (window as unknown as { marker?: number }).marker), 42, 'the page did not reload');
      // The first page of the runs list is live too.
      await page.click('nav a[href="/dashboard/runs"]');
      await page.locator('tr[data-run]').first().waitFor();
      const fresh = await thumb.enqueue({ image: 5 });
      await page.locator(`tr[data-run="${fresh.id}"]`).waitFor({ timeout: 15_000 });
      assert.equal(await page.evaluate(() => (window as unknown as { marker?: number }).marker), 42, 'still no reload');
    });

    test('runs: newest first, long names truncate with a tooltip, filters and cursor pagination', async () => {
      await page.goto(`${served.url}/dashboard/runs`);
      await page.locator('tr[data-run]').first().waitFor();
      const cell = page.locator(`tr[data-run="${s.long.id}"] td.col-task .trunc`);
      assert.equal(await cell.getAttribute('title'), LONG_TASK);
      const clipped = await cell.evaluate((el) => el.scrollWidth > el.clientWidth);
      assert.ok(clipped, 'the long task name is cut by the column, not widening the table');
      const tableFits = await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);
      assert.ok(tableFits, 'no horizontal scroll on a 1440 px wide screen');
      await shot('runs');

      await page.selectOption('select[name="state"]', 'failed');
      await waitFor(
        async () => (await page.locator('tr[data-run]').count()) === 1 && (await page.locator('tr[data-state="failed"]').count()) === 1,
        {
          timeoutMs: 10_000,
          message: 'only the failed run is listed',
        },
      );
      assert.match(page.url(), /state=failed/);
      assert.match(await text('tr[data-state="failed"] td.col-error'), /TypeError: no sales data for 2026-10/);

      await page.selectOption('select[name="state"]', '');
      await page.selectOption('select[name="queue"]', 'bulk');
      await untilText('[data-testid="range"]', '1–50 of 120', 'first page of bulk');
      const first = await page.locator('tr[data-run]').first().getAttribute('data-run');
      await page.click('button[data-action="older"]');
      await untilText('[data-testid="range"]', '51–100 of 120', 'second page');
      await page.click('button[data-action="older"]');
      await untilText('[data-testid="range"]', '101–120 of 120', 'last page');
      assert.equal(await page.locator('button[data-action="older"]').isDisabled(), true);
      // Oldest last: the first run enqueued in bulk is the last row of the last page.
      const rows = await page.locator('tr[data-run]').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-run')!));
      assert.deepEqual([...rows].sort().reverse(), rows, 'newest first within the page');
      await page.click('button[data-action="newer"]');
      await page.click('button[data-action="newer"]');
      await untilText('[data-testid="range"]', '1–50 of 120', 'back to the first page');
      assert.equal(await page.locator('tr[data-run]').first().getAttribute('data-run'), first);

      await page.selectOption('select[name="queue"]', 'firehose');
      await untilText('[data-testid="range"]', '1–50 of 100,000', 'first page of 100,000 runs');
      await page.click('button[data-action="older"]');
      await untilText('[data-testid="range"]', '51–100 of 100,000', 'second page of 100,000 runs');
      assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), 'no sideways scroll');
      await shot('runs-100k');

      await page.fill('input[name="id"]', s.scheduled.id);
      await page.click('button[data-action="search"]');
      await waitFor(
        async () =>
          (await page.locator('tr[data-run]').count()) === 1 && (await page.locator(`tr[data-run="${s.scheduled.id}"]`).count()) === 1,
        {
          timeoutMs: 10_000,
          message: 'search by id finds the run',
        },
      );
    });

    test('run page: input, error with stack, attempts with worker and duration, progress, timeline', async () => {
      await page.goto(`${served.url}/dashboard/runs/${s.failed.id}`);
      await page.locator('.run-error').waitFor();
      assert.match(await text('.run-error-head'), /TypeError: no sales data for 2026-10/);
      assert.match(await text('.run-error .stack'), /TypeError: no sales data[\s\S]*at /);
      assert.equal(await page.locator('table.attempts tbody tr').count(), 2);
      assert.equal(await text('table.attempts tr[data-attempt="1"] .badge'), 'retry');
      assert.equal(await text('table.attempts tr[data-attempt="2"] .badge'), 'failed');
      assert.match(
        await text('table.attempts tr[data-attempt="1"] .col-worker'),
        new RegExp(s.worker.id.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')),
      );
      assert.match(await text('table.attempts tr[data-attempt="1"] td:nth-child(4)'), /\d+(\.\d+)? (ms|s)/);
      assert.match(await text('section.card pre.code'), /2026-10/, 'input shown');
      const steps = await page.locator('.timeline li .tl-label').allTextContents();
      assert.deepEqual(steps.slice(0, 5), [
        'Enqueued on reports',
        'Attempt 1 started',
        'Attempt 1 failed; retry scheduled',
        'Attempt 2 started',
        'Attempt 2 failed',
      ]);
      assert.ok(steps.includes('Failed for good (dead-letter)'));
      await shot('run-failed');

      await page.goto(`${served.url}/dashboard/runs/${s.active.id}`);
      await page.locator('.progress').waitFor();
      assert.equal(await page.locator('.progress').getAttribute('aria-valuenow'), '30');
      await shot('run-active');
    });

    test('retry a failed run by clicking, and see it succeed', async () => {
      s.control.failing = false;
      await page.goto(`${served.url}/dashboard/runs/${s.failed.id}`);
      await page.click('button[data-action="retry"]');
      await untilText('.run-title .badge', 'succeeded', 'the retried run succeeds, shown live');
      assert.match(await text('section.card pre.code'), /"rows": 42/, 'the result is shown');
      await shot('run-retried');
    });

    test('cancel a scheduled run from the runs list, with a confirmation', async () => {
      await page.goto(`${served.url}/dashboard/runs?id=${s.scheduled.id}`);
      await page.click(`tr[data-run="${s.scheduled.id}"] button[data-action="cancel"]`);
      await page.locator('dialog[open]').waitFor();
      assert.deepEqual(
        (await page.locator('dialog[open] .dialog-actions button').allTextContents()).map((t) => t.trim()),
        ['Keep run', 'Cancel run'],
        'the button that leaves the run alone does not say Cancel',
      );
      await page.click('dialog[open] button[type="submit"]');
      await untilText(`tr[data-run="${s.scheduled.id}"] .badge`, 'cancelled', 'the run shows as cancelled');
      assert.equal(await s.scheduled.status(), 'cancelled');
    });

    test('workers: id, host, pid, queues, concurrency, active, heartbeat; a silent worker is lost', async () => {
      const broker = (await s.errand.broker()) as unknown as BrokerInspector;
      const now = Date.now();
      await broker.heartbeat(
        {
          id: 'gone-host:4242:dead01',
          host: 'gone-host',
          pid: 4242,
          queues: ['emails'],
          concurrency: 2,
          active: 0,
          startedAt: now - 600_000,
        },
        15_000,
        now - 120_000,
      );
      await page.click('nav a[href="/dashboard/workers"]');
      const row = page.locator(`tr[data-worker="${s.worker.id}"]`);
      await row.waitFor();
      assert.match((await row.textContent()) ?? '', /alive/);
      assert.match((await row.textContent()) ?? '', /emails, reports/);
      assert.match((await row.textContent()) ?? '', /\/ 4/);
      assert.match((await row.textContent()) ?? '', new RegExp(String(process.pid)));
      const ghost = page.locator('tr[data-worker="gone-host:4242:dead01"]');
      await ghost.waitFor();
      assert.match((await ghost.textContent()) ?? '', /lost/);
      await shot('workers');
    });

    test('pause and resume a queue; purge it after typing its name', async () => {
      await page.click('nav a[href="/dashboard/"]');
      await page.click('tr[data-queue="emails"] button[data-action="pause"]');
      await page.locator('tr[data-queue="emails"] .badge.paused').waitFor();
      assert.deepEqual(await ((await s.errand.broker()) as unknown as BrokerInspector).pausedQueues(), ['emails']);
      await page.click('tr[data-queue="emails"] button[data-action="resume"]');
      await page.locator('tr[data-queue="emails"] .badge.paused').waitFor({ state: 'detached' });

      await page.click('tr[data-queue="backlog"] button[data-action="purge"]');
      const dialog = page.locator('dialog[open]');
      await dialog.waitFor();
      const confirm = dialog.locator('button[type="submit"]');
      assert.equal(await confirm.isDisabled(), true, 'purge waits for the queue name');
      await dialog.locator('input').fill('backlog');
      await shot('purge-dialog');
      await confirm.click();
      await untilText('tr[data-queue="backlog"] td[data-state="queued"]', '0', 'backlog purged');
      assert.equal(await text('tr[data-queue="backlog"] td[data-state="cancelled"]'), '1', 'finished runs stay');
      assert.deepEqual(problems, []);
    });

    test('with tokens: a sign-in form; a read token sees but cannot act; an admin token acts; no error in the console', async () => {
      const ctx2 = await browser.newContext({ viewport: { width: 1440, height: 900 } });
      const p2 = await ctx2.newPage();
      const errors: string[] = [];
      p2.on('pageerror', (e) => errors.push(e.message));
      // Signing in is the normal way in: no 401 (nor anything else) in red in the console, a wrong token included.
      p2.on('console', (m) => {
        if (m.type() === 'error' || m.type() === 'warning') errors.push(`console ${m.type()}: ${m.text()}`);
      });
      try {
        await p2.goto(`${securedServer.url}/dashboard/`);
        await p2.locator('form.login').waitFor();
        await p2.screenshot({ path: join(SCREENSHOTS, `${kind}-login.png`) });
        await p2.fill('input[name="token"]', 'wrong-token');
        await p2.click('form.login button[type="submit"]');
        await p2.locator('form.login .form-error', { hasText: 'not accepted' }).waitFor();

        await p2.fill('input[name="token"]', READ_TOKEN);
        await p2.click('form.login button[type="submit"]');
        await p2.locator('tr[data-queue="emails"]').waitFor();
        await p2.locator('.badge.readonly').waitFor();
        assert.equal(await p2.locator('button[data-action]').count(), 0, 'no action for a read token');
        await p2.locator('[data-testid="live"]', { hasText: 'live' }).waitFor({ timeout: 15_000 });
        await p2.screenshot({ path: join(SCREENSHOTS, `${kind}-read-only.png`) });

        await p2.click('button:has-text("Sign out")');
        await p2.locator('form.login').waitFor();
        await p2.fill('input[name="token"]', ADMIN_TOKEN);
        await p2.click('form.login button[type="submit"]');
        await p2.locator('tr[data-queue="emails"] button[data-action="pause"]').waitFor();
        assert.equal(await p2.locator('.badge.readonly').count(), 0);
      } finally {
        await ctx2.close();
      }
      assert.deepEqual(errors, []);
    });

    test('at 1280 x 800 and 390 x 844: no page scrolls sideways, the top bar holds its links, at 1280 every action is in reach, and every dialog keeps its buttons in sight', async () => {
      const broker = (await s.errand.broker()) as unknown as BrokerInspector;
      // A schedule to list, edit, backfill and delete (it fires on 1 January only).
      // Its spec and next fire time are long: they once pushed the row's buttons out of the table.
      await s.errand.upsertSchedule('yearly-digest', s.errand.tasks.get('send_welcome_email')!, {
        cron: '0 3 1 1 *',
        timezone: 'America/Argentina/Buenos_Aires',
        input: { to: 'team@example.com' },
      });
      const pages: [string, string][] = [
        ['overview', '/dashboard/'],
        ['runs', '/dashboard/runs'],
        ['run', `/dashboard/runs/${s.failed.id}`],
        ['workers', '/dashboard/workers'],
        ['schedules', '/dashboard/schedules'],
        ['flow', '/dashboard/flow'],
        ['missing', '/dashboard/nowhere'],
      ];
      for (const [width, height] of [
        [1280, 800],
        [390, 844],
      ] as const) {
        const ctx2 = await browser.newContext({ viewport: { width, height } });
        const p2 = await ctx2.newPage();
        try {
          for (const [name, path] of pages) {
            await p2.goto(`${served.url}${path}`);
            await p2.locator('[data-testid="live"]', { hasText: 'live' }).waitFor({ timeout: 15_000 });
            await waitFor(async () => (await p2.locator('main', { hasText: 'Loading…' }).count()) === 0, {
              timeoutMs: 15_000,
              message: `${name} loaded`,
            });
            // At 390 px a table may scroll within its card; at 1280 px every button is in reach.
            assert.deepEqual(await layoutProblems(p2, { actions: width >= 1280 }), [], `${name} at ${width} px`);
            const clippedCards = await p2
              .locator('.stat-value')
              .evaluateAll((els) => els.filter((e) => e.scrollWidth > e.clientWidth).map((e) => e.textContent));
            assert.deepEqual(clippedCards, [], `every figure fits its card at ${width} px`);
            if (name === 'overview' || name === 'runs')
              await p2.screenshot({ path: join(SCREENSHOTS, `${kind}-${name}-${width}.png`), fullPage: true });
          }
          // Every dialog: its buttons in sight, whatever the height of what it asks.
          const queued = (await broker.listRuns({ queue: 'bulk', limit: 1 })).runs[0]!.id;
          const schedule = 'tr[data-schedule="emails/yearly-digest"]';
          const dialogs: [string, string, string][] = [
            ['purge', '/dashboard/', 'tr[data-queue="bulk"] button[data-action="purge"]'],
            ['cancel-in-list', '/dashboard/runs?queue=bulk', `tr[data-run="${queued}"] button[data-action="cancel"]`],
            ['cancel-run', `/dashboard/runs/${queued}`, 'button[data-action="cancel"]'],
            ['new-schedule', '/dashboard/schedules', 'button[data-action="new"]'],
            ['edit-schedule', '/dashboard/schedules', `${schedule} button[data-action="edit"]`],
            ['backfill', '/dashboard/schedules', `${schedule} button[data-action="backfill"]`],
            ['delete-schedule', '/dashboard/schedules', `${schedule} button[data-action="delete"]`],
          ];
          for (const [name, path, opener] of dialogs) {
            await p2.goto(`${served.url}${path}`);
            await p2.locator(opener).click();
            await p2.locator('dialog[open]').waitFor();
            assert.deepEqual(await dialogProblems(p2), [], `the ${name} dialog at ${width} x ${height}`);
            await p2.screenshot({ path: join(SCREENSHOTS, `${kind}-dialog-${name}-${width}.png`) });
            await p2.keyboard.press('Escape');
            await p2.locator('dialog[open]').waitFor({ state: 'detached' });
          }
          // Signed in with a read token: the bar also holds the read-only badge and Sign out.
          await p2.goto(`${securedServer.url}/dashboard/`);
          await p2.fill('input[name="token"]', READ_TOKEN);
          await p2.click('form.login button[type="submit"]');
          await p2.locator('.badge.readonly').waitFor();
          await p2.locator('[data-testid="live"]', { hasText: 'live' }).waitFor({ timeout: 15_000 });
          assert.deepEqual(await layoutProblems(p2), [], `signed in (read-only) at ${width} px`);
          await p2.screenshot({ path: join(SCREENSHOTS, `${kind}-read-only-${width}.png`) });
        } finally {
          await ctx2.close();
        }
      }
    });
  });
}
