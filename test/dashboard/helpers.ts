// Shared set-up of the dashboard tests: a built front end, a server on a free port, Debian's chromium.
import { spawnSync } from 'node:child_process';
import { existsSync, globSync, mkdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Browser, Page } from 'playwright-core';
import { metricsPlugin } from '../../src/dashboard/metrics-route.ts';
import { type DashboardOptions, dashboardPlugin } from '../../src/dashboard/plugin.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
export const CHROMIUM = '/usr/bin/chromium';
export const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'];
export const SCREENSHOTS = `${root}test-results/dashboard`;

/** Why the browser tests cannot run here, or null when they can. */
export function browserUnavailable(): string | null {
  return existsSync(CHROMIUM)
    ? null
    : `${CHROMIUM} is missing: install Debian's chromium (apt-get update && apt-get install -y chromium; .ci/run does it) to run the dashboard browser tests`;
}

/** Builds the front end when `src/dashboard/dist` is missing or older than its sources (a developer edited the UI). */
export function ensureDashboardBuilt(): void {
  const index = `${root}src/dashboard/dist/index.html`;
  const built = existsSync(index) ? statSync(index).mtimeMs : 0;
  const sources = globSync(`${root}src/dashboard/{ui/**/*,api-types.ts,vite.config.ts}`).filter((f) => statSync(f).isFile());
  if (built && sources.every((f) => statSync(f).mtimeMs <= built)) return;
  const r = spawnSync(
    process.execPath,
    [`${root}node_modules/vite/bin/vite.js`, 'build', '--config', `${root}src/dashboard/vite.config.ts`],
    {
      cwd: root,
      encoding: 'utf8',
    },
  );
  if (r.status !== 0) throw new Error(`building the dashboard failed:\n${r.stdout}\n${r.stderr}`);
}

export interface Served {
  app: FastifyInstance;
  url: string;
  close(): Promise<void>;
}

/** A Fastify server with the dashboard and /metrics, listening on a free port. */
export async function serveDashboard(options: DashboardOptions): Promise<Served> {
  const app = Fastify();
  await app.register(dashboardPlugin, options);
  await app.register(metricsPlugin, { errand: options.errand, ...(options.auth && { auth: options.auth }) });
  const address = await app.listen({ port: 0, host: '127.0.0.1' });
  return { app, url: address, close: () => app.close() };
}

export async function launchChromium(): Promise<Browser> {
  const { chromium } = await import('playwright-core');
  mkdirSync(SCREENSHOTS, { recursive: true });
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS, headless: true });
}

/**
 * What is wrong with the layout of the page shown: the page scrolls sideways, a link or button of the
 * top bar is outside the bar (or the viewport), a table cell's text runs out of its cell (into the
 * next: a long one must be cut, whole in a tooltip), or (`actions`) a button in a table is outside its
 * table's box or the viewport. An empty list when all is well.
 */
export async function layoutProblems(page: Page, opts: { actions?: boolean } = {}): Promise<string[]> {
  return page.evaluate((actions) => {
    const out: string[] = [];
    const doc = document.documentElement;
    if (doc.scrollWidth > innerWidth) out.push(`the page is ${doc.scrollWidth} px wide in a ${innerWidth} px window`);
    const bar = document.querySelector('.topbar')?.getBoundingClientRect();
    if (!bar) out.push('no top bar');
    else
      for (const el of Array.from(document.querySelectorAll('.topbar a, .topbar button, .topbar .live, .topbar .badge'))) {
        const b = el.getBoundingClientRect();
        if (b.left < bar.left || b.right > Math.min(bar.right, innerWidth) || b.top < bar.top || b.bottom > bar.bottom)
          out.push(`"${el.textContent?.trim()}" is outside the top bar`);
      }
    for (const td of Array.from(document.querySelectorAll('main td'))) {
      const c = td as HTMLElement;
      // A cell that clips (an ellipsis, the whole in its tooltip) does so by design.
      if (getComputedStyle(c).overflowX === 'visible' && c.scrollWidth > c.clientWidth + 1)
        out.push(`a cell's text runs out of it (${c.scrollWidth} px in ${c.clientWidth}): "${c.textContent?.trim().slice(0, 60)}"`);
    }
    if (actions)
      for (const el of Array.from(document.querySelectorAll('main table button'))) {
        const b = el.getBoundingClientRect();
        const box = (el.closest('.table-scroll') ?? el.closest('table'))!.getBoundingClientRect();
        if (b.width && (b.right > Math.min(box.right, innerWidth) + 0.5 || b.left < box.left))
          out.push(
            `the "${el.textContent?.trim()}" button is cut off (${Math.round(b.right)} px, its table ends at ${Math.round(box.right)} px)`,
          );
      }
    return out;
  }, opts.actions ?? false);
}

/**
 * What is wrong with the open dialog: it is missing, or one of its action buttons is not wholly in
 * sight: outside the viewport, or cut off by the dialog or a box of it that scrolls (a Save button
 * below the fold of a form taller than the window). An empty list when all is well.
 */
export async function dialogProblems(page: Page): Promise<string[]> {
  return page.evaluate(() => {
    const dialog = document.querySelector('dialog[open]');
    if (!dialog) return ['no open dialog'];
    const out: string[] = [];
    const buttons = Array.from(dialog.querySelectorAll('.dialog-actions button'));
    if (!buttons.length) out.push('the dialog has no action buttons');
    for (const el of buttons) {
      const b = el.getBoundingClientRect();
      const name = `the "${el.textContent?.trim()}" button (${Math.round(b.top)}..${Math.round(b.bottom)} px)`;
      if (b.top < 0 || b.left < 0 || b.bottom > innerHeight || b.right > innerWidth)
        out.push(`${name} is outside the ${innerWidth} x ${innerHeight} window`);
      for (let box = el.parentElement; box && box !== document.body; box = box.parentElement) {
        if (box !== dialog && getComputedStyle(box).overflowY === 'visible') continue;
        const r = box.getBoundingClientRect();
        if (b.top < r.top - 0.5 || b.bottom > r.bottom + 0.5 || b.left < r.left - 0.5 || b.right > r.right + 0.5)
          out.push(
            `${name} is cut off by ${box.tagName.toLowerCase()}.${box.className} (${Math.round(r.top)}..${Math.round(r.bottom)} px)`,
          );
        if (box === dialog) break;
      }
    }
    return out;
  });
}
