// Flow control: the queues with limits, and for one queue its keys (backlog, active runs, limits,
// when each may start again), sorted and paged by the broker (GET /api/flow/:queue).
import type { FlowKeyJson, FlowKeyList, FlowQueues } from '../../api-types.ts';
import { ApiError, get } from '../api.ts';
import { type Ctx, errorBox, type Page } from '../app.ts';
import { ROOT } from '../base.ts';
import { h, link, replace, trunc } from '../dom.ts';
import { ago, fullTime, num, plural } from '../format.ts';

type Sort = FlowKeyList['sort'];
const LIMIT = 50;

const PERIOD_UNITS: [number, string][] = [
  [86_400_000, 'day'],
  [3_600_000, 'h'],
  [60_000, 'min'],
  [1000, 's'],
  [1, 'ms'],
];

/** A rate as the docs write it: `10/s`, `300/min, burst 20`, `1/10min`, `5/1500ms`. */
function rateText(r: FlowKeyJson['rate']): string {
  if (!r) return '–';
  const [size, unit] = PERIOD_UNITS.find(([ms]) => r.period % ms === 0) ?? [1, 'ms'];
  const count = r.period / size;
  return `${num(r.limit)}/${count === 1 ? '' : count}${unit}${r.burst !== r.limit ? `, burst ${num(r.burst)}` : ''}`;
}

function nextText(k: FlowKeyJson, now: number): HTMLElement {
  if (k.held === 'rate' && k.nextAt !== null)
    return h('span', { class: 'badge paused', title: `Held by its rate until ${fullTime(k.nextAt)}` }, `rate: ${ago(k.nextAt, now)}`);
  if (k.held === 'concurrency')
    return h('span', { class: 'badge lost', title: 'At its concurrency limit: when one of its runs ends' }, 'at limit');
  if (k.nextAt !== null) return h('span', { class: 'badge alive' }, 'now');
  return h('span', { class: 'muted' }, '–');
}

export function flowPage(ctx: Ctx, initialQueue: string | null): Page {
  void ctx;
  const queuesEl = h('div', { class: 'filters', 'data-testid': 'flow-queues' });
  const summary = h('p', { class: 'muted small' });
  const list = h('div', { class: 'card table-card' }, h('div', { class: 'empty' }, 'Loading…'));
  const pager = h('div', { class: 'pager' });
  const el = h(
    'div',
    { class: 'page' },
    h('header', { class: 'page-head' }, h('h1', null, 'Flow control'), summary),
    queuesEl,
    list,
    pager,
  );
  let queue = initialQueue;
  let sort: Sort = 'queued';
  let offset = 0;
  let loading = false;
  let loadedAt = 0;

  const setUrl = () => {
    const u = new URL(location.href);
    if (queue) u.searchParams.set('queue', queue);
    else u.searchParams.delete('queue');
    history.replaceState(null, '', u.pathname + u.search);
  };

  const header = (label: string, by: Sort | null, cls = '', title = '') =>
    h(
      'th',
      { class: cls, title, 'aria-sort': by && by === sort ? (by === 'key' ? 'ascending' : 'descending') : null },
      by
        ? h(
            'button',
            {
              class: 'btn-link',
              type: 'button',
              'data-sort': by,
              onclick: () => {
                sort = by;
                offset = 0;
                void load();
              },
            },
            label,
            by === sort ? (by === 'key' ? ' ↑' : ' ↓') : '',
          )
        : label,
    );

  const row = (k: FlowKeyJson, now: number) =>
    h(
      'tr',
      { 'data-key': `${k.group}|${k.key}` },
      h('td', null, trunc(k.group)),
      h('td', { class: 'mono' }, k.key === '' ? h('span', { class: 'muted' }, '(task only)') : trunc(k.key, 'mono')),
      h('td', { class: `num ${k.queued ? '' : 'zero'}` }, num(k.queued)),
      h('td', { class: `num ${k.active ? '' : 'zero'}` }, num(k.active)),
      h('td', { class: 'num' }, k.concurrency ? num(k.concurrency) : '–'),
      h('td', { class: 'nowrap col-rate' }, rateText(k.rate)),
      h('td', { class: 'nowrap' }, nextText(k, now)),
    );

  async function loadKeys(q: string) {
    const data = await get<FlowKeyList>(`/flow/${encodeURIComponent(q)}?sort=${sort}&offset=${offset}&limit=${LIMIT}`);
    if (!data.keys.length) {
      replace(list, h('div', { class: 'empty' }, data.total ? 'No keys on this page.' : `No key of queue ${q} has queued or active runs.`));
    } else {
      replace(
        list,
        h(
          'div',
          { class: 'table-scroll' },
          h(
            'table',
            { class: 'table flow-keys' },
            h(
              'thead',
              null,
              h(
                'tr',
                null,
                header('Task', null),
                header('Key', 'key'),
                header('Queued', 'queued', 'num', 'Runs waiting for their turn, a slot or the rate'),
                header('Active', 'active', 'num'),
                header('Limit', null, 'num', 'Concurrency limit of the key'),
                header('Rate', null, '', 'Starts per period, and the burst'),
                header('Next start', null, '', 'When the key may start its next run'),
              ),
            ),
            h('tbody', null, ...data.keys.map((k) => row(k, data.now))),
          ),
        ),
      );
    }
    const from = data.keys.length ? data.offset + 1 : 0;
    replace(
      pager,
      h(
        'span',
        { class: 'muted', 'data-testid': 'range' },
        `${num(from)}–${num(data.offset + data.keys.length)} of ${plural(data.total, 'key')}`,
      ),
      h(
        'button',
        {
          class: 'btn',
          type: 'button',
          disabled: data.offset === 0,
          'data-action': 'previous',
          onclick: () => {
            offset = Math.max(0, offset - LIMIT);
            void load();
          },
        },
        '← Previous',
      ),
      h(
        'button',
        {
          class: 'btn',
          type: 'button',
          disabled: data.offset + data.keys.length >= data.total,
          'data-action': 'next',
          onclick: () => {
            offset += LIMIT;
            void load();
          },
        },
        'Next →',
      ),
    );
  }

  async function load() {
    if (loading) return;
    loading = true;
    loadedAt = Date.now();
    try {
      const data = await get<FlowQueues>('/flow');
      if (!data.queues.length) {
        summary.textContent = 'No queue has runs under flow control.';
        replace(queuesEl);
        replace(list, h('div', { class: 'empty' }, 'Give a task limits (docs/flow-control.md) and its keys show here.'));
        replace(pager);
        return;
      }
      if (!queue || !data.queues.some((q) => q.name === queue)) queue = data.queues[0]!.name;
      setUrl();
      const cur = data.queues.find((q) => q.name === queue)!;
      summary.textContent = `${plural(cur.queued, 'run')} queued under limits in ${plural(cur.keys, 'key')}; ${plural(cur.rateLimitedKeys, 'key')} held by ${cur.rateLimitedKeys === 1 ? 'its' : 'their'} rate${cur.rateLimitedGroups ? `, ${plural(cur.rateLimitedGroups, 'task')} held by theirs` : ''}.`;
      replace(
        queuesEl,
        ...data.queues.map((q) =>
          h(
            'button',
            {
              class: `btn btn-small ${q.name === queue ? 'btn-primary' : ''}`,
              type: 'button',
              'data-queue': q.name,
              onclick: () => {
                queue = q.name;
                offset = 0;
                void load();
              },
            },
            `${q.name} (${num(q.keys)})`,
          ),
        ),
        link(`${ROOT}/runs?queue=${encodeURIComponent(queue)}&state=queued`, 'Queued runs →'),
      );
      await loadKeys(queue);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) replace(list, errorBox(err));
    } finally {
      loading = false;
    }
  }
  void load();
  // Read again at most every 5 s as the overview ticks.
  return { el, tick: () => (Date.now() - loadedAt >= 5_000 ? void load() : undefined) };
}
