// One workflow: its steps as a graph coloured by state (columns by depth: a step sits right of
// every step it waits for), then a table of every step with what it runs after, what it still
// waits for, its timing and its result or error. Re-read on every overview tick.
import type { WorkflowDetail, WorkflowStep } from '../../api-types.ts';
import { ApiError, get } from '../api.ts';
import { type Ctx, errorBox, type Page, stateBadge } from '../app.ts';
import { ROOT } from '../base.ts';
import { h, link, replace, trunc } from '../dom.ts';
import { duration, fullTime, json, plural, time } from '../format.ts';

const SVG = 'http://www.w3.org/2000/svg';
/** A column with more steps than this is drawn as one box with its counts by state. */
const MAX_PER_COLUMN = 12;
const BOX_W = 210;
const BOX_H = 34;
const GAP_X = 60;
const GAP_Y = 14;

function svg(tag: string, attrs: Record<string, string | number>, ...children: (SVGElement | string)[]): SVGElement {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

/** Depth of each step: 0 without dependencies, else one more than its deepest dependency. */
function depths(steps: WorkflowStep[]): Map<string, number> {
  const byId = new Map(steps.map((s) => [s.id, s]));
  const depth = new Map<string, number>();
  const visit = (id: string, guard: number): number => {
    const known = depth.get(id);
    if (known !== undefined) return known;
    const s = byId.get(id);
    let d = 0;
    if (s && guard < 10_000) for (const dep of s.dependsOn) if (byId.has(dep.id)) d = Math.max(d, visit(dep.id, guard + 1) + 1);
    depth.set(id, d);
    return d;
  };
  for (const s of steps) visit(s.id, 0);
  return depth;
}

interface Box {
  x: number;
  y: number;
  label: string;
  sub: string;
  state: string;
  href?: string;
}

function graph(wf: WorkflowDetail, index: Map<string, number>): SVGElement {
  const depth = depths(wf.steps);
  const columns: WorkflowStep[][] = [];
  for (const s of wf.steps) (columns[depth.get(s.id) ?? 0] ??= []).push(s);
  const boxOf = new Map<string, Box>();
  const boxes: Box[] = [];
  let rows = 1;
  columns.forEach((col, c) => {
    const x = c * (BOX_W + GAP_X) + 4;
    if (col.length > MAX_PER_COLUMN) {
      const counts = new Map<string, number>();
      for (const s of col) counts.set(s.state, (counts.get(s.state) ?? 0) + 1);
      const worst =
        ['failed', 'cancelled', 'active', 'queued', 'waiting', 'scheduled', 'succeeded'].find((st) => counts.has(st)) ?? 'waiting';
      const box: Box = {
        x,
        y: 4,
        label: plural(col.length, 'step'),
        sub: [...counts].map(([st, n]) => `${n} ${st}`).join(', '),
        state: worst,
      };
      boxes.push(box);
      for (const s of col) boxOf.set(s.id, box);
      return;
    }
    rows = Math.max(rows, col.length);
    col.forEach((s, r) => {
      const box: Box = {
        x,
        y: r * (BOX_H + GAP_Y) + 4,
        label: `#${(index.get(s.id) ?? 0) + 1} ${s.task}`,
        sub: s.state,
        state: s.state,
        href: `${ROOT}/runs/${encodeURIComponent(s.id)}`,
      };
      boxes.push(box);
      boxOf.set(s.id, box);
    });
  });
  const width = columns.length * (BOX_W + GAP_X) - GAP_X + 8;
  const height = rows * (BOX_H + GAP_Y) - GAP_Y + 8;
  const lines = new Set<string>();
  const edges: SVGElement[] = [];
  for (const s of wf.steps) {
    const to = boxOf.get(s.id);
    for (const d of s.dependsOn) {
      const from = boxOf.get(d.id);
      if (!from || !to) continue;
      const key = `${from.x},${from.y}>${to.x},${to.y}`;
      if (lines.has(key)) continue;
      lines.add(key);
      edges.push(
        svg('line', {
          class: `wf-edge${s.waitingFor.includes(d.id) ? ' wf-edge-waiting' : ''}`,
          x1: from.x + BOX_W,
          y1: from.y + BOX_H / 2,
          x2: to.x,
          y2: to.y + BOX_H / 2,
        }),
      );
    }
  }
  const nodes = boxes.map((b) => {
    const g = svg(
      'g',
      { class: `wf-node wf-${b.state}`, 'data-state': b.state },
      svg('rect', { x: b.x, y: b.y, width: BOX_W, height: BOX_H, rx: 5 }),
      svg('text', { x: b.x + 8, y: b.y + 14, class: 'wf-label' }, b.label),
      svg('text', { x: b.x + 8, y: b.y + 28, class: 'wf-sub' }, b.sub),
      svg('title', {}, `${b.label}: ${b.sub}`),
    );
    if (!b.href) return g;
    const a = svg('a', { href: b.href, 'data-link': '' }, g);
    return a;
  });
  return svg(
    'svg',
    { class: 'wf-graph', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'Workflow graph' },
    ...edges,
    ...nodes,
  );
}

/** The room for a line of text in a box: its width less the padding on both sides. */
const TEXT_W = BOX_W - 16;

/**
 * Cuts each line of text of the graph, with an ellipsis, to what its box holds, measured as drawn
 * (the whole text stays in the box's tooltip). Needs the graph in the document to measure it.
 */
function fitLabels(graphEl: Element): void {
  for (const t of Array.from(graphEl.querySelectorAll<SVGTextContentElement>('text.wf-label, text.wf-sub'))) {
    const full = t.textContent ?? '';
    if (t.getComputedTextLength() <= TEXT_W) continue;
    let lo = 0;
    let hi = full.length;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      t.textContent = `${full.slice(0, mid)}…`;
      if (t.getComputedTextLength() <= TEXT_W) lo = mid;
      else hi = mid - 1;
    }
    t.textContent = `${full.slice(0, lo)}…`;
  }
}

export function workflowPage(ctx: Ctx, id: string): Page {
  void ctx;
  const body = h('div', { class: 'wf-body' }, h('div', { class: 'empty' }, 'Loading…'));
  const el = h('div', { class: 'page' }, h('nav', { class: 'crumbs' }, link(`${ROOT}/runs`, '← Runs')), body);
  let lastKey = '';
  let loading = false;

  const render = (wf: WorkflowDetail) => {
    const now = Date.now();
    const index = new Map(wf.steps.map((s, i) => [s.id, i]));
    const num = (sid: string) => (index.has(sid) ? `#${(index.get(sid) ?? 0) + 1}` : sid);
    const head = h(
      'div',
      { class: 'page-head run-head' },
      h(
        'div',
        { class: 'run-title' },
        h('h1', { class: 'mono trunc', title: wf.id }, `Workflow ${wf.id}`),
        h('span', { class: `badge state-${wf.state}`, 'data-workflow-state': wf.state }, wf.state),
      ),
    );
    const rows = wf.steps.map((s, i) => {
      const took = s.startedAt !== undefined && s.finishedAt !== undefined ? duration(s.finishedAt - s.startedAt) : '–';
      const outcome = s.error ?? (s.state === 'succeeded' ? json(s.result ?? null, 300) : '');
      return h(
        'tr',
        { 'data-step': i + 1, 'data-state': s.state },
        h('td', null, `#${i + 1}`),
        h('td', null, link(`${ROOT}/runs/${encodeURIComponent(s.id)}`, trunc(s.id, 'mono'))),
        h('td', null, trunc(s.task)),
        h('td', null, stateBadge(s.state)),
        h(
          'td',
          { class: 'wf-after' },
          s.dependsOn.map((d) => num(d.id) + (d.onFailure === 'cancel' ? '' : ` (${d.onFailure})`)).join(', ') || '–',
        ),
        h('td', { class: 'wf-waits' }, s.waitingFor.map(num).join(', ') || '–'),
        h('td', { title: fullTime(s.startedAt) }, s.startedAt !== undefined ? time(s.startedAt, now) : '–'),
        h('td', null, took),
        h('td', null, outcome ? trunc(outcome) : '–'),
      );
    });
    replace(
      body,
      head,
      h('p', { class: 'muted small' }, `Created ${time(wf.createdAt, now)} · ${plural(wf.steps.length, 'step')}`),
      h('section', { class: 'card wf-graph-card' }, h('h2', null, 'Graph'), h('div', { class: 'wf-graph-scroll' }, graph(wf, index))),
      h(
        'section',
        { class: 'card' },
        h('h2', null, 'Steps'),
        h(
          'div',
          { class: 'table-scroll' },
          h(
            'table',
            { class: 'table wf-steps' },
            h(
              'thead',
              null,
              h(
                'tr',
                null,
                ...['#', 'Run', 'Task', 'State', 'After', 'Waits for', 'Started', 'Took', 'Result or error'].map((t) => h('th', null, t)),
              ),
            ),
            h('tbody', null, ...rows),
          ),
        ),
      ),
    );
  };

  // Not found (or not an id): it will not appear later, so it is not asked again every tick (each
  // time a 404 in the browser's console).
  let gone = false;

  async function load(): Promise<void> {
    if (loading || gone) return;
    loading = true;
    try {
      const wf = await get<WorkflowDetail>(`/workflows/${encodeURIComponent(id)}`);
      const key = JSON.stringify(wf);
      if (key !== lastKey) {
        lastKey = key;
        render(wf);
        const drawn = body.querySelector('svg.wf-graph');
        if (drawn) fitLabels(drawn);
      }
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) gone = true;
      if (!(err instanceof ApiError && err.status === 401)) replace(body, errorBox(err));
    } finally {
      loading = false;
    }
  }
  void load();
  return {
    el,
    tick() {
      void load();
    },
  };
}
