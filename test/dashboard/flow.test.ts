// The dashboard's flow-control view: GET /api/flow (queues with limits), GET /api/flow/:queue (a
// page of keys: backlog, active, limits, next start; sorted and paged by the broker), its errors,
// and the page in chromium (a screenshot in test-results/dashboard/flow.png). SQLite file, no tokens.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import { z } from 'zod';
import type { FlowKeyList, FlowQueues } from '../../src/dashboard/api-types.ts';
import { createErrand, type Errand } from '../../src/errand.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { requires } from '../fixtures/prereq.ts';
import { tempDir, waitFor } from '../helpers.ts';
import { browserUnavailable, ensureDashboardBuilt, launchChromium, SCREENSHOTS, type Served, serveDashboard } from './helpers.ts';

describe('dashboard: flow control', () => {
  let errand: Errand;
  let served: Served;
  let browser: Browser | undefined;
  before(async () => {
    ensureDashboardBuilt();
    errand = createErrand({ broker: `sqlite:${join(tempDir('errand-dash-flow'), 'e.db')}`, logger: quietLogger });
    const sync = errand.task(
      'sync_account',
      {
        input: z.object({ tenant: z.string(), n: z.number() }),
        queue: 'tenants',
        limits: {
          key: (i) => i.tenant,
          concurrency: 2,
          overrides: { slow: { rate: { limit: 1, period: 60_000 } }, t00: { rate: { limit: 1, period: 600_000 } } },
        },
      },
      async () => null,
    );
    errand.task('plain', { input: z.object({}), queue: 'other' }, async () => null);
    // 60 keys: "big" with 6 runs, "slow" with 3, and 58 more with one each.
    const inputs = [
      ...Array.from({ length: 6 }, (_, n) => ({ tenant: 'big', n })),
      ...Array.from({ length: 3 }, (_, n) => ({ tenant: 'slow', n })),
      ...Array.from({ length: 58 }, (_, n) => ({ tenant: `t${String(n).padStart(2, '0')}`, n })),
    ];
    await sync.enqueueMany(inputs.map((input) => ({ input })));
    // Runs started by a reserve (no worker): big takes its 2 slots, slow its one start in the minute.
    const b = await errand.broker();
    const now = Date.now();
    await b.reserve({ workerId: 'w1', queues: ['tenants'], max: 30, leaseMs: 600_000, now });
    await b.reserve({ workerId: 'w1', queues: ['tenants'], max: 50, leaseMs: 600_000, now: now + 1 });
    served = await serveDashboard({ errand, streamIntervalMs: 400 });
  });
  after(async () => {
    await browser?.close();
    await served?.close();
    await errand?.close();
  });

  it('lists the queues with flow control, and pages through a queue keys sorted by the broker', async () => {
    const inject = (url: string) => served.app.inject(url);
    const queues = (await inject('/dashboard/api/flow')).json<FlowQueues>();
    assert.deepEqual(
      queues.queues.map((q) => q.name),
      ['tenants'],
      'only queues with flow control',
    );
    assert.equal(queues.queues[0]!.keys, 60);
    const first = (await inject('/dashboard/api/flow/tenants')).json<FlowKeyList>();
    assert.equal(first.total, 60);
    assert.equal(first.keys.length, 50);
    assert.deepEqual(
      first.keys.slice(0, 2).map((k) => [k.key, k.queued, k.active, k.concurrency, k.held ?? null]),
      [
        ['big', 4, 2, 2, 'concurrency'],
        ['slow', 2, 1, 2, 'rate'],
      ],
      'most queued first',
    );
    const slow = first.keys[1]!;
    assert.deepEqual(slow.rate, { limit: 1, period: 60_000, burst: 1 });
    assert.ok(slow.nextAt !== null && slow.nextAt > first.now, 'held by its rate until a time to come');
    const second = (await inject('/dashboard/api/flow/tenants?offset=50&limit=50')).json<FlowKeyList>();
    assert.equal(second.keys.length, 10);
    const byKey = (await inject('/dashboard/api/flow/tenants?sort=key&limit=3')).json<FlowKeyList>();
    assert.deepEqual(
      byKey.keys.map((k) => k.key),
      ['big', 'slow', 't00'],
    );
    assert.equal((await inject('/dashboard/api/flow/other')).json<FlowKeyList>().total, 0);
    const bad = await inject('/dashboard/api/flow/tenants?sort=nope');
    assert.equal(bad.statusCode, 400);
    assert.match(bad.json().error ?? bad.body, /sort/);
    assert.equal((await inject('/dashboard/api/flow/tenants?limit=0')).statusCode, 400);
    assert.equal((await inject('/dashboard/api/flow/bad%20queue')).statusCode, 400);
  });

  it('shows the keys in chromium: sortable, paged', {
    skip: requires('chromium (dashboard browser tests)', browserUnavailable()),
  }, async () => {
    browser = await launchChromium();
    const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
    const problems: string[] = [];
    page.on('pageerror', (e) => problems.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(m.text());
    });
    await page.goto(`${served.url}/dashboard/flow`);
    const range = page.locator('[data-testid="range"]');
    await waitFor(async () => ((await range.textContent()) ?? '').includes('of 60 keys'), { timeoutMs: 15_000, message: 'the first page' });
    assert.equal((await range.textContent())?.trim(), '1–50 of 60 keys');
    assert.equal(await page.locator('tr[data-key]').count(), 50);
    assert.match((await page.locator('tr[data-key="sync_account|big"]').textContent()) ?? '', /at limit/);
    assert.match((await page.locator('tr[data-key="sync_account|slow"]').textContent()) ?? '', /rate: in/);
    await page.screenshot({ path: join(SCREENSHOTS, 'flow.png'), fullPage: true });
    await page.click('button[data-action="next"]');
    await waitFor(async () => ((await range.textContent()) ?? '').startsWith('51'), { timeoutMs: 15_000, message: 'the second page' });
    assert.equal(await page.locator('tr[data-key]').count(), 10);
    await page.click('button[data-action="previous"]');
    await waitFor(async () => ((await range.textContent()) ?? '').startsWith('1–'), { timeoutMs: 15_000, message: 'back to the first' });
    await page.click('button[data-sort="key"]');
    await waitFor(async () => (await page.locator('tr[data-key]').first().getAttribute('data-key')) === 'sync_account|big', {
      timeoutMs: 15_000,
      message: 'sorted by key',
    });
    assert.equal(await page.locator('tr[data-key]').nth(2).getAttribute('data-key'), 'sync_account|t00');
    // Rates read as the docs write them: a limit per period.
    const rate = async (key: string) => ((await page.locator(`tr[data-key="sync_account|${key}"] td.col-rate`).textContent()) ?? '').trim();
    assert.equal(await rate('slow'), '1/min');
    assert.equal(await rate('t00'), '1/10min', 'not 1/10m 00s');
    assert.deepEqual(problems, []);
  });
});
