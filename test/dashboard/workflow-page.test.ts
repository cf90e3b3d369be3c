// The dashboard's workflow page (src/dashboard/ui/pages/workflow.ts) and its API route
// (GET /dashboard/api/workflows/:id): each step with its state, value, dependencies and what it
// still waits for; in chromium, the graph coloured by state, the steps table, the link from a run.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { z } from 'zod';
import { chain, chord, createErrand, group } from '../../src/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { requires } from '../fixtures/prereq.ts';
import { tempDir, waitFor } from '../helpers.ts';
import {
  browserUnavailable,
  ensureDashboardBuilt,
  launchChromium,
  layoutProblems,
  SCREENSHOTS,
  type Served,
  serveDashboard,
} from './helpers.ts';

const unavailable = requires('chromium (dashboard browser tests)', browserUnavailable());

describe('dashboard: workflows', () => {
  const errand = createErrand({ broker: `sqlite:${join(tempDir('errand-dash-wf'), 'wf.db')}`, logger: quietLogger });
  const double = errand.task('double', { input: z.number() }, (n) => n * 2);
  const sum = errand.task('sum', { input: z.array(z.number()) }, (ns) => ns.reduce((a, b) => a + b, 0));
  const onboard = errand.task('complete_onboarding_for_a_new_enterprise_customer', { input: z.number() }, (n) => n);
  const boom = errand.task('boom', { input: z.number(), retries: { maxAttempts: 1 } }, (): number => {
    throw new Error('no luck');
  });
  let served: Served;
  before(async () => {
    served = await serveDashboard({ errand, streamIntervalMs: 300 });
  });
  after(async () => {
    await served?.close();
    await errand.close();
  });

  test('API: steps with state, value, dependencies, and what a waiting step waits for', async () => {
    const wf = await errand.workflow(chord(group(double.step(1), double.step(2)), sum.next()));
    const res = await served.app.inject({ method: 'GET', url: `/dashboard/api/workflows/${wf.id}` });
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json();
    assert.equal(body.state, 'running');
    assert.deepEqual(
      body.steps.map((s: { task: string; state: string }) => [s.task, s.state]),
      [
        ['double', 'queued'],
        ['double', 'queued'],
        ['sum', 'waiting'],
      ],
    );
    assert.deepEqual(body.steps[2].waitingFor, wf.runIds.slice(0, 2));
    assert.deepEqual(body.steps[2].dependsOn, [
      { id: wf.runIds[0], onFailure: 'cancel' },
      { id: wf.runIds[1], onFailure: 'cancel' },
    ]);
    assert.equal(body.steps[0].workflow, wf.id);
    const run = (await served.app.inject({ method: 'GET', url: `/dashboard/api/runs/${wf.runIds[2]}` })).json();
    assert.equal(run.workflow, wf.id, 'a run names its workflow');
    assert.equal(
      (await served.app.inject({ method: 'GET', url: '/dashboard/api/workflows/default.01ARZ3NDEKTSV4RRFFQ69G5FAV' })).statusCode,
      404,
    );
    assert.equal((await served.app.inject({ method: 'GET', url: '/dashboard/api/workflows/nope' })).statusCode, 404);
    const overview = (await served.app.inject({ method: 'GET', url: '/dashboard/api/overview' })).json();
    const queue = (await errand.getRun(wf.runIds[2]!)).queue;
    const row = overview.queues.find((q: { name: string }) => q.name === queue);
    assert.equal(row.counts.waiting, 1, "the overview counts the waiting step in its queue's row");
    assert.equal(overview.totals.waiting, 1, 'and in the totals');
  });

  describe('in chromium', { skip: unavailable }, () => {
    let browser: Browser;
    let page: Page;
    const problems: string[] = [];
    before(async () => {
      ensureDashboardBuilt();
      browser = await launchChromium();
      page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
      page.on('console', (m) => {
        if (m.type() === 'error') problems.push(`console: ${m.text()}`);
      });
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    });
    after(async () => {
      await browser?.close();
    });

    test("the overview's queue table has a waiting column: the workflow steps waiting on their dependencies", async () => {
      const wf = await errand.workflow(chain(double.step(3), double.next()));
      const queue = (await errand.getRun(wf.runIds[1]!)).queue;
      const waiting = (await (await errand.broker()).counts([queue]))[queue]!.waiting;
      assert.ok(waiting >= 1, 'a step is waiting');
      await page.goto(`${served.url}/dashboard/`);
      const cell = page.locator(`tr[data-queue="${queue}"] td[data-state="waiting"]`);
      await waitFor(async () => ((await cell.textContent()) ?? '').trim() === String(waiting), {
        timeoutMs: 15_000,
        message: `the ${queue} row shows ${waiting} waiting`,
      });
      assert.match((await cell.locator('a').getAttribute('href')) ?? '', /state=waiting/, 'the count links to those runs');
      const th = page.locator('table.queues th[title^="Workflow steps waiting"]');
      assert.equal(((await th.textContent()) ?? '').trim(), 'waiting');
      assert.deepEqual(problems, []);
    });

    test('the graph coloured by state and the steps table, live; a run links to its workflow', async () => {
      const wf = await errand.workflow(chain(group(double.step(1), boom.step(2)), sum.next()));
      await page.goto(`${served.url}/dashboard/workflows/${wf.id}`);
      await page.locator('svg.wf-graph').waitFor({ timeout: 15_000 });
      assert.equal(await page.locator('svg.wf-graph .wf-node').count(), 3, 'one box per step');
      assert.equal(await page.locator('svg.wf-graph .wf-edge').count(), 2, 'one line per dependency');
      assert.equal(await page.locator('svg.wf-graph .wf-waiting').count(), 1);
      assert.equal((await page.locator('tr[data-step="3"] .wf-waits').textContent())?.trim(), '#1, #2');

      const worker = errand.worker({ concurrency: 2 });
      await worker.start();
      try {
        await waitFor(async () => (await page.locator('[data-workflow-state]').textContent()) === 'failed', {
          timeoutMs: 20_000,
          message: 'the page shows the workflow failed, without a reload',
        });
      } finally {
        await worker.stop();
      }
      assert.equal(await page.locator('svg.wf-graph .wf-failed').count(), 1);
      assert.equal(await page.locator('svg.wf-graph .wf-cancelled').count(), 1, 'the step after the failure, cancelled');
      assert.match((await page.locator('tr[data-step="2"]').textContent()) ?? '', /no luck/);
      await page.screenshot({ path: join(SCREENSHOTS, 'workflow.png'), fullPage: true });

      await page.goto(`${served.url}/dashboard/runs/${wf.runIds[2]}`);
      await page.locator(`a[href$="/workflows/${wf.id}"]`).click();
      await page.locator('svg.wf-graph').waitFor({ timeout: 15_000 });
      assert.deepEqual(problems, []);
    });

    test('the nav marks Runs; a long task name is cut to fit its box, whole in the tooltip; no sideways scroll at 1280 or 390 px', async () => {
      const wf = await errand.workflow(chain(double.step(1), onboard.next()));
      const viewport = page.viewportSize()!;
      try {
        for (const [width, height] of [
          [1280, 800],
          [390, 844],
        ] as const) {
          await page.setViewportSize({ width, height });
          await page.goto(`${served.url}/dashboard/workflows/${wf.id}`);
          await page.locator('svg.wf-graph .wf-node').nth(1).waitFor({ timeout: 15_000 });
          assert.equal(((await page.locator('nav a[aria-current="page"]').textContent()) ?? '').trim(), 'Runs');
          const overflow = await page.locator('svg.wf-graph .wf-node').evaluateAll((nodes) =>
            nodes.flatMap((g) => {
              const box = g.querySelector('rect')!.getBBox();
              return Array.from(g.querySelectorAll('text'))
                .filter((t) => t.getBBox().x + t.getBBox().width > box.x + box.width - 4)
                .map((t) => t.textContent);
            }),
          );
          assert.deepEqual(overflow, [], 'every label within its box');
          const label = ((await page.locator('svg.wf-graph .wf-node').nth(1).locator('text.wf-label').textContent()) ?? '').trim();
          assert.match(label, /^#2 complete_\w+…$/, 'the long name is cut with an ellipsis');
          assert.match(
            (await page.locator('svg.wf-graph .wf-node').nth(1).locator('title').textContent()) ?? '',
            /^#2 complete_onboarding_for_a_new_enterprise_customer: /,
            'whole in the tooltip',
          );
          assert.deepEqual(await layoutProblems(page), [], `workflow page at ${width} px`);
          await page.screenshot({ path: join(SCREENSHOTS, `workflow-${width}.png`), fullPage: true });
        }
      } finally {
        await page.setViewportSize(viewport);
      }
      assert.deepEqual(problems, []);
    });
  });
});
