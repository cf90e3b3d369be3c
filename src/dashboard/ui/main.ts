// The dashboard's shell: sign-in, top bar, router, and the live overview stream that drives every page.
import type { Overview, Session, SignedOut } from '../api-types.ts';
import { get, getToken, openStream, type StreamStatus, setToken, setUnauthorizedHandler } from './api.ts';
import { act, type Ctx, confirmDialog, errorBox, notify, type Page } from './app.ts';
import { h, link, replace } from './dom.ts';
import { time } from './format.ts';
import { overviewPage } from './pages/overview.ts';
import { runPage } from './pages/run.ts';
import { runsPage } from './pages/runs.ts';
import { flowPage } from './pages/flow.ts';
import { schedulesPage } from './pages/schedules.ts';
import { workersPage } from './pages/workers.ts';
import { workflowPage } from './pages/workflow.ts';
import { ROOT } from './base.ts';

const root = document.getElementById('app')!;
const main = h('main', { class: 'main', id: 'main' });
const nav = h('nav', { class: 'nav', 'aria-label': 'Sections' });
const status = h('span', { class: 'live live-connecting', 'data-testid': 'live' }, 'connecting');
const right = h('div', { class: 'topbar-right' }, status);
const topbar = h(
  'header',
  { class: 'topbar' },
  h('a', { class: 'brand', href: `${ROOT}/`, 'data-link': true }, h('span', { class: 'logo' }, 'E'), 'Errand'),
  nav,
  right,
);

let page: Page | null = null;
let stopStream: (() => void) | null = null;
let ctx: Ctx | null = null;

const SECTIONS: [string, string][] = [
  [`${ROOT}/`, 'Overview'],
  [`${ROOT}/runs`, 'Runs'],
  [`${ROOT}/workers`, 'Workers'],
  [`${ROOT}/schedules`, 'Schedules'],
  [`${ROOT}/flow`, 'Flow control'],
];

/** The section of the top bar a page belongs to: a workflow is a group of runs, linked from them. */
function section(path: string): string {
  if (path.startsWith(`${ROOT}/runs`) || path.startsWith(`${ROOT}/workflows/`)) return `${ROOT}/runs`;
  if (path.startsWith(`${ROOT}/workers`)) return `${ROOT}/workers`;
  if (path.startsWith(`${ROOT}/schedules`)) return `${ROOT}/schedules`;
  if (path.startsWith(`${ROOT}/flow`)) return `${ROOT}/flow`;
  return `${ROOT}/`;
}

function renderNav(): void {
  const current = section(location.pathname);
  replace(
    nav,
    ...SECTIONS.map(([href, label]) => {
      const a = link(href, label);
      if (href === current) a.setAttribute('aria-current', 'page');
      return a;
    }),
  );
}

function route(): void {
  if (!ctx) return;
  page?.destroy?.();
  page = null;
  renderNav();
  const path = location.pathname.replace(/\/+$/, '') || ROOT;
  const m = path.startsWith(`${ROOT}/runs/`) ? /^([^/]+)$/.exec(path.slice(ROOT.length + '/runs/'.length)) : null;
  const w = path.startsWith(`${ROOT}/workflows/`) ? /^([^/]+)$/.exec(path.slice(ROOT.length + '/workflows/'.length)) : null;
  if (path === `${ROOT}`) {
    page = overviewPage(ctx);
    document.title = 'Overview · Errand';
  } else if (path === `${ROOT}/runs`) {
    page = runsPage(ctx);
    document.title = 'Runs · Errand';
  } else if (m) {
    const id = decodeURIComponent(m[1]!);
    page = runPage(ctx, id);
    document.title = `${id} · Errand`;
  } else if (w) {
    const id = decodeURIComponent(w[1]!);
    page = workflowPage(ctx, id);
    document.title = `Workflow ${id} · Errand`;
  } else if (path === `${ROOT}/workers`) {
    page = workersPage(ctx);
    document.title = 'Workers · Errand';
  } else if (path === `${ROOT}/schedules`) {
    page = schedulesPage(ctx);
    document.title = 'Schedules · Errand';
  } else if (path === `${ROOT}/flow`) {
    page = flowPage(ctx, new URLSearchParams(location.search).get('queue'));
    document.title = 'Flow control · Errand';
  } else {
    page = {
      el: h(
        'div',
        { class: 'page' },
        h('h1', null, 'Not found'),
        h('p', null, 'No such page. ', link(`${ROOT}/`, 'Go to the overview'), '.'),
      ),
    };
    document.title = 'Not found · Errand';
  }
  replace(main, page.el);
  main.focus({ preventScroll: true });
}

function navigate(href: string, replaceState = false): void {
  if (replaceState) history.replaceState(null, '', href);
  else history.pushState(null, '', href);
  window.scrollTo(0, 0);
  route();
}

document.addEventListener('click', (e) => {
  const a = (e.target as Element | null)?.closest?.('a[data-link]') as HTMLAnchorElement | null;
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin) return;
  e.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener('popstate', route);

function setStatus(s: StreamStatus, detail?: string): void {
  status.className = `live live-${s}`;
  status.title = detail ?? '';
  if (s === 'live') status.textContent = `live · ${time(Date.now())}`;
  else if (s === 'connecting') status.textContent = 'connecting';
  else if (s === 'reconnecting') status.textContent = 'reconnecting…';
  else status.textContent = detail ? `error: ${detail}` : 'error';
}

function onOverview(o: Overview): void {
  if (!ctx) return;
  ctx.overview = o;
  page?.tick?.(o);
}

function signOut(): void {
  setToken(null);
  location.assign(`${ROOT}/`);
}

function showLogin(message?: string): void {
  stopStream?.();
  stopStream = null;
  page?.destroy?.();
  page = null;
  ctx = null;
  replace(nav);
  replace(right);
  const input = h('input', {
    class: 'input',
    type: 'password',
    name: 'token',
    autocomplete: 'current-password',
    required: true,
    'aria-label': 'Token',
    placeholder: 'token',
  });
  const error = h('p', { class: 'form-error', role: 'alert' }, message && getToken() ? message : '');
  const form = h(
    'form',
    {
      class: 'card login',
      onsubmit: async (e: Event) => {
        e.preventDefault();
        setToken(input.value.trim());
        error.textContent = '';
        await start();
      },
    },
    h('h1', null, 'Sign in'),
    h(
      'p',
      { class: 'muted' },
      'This dashboard needs a token: a read token to look, an admin token to act (retry, cancel, pause, purge). It is kept in this tab only.',
    ),
    // A password form without a user name draws a warning in the browser's console (and puzzles password managers).
    h('input', { type: 'text', name: 'username', value: 'errand', autocomplete: 'username', hidden: true, 'aria-hidden': 'true' }),
    h('label', { class: 'field' }, h('span', null, 'Token'), input),
    error,
    h('button', { class: 'btn btn-primary', type: 'submit' }, 'Sign in'),
  );
  replace(main, h('div', { class: 'page page-narrow' }, form));
  input.focus();
}

setUnauthorizedHandler((message) => {
  if (ctx) {
    notify(message, 'error');
    showLogin(message);
  }
});

async function start(): Promise<void> {
  let session: Session | SignedOut;
  try {
    // Answers 200 with or without a token (a 401 would be an error in the console on every visit).
    session = await get<Session | SignedOut>('/session');
  } catch (err) {
    replace(
      main,
      h('div', { class: 'page' }, errorBox(err), h('button', { class: 'btn', type: 'button', onclick: () => void start() }, 'Try again')),
    );
    return;
  }
  if (!session.authenticated) {
    showLogin(session.reason === 'invalid' ? 'That token was not accepted.' : undefined);
    if (getToken()) setToken(null);
    return;
  }
  ctx = {
    session,
    overview: null,
    canAct: session.scope === 'admin',
    navigate,
    notify,
    confirm: confirmDialog,
    act,
  };
  replace(right, status);
  if (session.scope !== 'admin')
    right.append(h('span', { class: 'badge readonly', title: 'This token may look but not act' }, 'read-only'));
  if (session.auth) right.append(h('button', { class: 'btn btn-quiet btn-small', type: 'button', onclick: signOut }, 'Sign out'));
  route();
  stopStream?.();
  stopStream = openStream(onOverview, setStatus);
}

root.append(topbar, main);
main.tabIndex = -1;
void start();
