// What the dashboard says when there is nothing to show (src/dashboard/ui/pages/runs.ts, run.ts,
// workflow.ts), in chromium: an empty broker's runs list (its queue filter still reads "any
// queue"), a run or workflow not found (asked once), and the attempts of a run cancelled before it
// started. SQLite file, no tokens.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { z } from 'zod';
import { createErrand } from '../../src/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { requires } from '../fixtures/prereq.ts';
import { tempDir } from '../helpers.ts';
import { browserUnavailable, ensureDashboardBuilt, launchChromium, layoutProblems, type Served, serveDashboard } from './helpers.ts';

const unavailable = requires('chromium (dashboard browser tests)', browserUnavailable());

describe('dashboard: empty states in chromium', { skip: unavailable }, () => {
  const errand = createErrand({ broker: `sqlite:${join(tempDir('errand-dash-empty'), 'e.db')}`, logger: quietLogger });
  let served: Served;
  let browser: Browser;
  let page: Page;
  const text = async (selector: string) => ((await page.locator(selector).first().textContent()) ?? '').trim();

  before(async () => {
    ensureDashboardBuilt();
    served = await serveDashboard({ errand, streamIntervalMs: 400 });
    browser = await launchChromium();
    page = await (await browser.newContext({ viewport: { width: 390, height: 844 } })).newPage();
  });
  after(async () => {
    await browser?.close();
    await served?.close();
    await errand.close();
  });

  test('no run at all: the list says so, and the queue filter reads "any queue"', async () => {
    await page.goto(`${served.url}/dashboard/runs`);
    await page.locator('main .empty', { hasText: 'No run yet' }).waitFor();
    assert.equal(await text('main .empty'), 'No run yet: enqueue one and it shows here.');
    assert.deepEqual(await page.locator('select[name="queue"] option').allTextContents(), ['any queue']);
    await page.selectOption('select[name="state"]', 'failed');
    await page.locator('main .empty', { hasText: 'No run matches these filters.' }).waitFor();
    assert.deepEqual(await layoutProblems(page), []);
  });

  test('a run or workflow not found is said once, not asked again at every tick', async () => {
    for (const [kind, path] of [
      ['run', 'runs'],
      ['workflow', 'workflows'],
    ] as const) {
      const asked: string[] = [];
      const onRequest = (r: { url(): string }) => {
        if (r.url().includes(`/api/${path}/`)) asked.push(r.url());
      };
      page.on('request', onRequest);
      await page.goto(`${served.url}/dashboard/${path}/reports.01ARZ3NDEKTSV4RRFFQ69G5FAV`);
      await page.locator('.error-box', { hasText: 'not found' }).waitFor();
      // The overview ticks every 400 ms here: a few ticks pass, and none asks again.
      await page.waitForTimeout(1500);
      page.off('request', onRequest);
      assert.equal(asked.length, 1, `the ${kind} asked once: ${asked.join(', ')}`);
    }
  });

  test('a run cancelled before it started: its attempts say it never will', async () => {
    // Defined only now: a task's queue is listed (and the broker was to have none above).
    const report = errand.task('report', { input: z.object({}), queue: 'reports' }, async () => null);
    const run = await report.enqueue({});
    await run.cancel();
    await page.goto(`${served.url}/dashboard/runs/${run.id}`);
    await page.locator('.run-title .badge', { hasText: 'cancelled' }).waitFor();
    assert.equal(await text('section.card:has(h2:text("Attempts")) .empty'), 'None: it was cancelled before it started.');
    assert.deepEqual(await layoutProblems(page), []);
  });
});
