// Runs: filters (queue, task, state), search by id, cursor pagination, newest first, live first page.
import type { Overview, RunList, RunState, RunSummary } from '../../api-types.ts';
import { get, post } from '../api.ts';
import { type Ctx, errorBox, type Page, stateBadge } from '../app.ts';
import { h, link, replace, trunc } from '../dom.ts';
import { ago, duration, fullTime, num, plural, time } from '../format.ts';
import { ROOT } from '../base.ts';

const STATES: RunState[] = ['queued', 'scheduled', 'active', 'succeeded', 'failed', 'cancelled'];
const PAGE_SIZES = [25, 50, 100];

interface Filters {
  queue: string;
  task: string;
  state: string;
  id: string;
  limit: number;
}

function readFilters(): Filters {
  const p = new URLSearchParams(location.search);
  const limit = Number(p.get('limit'));
  return {
    queue: p.get('queue') ?? '',
    task: p.get('task') ?? '',
    state: p.get('state') ?? '',
    id: p.get('id') ?? '',
    limit: PAGE_SIZES.includes(limit) ? limit : 50,
  };
}

function filtersQuery(f: Filters): string {
  const p = new URLSearchParams();
  if (f.queue) p.set('queue', f.queue);
  if (f.task) p.set('task', f.task);
  if (f.state) p.set('state', f.state);
  if (f.id) p.set('id', f.id);
  if (f.limit !== 50) p.set('limit', String(f.limit));
  const s = p.toString();
  return s ? `?${s}` : '';
}

export function runsPage(ctx: Ctx): Page {
  let filters = readFilters();
  /** Cursors of the pages before the current one (the first page's is ''). */
  let stack: string[] = [];
  let cursor = '';
  let current: RunList | null = null;
  let lastKey = '';
  let loadSeq = 0;

  const queueSelect = h('select', { class: 'input', name: 'queue', 'aria-label': 'Queue' });
  const taskInput = h('input', {
    class: 'input',
    name: 'task',
    type: 'text',
    list: 'task-names',
    placeholder: 'any task',
    'aria-label': 'Task',
    autocomplete: 'off',
    spellcheck: 'false',
  });
  const taskList = h('datalist', { id: 'task-names' }, ...ctx.session.tasks.map((t) => h('option', { value: t })));
  const stateSelect = h(
    'select',
    { class: 'input', name: 'state', 'aria-label': 'State' },
    h('option', { value: '' }, 'any state'),
    ...STATES.map((s) => h('option', { value: s }, s)),
  );
  const idInput = h('input', {
    class: 'input input-id',
    name: 'id',
    type: 'search',
    placeholder: 'run id, e.g. emails.01J…',
    'aria-label': 'Search by run id',
    autocomplete: 'off',
    spellcheck: 'false',
  });
  const sizeSelect = h(
    'select',
    { class: 'input', name: 'limit', 'aria-label': 'Runs per page' },
    ...PAGE_SIZES.map((n) => h('option', { value: String(n) }, `${n} per page`)),
  );
  const list = h('div', { class: 'card table-card' });
  const pager = h('div', { class: 'pager' });
  const bulk = h('div', { class: 'bulk' });

  const fillQueues = (o: Overview | null) => {
    const names = new Set(o?.queues.map((q) => q.name) ?? []);
    if (filters.queue) names.add(filters.queue);
    const want = ['', ...[...names].sort()];
    const have = Array.from(queueSelect.options, (x) => x.value);
    // Compared item by item: joined, [''] (no queue yet) and [] (no option yet) were the same, and the
    // select stayed empty.
    if (want.length === have.length && want.every((n, i) => n === have[i])) return;
    replace(queueSelect, ...want.map((n) => h('option', { value: n }, n || 'any queue')));
    queueSelect.value = filters.queue;
  };

  const syncInputs = () => {
    fillQueues(ctx.overview);
    queueSelect.value = filters.queue;
    taskInput.value = filters.task;
    stateSelect.value = filters.state;
    idInput.value = filters.id;
    sizeSelect.value = String(filters.limit);
  };

  const form = h(
    'form',
    {
      class: 'filters',
      role: 'search',
      onsubmit: (e: Event) => {
        e.preventDefault();
        apply();
      },
    },
    queueSelect,
    taskInput,
    taskList,
    stateSelect,
    sizeSelect,
    h('button', { class: 'btn btn-primary', type: 'submit' }, 'Filter'),
    h('span', { class: 'filters-gap' }),
    idInput,
    h('button', { class: 'btn', type: 'submit', 'data-action': 'search' }, 'Find'),
    h(
      'button',
      {
        class: 'btn btn-quiet',
        type: 'button',
        onclick: () => {
          filters = { queue: '', task: '', state: '', id: '', limit: filters.limit };
          syncInputs();
          apply();
        },
      },
      'Clear',
    ),
  );
  for (const el of [queueSelect, stateSelect, sizeSelect]) el.addEventListener('change', () => apply());

  const el = h(
    'div',
    { class: 'page' },
    h(
      'header',
      { class: 'page-head' },
      h('h1', null, 'Runs'),
      h('p', { class: 'muted small' }, 'Newest first. The first page updates live.'),
    ),
    form,
    bulk,
    list,
    pager,
  );

  function apply() {
    filters = {
      queue: queueSelect.value,
      task: taskInput.value.trim(),
      state: stateSelect.value,
      id: idInput.value.trim(),
      limit: Number(sizeSelect.value) || 50,
    };
    history.replaceState(null, '', `${ROOT}/runs${filtersQuery(filters)}`);
    stack = [];
    cursor = '';
    void load();
  }

  const rowActions = (r: RunSummary): HTMLElement | null => {
    if (!ctx.canAct) return null;
    if ((r.state === 'failed' || r.state === 'cancelled') && !r.origin)
      return h(
        'button',
        {
          class: 'btn btn-small',
          type: 'button',
          'data-action': 'retry',
          onclick: async () => {
            if (
              await ctx.act(
                () => post(`/runs/${encodeURIComponent(r.id)}/retry`),
                () => `Run ${r.id} queued again`,
              )
            )
              void load();
          },
        },
        'Retry',
      );
    if (r.state === 'queued' || r.state === 'scheduled' || r.state === 'active')
      return h(
        'button',
        {
          class: 'btn btn-small btn-danger-quiet',
          type: 'button',
          'data-action': 'cancel',
          onclick: async () => {
            const ok = await ctx.confirm({
              title: 'Cancel this run?',
              body: h(
                'p',
                null,
                h('code', null, r.id),
                r.state === 'active' ? ' is running: its worker is told to stop it.' : ' will not start.',
              ),
              confirmLabel: 'Cancel run',
              dismissLabel: 'Keep run',
              danger: true,
            });
            if (
              ok &&
              (await ctx.act(
                () => post(`/runs/${encodeURIComponent(r.id)}/cancel`),
                () => `Run ${r.id} cancelled`,
              ))
            )
              void load();
          },
        },
        'Cancel',
      );
    return null;
  };

  const when = (r: RunSummary, now: number): HTMLElement => {
    if (r.state === 'scheduled' && r.runAt !== undefined) return h('span', { title: fullTime(r.runAt) }, `due ${ago(r.runAt, now)}`);
    if (r.finishedAt !== undefined && r.startedAt !== undefined)
      return h(
        'span',
        { title: `started ${fullTime(r.startedAt)}\nfinished ${fullTime(r.finishedAt)}` },
        duration(r.finishedAt - r.startedAt),
      );
    if (r.state === 'active' && r.startedAt !== undefined)
      return h('span', { title: `started ${fullTime(r.startedAt)}` }, `running ${duration(now - r.startedAt)}`);
    return h('span', { class: 'muted' }, '–');
  };

  const table = (data: RunList): HTMLElement => {
    if (!data.runs.length)
      return h(
        'div',
        { class: 'empty' },
        filters.id
          ? `No run with id ${filters.id}.`
          : filters.queue || filters.task || filters.state
            ? 'No run matches these filters.'
            : 'No run yet: enqueue one and it shows here.',
      );
    const now = Date.now();
    return h(
      'div',
      { class: 'table-scroll' },
      h(
        'table',
        { class: 'table runs' },
        h(
          'thead',
          null,
          h(
            'tr',
            null,
            h('th', { class: 'col-id' }, 'Run'),
            h('th', { class: 'col-task' }, 'Task'),
            h('th', { class: 'col-queue' }, 'Queue'),
            h('th', { class: 'col-state' }, 'State'),
            h('th', { class: 'num col-attempts', title: 'Attempts' }, 'Att.'),
            h('th', { class: 'col-time' }, 'Enqueued'),
            h('th', { class: 'col-time col-ran' }, 'Ran / due'),
            h('th', { class: 'col-error' }, 'Error'),
            ctx.canAct ? h('th', { class: 'col-row-actions' }, '') : null,
          ),
        ),
        h(
          'tbody',
          null,
          ...data.runs.map((r) =>
            h(
              'tr',
              { 'data-run': r.id, 'data-state': r.state },
              h('td', { class: 'col-id' }, link(`${ROOT}/runs/${encodeURIComponent(r.id)}`, trunc(r.id, 'mono'))),
              h('td', { class: 'col-task' }, trunc(r.task)),
              h('td', { class: 'col-queue' }, trunc(r.queue)),
              h('td', { class: 'col-state' }, stateBadge(r.state)),
              h('td', { class: 'num col-attempts' }, String(r.attempts)),
              h('td', { class: 'col-time nowrap', title: fullTime(r.enqueuedAt) }, time(r.enqueuedAt, now)),
              h('td', { class: 'col-time col-ran nowrap' }, when(r, now)),
              h('td', { class: 'col-error' }, r.error ? trunc(r.error, 'error-text') : ''),
              ctx.canAct ? h('td', { class: 'col-row-actions' }, rowActions(r)) : null,
            ),
          ),
        ),
      ),
    );
  };

  // Paging from the bottom of a long page: show the new page from its first row.
  const toTop = () => {
    if (list.getBoundingClientRect().top < 0) window.scrollTo(0, 0);
  };

  const renderPager = (data: RunList) => {
    const from = stack.length * filters.limit + (data.runs.length ? 1 : 0);
    const to = stack.length * filters.limit + data.runs.length;
    const of = data.total === null ? '' : ` of ${num(data.total)}`;
    replace(
      pager,
      h('span', { class: 'muted', 'data-testid': 'range' }, data.runs.length ? `${num(from)}–${num(to)}${of}` : `0${of}`),
      h(
        'button',
        {
          class: 'btn',
          type: 'button',
          disabled: stack.length === 0,
          'data-action': 'newer',
          onclick: () => {
            cursor = stack.pop() ?? '';
            void load().then(toTop);
          },
        },
        '← Newer',
      ),
      h(
        'button',
        {
          class: 'btn',
          type: 'button',
          disabled: !data.next,
          'data-action': 'older',
          onclick: () => {
            if (!data.next) return;
            stack.push(cursor);
            cursor = data.next;
            void load().then(toTop);
          },
        },
        'Older →',
      ),
    );
  };

  const renderBulk = (data: RunList) => {
    replace(bulk);
    if (!ctx.canAct || filters.state !== 'failed' || filters.id || !data.runs.length) return;
    const scope = `${filters.queue ? `queue ${filters.queue}` : 'every queue'}${filters.task ? `, task ${filters.task}` : ''}`;
    bulk.append(
      h(
        'button',
        {
          class: 'btn',
          type: 'button',
          'data-action': 'retry-all',
          onclick: async () => {
            const ok = await ctx.confirm({
              title: 'Retry every failed run?',
              body: `Every failed run of ${scope}${data.total !== null ? ` (${num(data.total)})` : ''} goes back to its queue with its attempts reset.`,
              confirmLabel: 'Retry all',
            });
            if (!ok) return;
            const body: Record<string, string> = {};
            if (filters.queue) body.queue = filters.queue;
            if (filters.task) body.task = filters.task;
            const r = await ctx.act(
              () => post<{ retried: number }>('/retry-failed', body),
              (x) => `${plural(x.retried, 'failed run')} queued again`,
            );
            if (r) void load();
          },
        },
        `Retry all failed (${scope})`,
      ),
    );
  };

  async function load(quiet = false): Promise<void> {
    const seq = ++loadSeq;
    const p = new URLSearchParams();
    if (filters.id) p.set('id', filters.id);
    else {
      if (filters.queue) p.set('queue', filters.queue);
      if (filters.task) p.set('task', filters.task);
      if (filters.state) p.set('state', filters.state);
      if (cursor) p.set('cursor', cursor);
    }
    p.set('limit', String(filters.limit));
    if (!quiet) list.setAttribute('aria-busy', 'true');
    try {
      const data = await get<RunList>(`/runs?${p.toString()}`);
      if (seq !== loadSeq) return;
      current = data;
      const key = JSON.stringify(data);
      if (key === lastKey && quiet) return;
      lastKey = key;
      replace(list, table(data));
      renderPager(data);
      renderBulk(data);
    } catch (err) {
      if (seq !== loadSeq) return;
      if (!quiet) {
        lastKey = '';
        replace(list, errorBox(err));
        replace(pager);
      }
    } finally {
      list.removeAttribute('aria-busy');
    }
  }

  syncInputs();
  replace(list, h('div', { class: 'empty' }, 'Loading…'));
  void load();

  return {
    el,
    tick(o) {
      fillQueues(o);
      // Only the first page moves: older pages stay still while you read them.
      if (!cursor && !filters.id && current) void load(true);
    },
  };
}
