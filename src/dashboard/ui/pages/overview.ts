// Overview: totals, live charts, and the queue table with its actions.
import type { Overview, QueueOverview, RunState } from '../../api-types.ts';
import { get, post } from '../api.ts';
import { type Ctx, errorBox, type Page } from '../app.ts';
import { type Chart, latencyChart, throughputChart } from '../charts.ts';
import { type Child, h, link, replace, trunc } from '../dom.ts';
import { duration, num, percent, plural, rate } from '../format.ts';
import { ROOT } from '../base.ts';

/** The columns of the queue table: every run state, in the order of the run model (`RUN_STATES`). */
const STATES: RunState[] = ['waiting', 'queued', 'scheduled', 'active', 'succeeded', 'failed', 'cancelled'];
const STATE_TITLES: Partial<Record<RunState, string>> = {
  waiting: 'Workflow steps waiting for the steps they depend on',
};

function runsHref(params: Record<string, string>): string {
  return `${ROOT}/runs?${new URLSearchParams(params).toString()}`;
}

function stat(label: string, value: string, opts: { cls?: string; title?: string; href?: string } = {}): HTMLElement {
  const body = [h('div', { class: 'stat-value' }, value), h('div', { class: 'stat-label' }, label)];
  return opts.href
    ? h('a', { class: `card stat ${opts.cls ?? ''}`, href: opts.href, 'data-link': true, title: opts.title }, ...body)
    : h('div', { class: `card stat ${opts.cls ?? ''}`, title: opts.title }, ...body);
}

export function overviewPage(ctx: Ctx): Page {
  const stats = h('div', { class: 'stats' });
  const charts = h('div', { class: 'charts' });
  const queues = h('div', { class: 'card table-card' });
  const note = h('p', { class: 'muted small' });
  const warnings = h('div', { class: 'card storage-warnings', role: 'alert', hidden: true });
  const el = h(
    'div',
    { class: 'page' },
    h('header', { class: 'page-head' }, h('h1', null, 'Overview'), note),
    warnings,
    stats,
    charts,
    h('section', null, h('h2', null, 'Queues'), queues),
  );
  let throughput: Chart | undefined;
  let latency: Chart | undefined;
  let lastQueues = '';

  const actions = (q: QueueOverview): HTMLElement => {
    const cell = h('div', { class: 'row-actions' });
    if (!ctx.canAct) return cell;
    cell.append(
      h(
        'button',
        {
          class: 'btn btn-small',
          type: 'button',
          'data-action': q.paused ? 'resume' : 'pause',
          title: q.paused
            ? 'Let workers take runs from this queue again'
            : 'Stop workers taking runs from this queue (enqueues still land)',
          onclick: async () => {
            const verb = q.paused ? 'resume' : 'pause';
            const r = await ctx.act(
              () => post<{ paused: boolean }>(`/queues/${encodeURIComponent(q.name)}/${verb}`),
              (x) => `Queue ${q.name} ${x.paused ? 'paused' : 'resumed'}`,
            );
            if (r) refresh();
          },
        },
        q.paused ? 'Resume' : 'Pause',
      ),
    );
    if (q.counts.failed > 0)
      cell.append(
        h(
          'button',
          {
            class: 'btn btn-small',
            type: 'button',
            'data-action': 'retry-failed',
            title: `Replay the ${plural(q.counts.failed, 'failed run')} of ${q.name}`,
            onclick: async () => {
              const ok = await ctx.confirm({
                title: `Retry failed runs of ${q.name}?`,
                body: `The ${plural(q.counts.failed, 'failed run')} of queue ${q.name} go${q.counts.failed === 1 ? 'es' : ''} back to the queue with ${q.counts.failed === 1 ? 'its attempts' : 'their attempts'} reset.`,
                confirmLabel: 'Retry all failed',
              });
              if (!ok) return;
              const r = await ctx.act(
                () => post<{ retried: number }>('/retry-failed', { queue: q.name }),
                (x) => `${plural(x.retried, 'failed run')} of ${q.name} queued again`,
              );
              if (r) refresh();
            },
          },
          'Retry failed',
        ),
      );
    const waiting = q.counts.queued + q.counts.scheduled;
    cell.append(
      h(
        'button',
        {
          class: 'btn btn-small btn-danger-quiet',
          type: 'button',
          'data-action': 'purge',
          disabled: waiting === 0,
          title: waiting ? `Delete the ${num(waiting)} queued and scheduled runs of ${q.name}` : 'Nothing is waiting in this queue',
          onclick: async () => {
            const ok = await ctx.confirm({
              title: `Purge queue ${q.name}?`,
              body: h(
                'p',
                null,
                `This deletes the ${num(q.counts.queued)} queued and ${num(q.counts.scheduled)} scheduled runs of `,
                h('strong', null, q.name),
                '. Active runs finish. This cannot be undone.',
              ),
              confirmLabel: 'Purge',
              danger: true,
              typeToConfirm: q.name,
            });
            if (!ok) return;
            const r = await ctx.act(
              () => post<{ removed: number }>(`/queues/${encodeURIComponent(q.name)}/purge`, { confirm: q.name }),
              (x) => `Purged ${plural(x.removed, 'run')} from ${q.name}`,
            );
            if (r) refresh();
          },
        },
        'Purge',
      ),
    );
    return cell;
  };

  const queueTable = (o: Overview): HTMLElement => {
    if (!o.queues.length) return h('div', { class: 'empty' }, 'No queue yet: enqueue a run and it shows here.');
    const head = h(
      'tr',
      null,
      h('th', { class: 'col-name' }, 'Queue'),
      ...STATES.map((s) => h('th', { class: 'num', title: STATE_TITLES[s] }, s)),
      h('th', { class: 'num', title: 'Runs finished per minute, last 5 minutes' }, 'per min'),
      h('th', { class: 'num', title: `Failed / finished, last ${o.windowMinutes} minutes` }, 'failure'),
      h(
        'th',
        { class: 'num', title: `Enqueue (or due time) to start: p50 / p95 / p99, last ${o.windowMinutes} minutes` },
        'wait p50/95/99',
      ),
      h('th', { class: 'num', title: `Start to finish: p50 / p95 / p99, last ${o.windowMinutes} minutes` }, 'run p50/95/99'),
      ctx.canAct ? h('th', { class: 'col-actions' }, 'Actions') : null,
    );
    const rows = o.queues.map((q) =>
      h(
        'tr',
        { 'data-queue': q.name },
        h(
          'td',
          { class: 'col-name' },
          h(
            'div',
            { class: 'name-cell' },
            link(runsHref({ queue: q.name }), trunc(q.name)),
            q.paused ? h('span', { class: 'badge paused' }, 'paused') : null,
          ),
        ),
        ...STATES.map((s) =>
          h(
            'td',
            { class: `num count state-text-${s} ${q.counts[s] ? '' : 'zero'}`, 'data-state': s },
            q.counts[s] ? link(runsHref({ queue: q.name, state: s }), num(q.counts[s])) : '0',
          ),
        ),
        h('td', { class: 'num' }, rate(q.throughputPerMin)),
        h(
          'td',
          { class: `num ${q.failureRate ? 'bad' : ''}`, title: `${num(q.failed)} of ${plural(q.finished, 'finished run')} failed` },
          percent(q.failureRate),
        ),
        h('td', { class: 'num latency', title: `${plural(q.wait.count, 'start')} measured` }, latencyCell(q.wait)),
        h('td', { class: 'num latency', title: `${plural(q.run.count, 'attempt')} measured` }, latencyCell(q.run)),
        ctx.canAct ? h('td', { class: 'col-actions' }, actions(q)) : null,
      ),
    );
    return h('div', { class: 'table-scroll' }, h('table', { class: 'table queues' }, h('thead', null, head), h('tbody', null, ...rows)));
  };

  const render = (o: Overview) => {
    ctx.overview = o;
    note.textContent = `${o.broker === 'redis' ? 'Redis' : 'SQLite'} broker · rates and latencies over the last ${o.windowMinutes} minutes`;
    const said = o.warnings ?? [];
    warnings.hidden = said.length === 0;
    replace(warnings, ...said.map((w) => h('p', null, w)));
    const t = o.totals;
    replace(
      stats,
      stat('queued', big(t.queued), { cls: 'state-queued', href: runsHref({ state: 'queued' }), title: plural(t.queued, 'queued run') }),
      stat('scheduled', big(t.scheduled), {
        cls: 'state-scheduled',
        href: runsHref({ state: 'scheduled' }),
        title: plural(t.scheduled, 'scheduled run'),
      }),
      stat('active', big(t.active), { cls: 'state-active', href: runsHref({ state: 'active' }), title: plural(t.active, 'active run') }),
      stat('failed (dead)', big(t.failed), {
        cls: 'state-failed',
        href: runsHref({ state: 'failed' }),
        title: plural(t.failed, 'failed run'),
      }),
      stat('finished / min', rate(o.throughputPerMin), { title: 'Succeeded and failed runs per minute, last 5 minutes' }),
      stat('failure rate', percent(o.failureRate), { title: `Failed / finished, last ${o.windowMinutes} minutes` }),
      stat('wait p95', duration(o.wait.p95), { title: `p50 ${duration(o.wait.p50)} · p99 ${duration(o.wait.p99)}` }),
      stat('run p95', duration(o.run.p95), { title: `p50 ${duration(o.run.p50)} · p99 ${duration(o.run.p99)}` }),
      // The lost ones in the label: "1 +1 lost" as the figure was cut to "1 +1 l…" in a card at 1280 px.
      stat(o.workers.lost ? `workers, ${num(o.workers.lost)} lost` : 'workers', num(o.workers.alive), {
        cls: o.workers.lost ? 'warn' : '',
        href: `${ROOT}/workers`,
        title: `${plural(o.workers.alive, 'worker')} alive${o.workers.lost ? `, ${num(o.workers.lost)} lost (no heartbeat within their TTL)` : ''}`,
      }),
    );
    if (!throughput || !latency) {
      throughput = throughputChart(o.series);
      latency = latencyChart(o.series);
      replace(charts, throughput.el, latency.el);
    } else {
      throughput.update(o.series);
      latency.update(o.series);
    }
    // Rebuilt only when something shown changed, so that a row under the pointer stays put.
    const key = JSON.stringify([o.queues, ctx.canAct]);
    if (key !== lastQueues) {
      lastQueues = key;
      replace(queues, queueTable(o));
    }
  };

  const refresh = () => {
    get<Overview>('/overview').then(render, (err) => replace(queues, errorBox(err)));
  };

  if (ctx.overview) render(ctx.overview);
  else {
    replace(queues, h('div', { class: 'empty' }, 'Loading…'));
    refresh();
  }

  return {
    el,
    tick: render,
    destroy() {
      throughput?.destroy();
      latency?.destroy();
    },
  };
}

const compact = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });

/** A count for a card: exact up to 99,999, then `100.1K`, `2.3M` (the exact figure is in the tooltip). */
function big(n: number): string {
  return n < 100_000 ? num(n) : compact.format(n);
}

/** p50 / p95 / p99, the unit said once when the three share it (`0.75 / 4.5 / 4.9 ms`): the queue table fits 1280 px. */
export function triple(p: { p50: number | null; p95: number | null; p99: number | null }): string {
  if (p.p50 === null) return '–';
  const parts = [duration(p.p50), duration(p.p95), duration(p.p99)];
  const unit = / (ms|s)$/.exec(parts[0]!)?.[0];
  if (unit && parts.every((x) => x.endsWith(unit) && /^[\d.]+ (ms|s)$/.test(x)))
    return `${parts.map((x) => x.slice(0, -unit.length)).join(' / ')}${unit}`;
  return parts.join(' / ');
}

/** `triple` in pieces that break only after a slash, when the table is squeezed: never past the card. */
function latencyCell(p: { p50: number | null; p95: number | null; p99: number | null }): Child[] {
  const pieces = triple(p).split(' / ');
  return pieces.flatMap((x, i) => [i ? ' ' : null, h('span', { class: 'nowrap' }, i < pieces.length - 1 ? `${x} /` : x)]);
}
