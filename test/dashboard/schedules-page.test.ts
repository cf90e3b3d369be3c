// The Schedules page in chromium (src/dashboard/ui/pages/schedules.ts, schedule-form.ts): create a
// schedule with the form (a refusal shown in the form, which keeps what was typed), edit it,
// backfill a range, delete with a typed confirmation; a read token sees no actions. Screenshots in
// test-results/dashboard/.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { z } from 'zod';
import type { BrokerInspector } from '../../src/broker/types.ts';
import { createErrand } from '../../src/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { requires } from '../fixtures/prereq.ts';
import { tempDir, waitFor } from '../helpers.ts';
import { browserUnavailable, ensureDashboardBuilt, launchChromium, SCREENSHOTS, type Served, serveDashboard } from './helpers.ts';

const unavailable = requires('chromium (dashboard browser tests)', browserUnavailable());

describe('dashboard: the Schedules page in chromium', { skip: unavailable }, () => {
  const errand = createErrand({ broker: `sqlite:${join(tempDir('errand-dash-sched-ui'), 'e.db')}`, logger: quietLogger });
  errand.task('report', { input: z.object({ kind: z.string() }), queue: 'reports' }, async () => null);
  errand.task('digest', { input: z.object({}), queue: 'mail' }, async () => null);
  let served: Served;
  let secured: Served;
  let browser: Browser;
  let page: Page;
  const problems: string[] = [];
  const shot = (name: string) => page.screenshot({ path: join(SCREENSHOTS, `schedules-${name}.png`), fullPage: true });
  const dialog = () => page.locator('dialog[open]');
  const formError = async () => ((await dialog().locator('[data-form-error]').textContent()) ?? '').trim();

  before(async () => {
    ensureDashboardBuilt();
    served = await serveDashboard({ errand, streamIntervalMs: 400 });
    secured = await serveDashboard({ errand, streamIntervalMs: 400, auth: { read: ['read-t'], admin: ['admin-t'] } });
    browser = await launchChromium();
    page = await (await browser.newContext({ viewport: { width: 1280, height: 860 } })).newPage();
    page.on('console', (m) => {
      if (m.type() === 'error' && !/status of 400|status of 409/.test(m.text())) problems.push(`console: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  });
  after(async () => {
    await browser?.close();
    await served?.close();
    await secured?.close();
    await errand.close();
  });

  test('create with the form: a refusal is shown in place and nothing typed is lost; then saved and listed', async () => {
    await page.goto(`${served.url}/dashboard/schedules`);
    await page.locator('button[data-action="new"]').click();
    await dialog().locator('input[name="id"]').fill('weekly-report');
    await dialog().locator('select[name="task"]').selectOption('report');
    await dialog().locator('input[name="when"]').fill('0 6 * * 1');
    await dialog().locator('input[name="timezone"]').fill('Mars/Base');
    await dialog().locator('textarea[name="input"]').fill('{"kind": "weekly"}');
    await dialog().locator('select[name="overlap"]').selectOption('skip');
    await dialog().locator('button[type="submit"]').click();
    await waitFor(async () => /Mars\/Base/.test(await formError()), { timeoutMs: 10_000, message: 'the zone refused in the form' });
    await shot('form-refused');
    assert.equal(await dialog().locator('input[name="id"]').inputValue(), 'weekly-report', 'what was typed stays');
    // A browser-side check: the input must be JSON.
    await dialog().locator('input[name="timezone"]').fill('Europe/Paris');
    await dialog().locator('textarea[name="input"]').fill('{kind: weekly}');
    await dialog().locator('button[type="submit"]').click();
    await waitFor(async () => /Input: not JSON/.test(await formError()), { timeoutMs: 5000, message: 'input not JSON' });
    await dialog().locator('textarea[name="input"]').fill('{"kind": "weekly"}');
    await dialog().locator('button[type="submit"]').click();
    await waitFor(async () => (await dialog().count()) === 0, { timeoutMs: 10_000, message: 'the dialog closed once saved' });
    const row = page.locator('tr[data-schedule="reports/weekly-report"]');
    await waitFor(async () => (await row.count()) === 1, { timeoutMs: 10_000, message: 'the new schedule listed' });
    assert.match((await row.textContent()) ?? '', /cron 0 6 \* \* 1 Europe\/Paris/);
    const stored = await errand.getSchedule('weekly-report');
    assert.deepEqual(JSON.parse(stored!.spec), { cron: '0 6 * * 1', timezone: 'Europe/Paris' });
    assert.equal(stored!.input, '{"kind":"weekly"}');
    assert.equal(JSON.parse(stored!.options).overlap, 'skip');
    assert.match(((await page.locator('.page-head p').textContent()) ?? '').trim(), /^1 schedule\. /, 'one schedule, not "1 schedules"');
    await shot('list');
  });

  test('edit: the form opens with the stored definition; a change is saved', async () => {
    const row = page.locator('tr[data-schedule="reports/weekly-report"]');
    await row.locator('button[data-action="edit"]').click();
    assert.equal(await dialog().locator('input[name="id"]').isDisabled(), true);
    assert.equal(await dialog().locator('input[name="when"]').inputValue(), '0 6 * * 1');
    assert.equal(await dialog().locator('input[name="timezone"]').inputValue(), 'Europe/Paris');
    assert.deepEqual(JSON.parse(await dialog().locator('textarea[name="input"]').inputValue()), { kind: 'weekly' });
    assert.equal(await dialog().locator('select[name="overlap"]').inputValue(), 'skip');
    await shot('form-edit');
    await dialog().locator('select[name="kind"]').selectOption('every');
    await dialog().locator('input[name="when"]').fill('2h');
    await dialog().locator('input[name="timezone"]').fill('');
    await dialog().locator('button[type="submit"]').click();
    await waitFor(async () => /every 2h/.test((await row.textContent()) ?? ''), { timeoutMs: 10_000, message: 'the edit listed' });
    assert.deepEqual(JSON.parse((await errand.getSchedule('weekly-report'))!.spec), { every: 7_200_000 });
    // Opened again, the interval reads as it was given, not in ms.
    await row.locator('button[data-action="edit"]').click();
    assert.equal(await dialog().locator('input[name="when"]').inputValue(), '2h');
    await dialog().locator('button', { hasText: 'Cancel' }).click();
  });

  test('backfill a past range: the runs are created once; a reversed range is refused in ISO times; the notice shows above the next dialog', async () => {
    const row = page.locator('tr[data-schedule="reports/weekly-report"]');
    await row.locator('button[data-action="backfill"]').click();
    const to = new Date(Math.floor(Date.now() / 7_200_000) * 7_200_000);
    const from = new Date(to.getTime() - 3 * 7_200_000);
    await dialog().locator('input[name="from"]').fill(to.toISOString());
    await dialog().locator('input[name="to"]').fill(from.toISOString());
    await dialog().locator('button[type="submit"]').click();
    await waitFor(async () => /from < to/.test(await formError()), { timeoutMs: 10_000, message: 'the reversed range refused' });
    assert.match(
      await formError(),
      new RegExp(`got ${to.toISOString().replace(/\./g, '\\.')} \\.\\. ${from.toISOString().replace(/\./g, '\\.')}`),
    );
    assert.doesNotMatch(await formError(), /\d{13}/, 'no epoch milliseconds');
    await dialog().locator('input[name="from"]').fill(from.toISOString());
    await dialog().locator('input[name="to"]').fill(to.toISOString());
    await shot('backfill');
    await dialog().locator('button[type="submit"]').click();
    await waitFor(async () => (await dialog().count()) === 0, { timeoutMs: 10_000, message: 'backfill done' });
    assert.match(((await page.locator('.notice').last().textContent()) ?? '').trim(), /^3 runs created, 0 fire times already had theirs$/);
    // A dialog opened while the notice is up: the notices stay in sight, above the dialog. Both are
    // in the top layer, stacked in the order they were shown: the notices must be shown after it.
    await page.evaluate(() => {
      const order: string[] = [];
      (window as unknown as { order: string[] }).order = order;
      const showModal = HTMLDialogElement.prototype.showModal;
      HTMLDialogElement.prototype.showModal = function (this: HTMLDialogElement) {
        order.push('dialog');
        showModal.call(this);
      };
      const showPopover = HTMLElement.prototype.showPopover;
      HTMLElement.prototype.showPopover = function (this: HTMLElement) {
        order.push(this.className);
        showPopover.call(this);
      };
    });
    await row.locator('button[data-action="edit"]').click();
    await dialog().waitFor();
    assert.deepEqual(await page.evaluate(() => (window as unknown as { order: string[] }).order), ['dialog', 'notices']);
    assert.equal(await page.locator('.notices').evaluate((n) => n.matches(':popover-open')), true);
    const box = (await page.locator('.notice').last().boundingBox())!;
    assert.ok(box.y >= 0 && box.y + box.height <= 860 && box.x + box.width <= 1280, 'the notice within the window');
    await shot('notice-above-dialog');
    await dialog().locator('button', { hasText: 'Cancel' }).click();
    const runs = await (errand as unknown as { broker(): Promise<BrokerInspector> })
      .broker()
      .then((b) => b.listRuns({ queue: 'reports', limit: 50 }));
    assert.equal(runs.runs.filter((r) => r.schedule?.backfilled).length, 3);
  });

  test('delete asks for the id to be typed', async () => {
    const row = page.locator('tr[data-schedule="reports/weekly-report"]');
    await row.locator('button[data-action="delete"]').click();
    const ok = dialog().locator('button[type="submit"]');
    assert.equal(await ok.isDisabled(), true);
    await dialog().locator('input').fill('weekly-report');
    await ok.click();
    await waitFor(async () => (await row.count()) === 0, { timeoutMs: 10_000, message: 'deleted' });
    assert.equal(await errand.getSchedule('weekly-report'), null);
  });

  test('a read token sees the list but no action buttons', async () => {
    await errand.upsertSchedule('daily', errand.tasks.get('digest')!, { every: '24h', input: {} });
    const p = await (await browser.newContext({ viewport: { width: 1280, height: 700 } })).newPage();
    await p.goto(`${secured.url}/dashboard/`);
    await p.locator('input[type="password"], input[name="token"]').first().fill('read-t');
    await p.keyboard.press('Enter');
    await p.goto(`${secured.url}/dashboard/schedules`);
    await waitFor(async () => (await p.locator('tr[data-schedule="mail/daily"]').count()) === 1, {
      timeoutMs: 10_000,
      message: 'listed for a read token',
    });
    assert.equal(await p.locator('button[data-action]').count(), 0);
    await p.context().close();
    assert.deepEqual(problems, []);
  });
});
