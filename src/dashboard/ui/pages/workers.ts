// Workers: every process that heartbeats, its queues and load; lost ones (silent past their TTL) flagged.
import type { WorkerJson, WorkerList } from '../../api-types.ts';
import { ApiError, get } from '../api.ts';
import { type Ctx, errorBox, type Page } from '../app.ts';
import { h, replace, trunc } from '../dom.ts';
import { duration, fullTime, num, time } from '../format.ts';

export function workersPage(_ctx: Ctx): Page {
  const list = h('div', { class: 'card table-card' }, h('div', { class: 'empty' }, 'Loading…'));
  const summary = h('p', { class: 'muted small' });
  const el = h('div', { class: 'page' }, h('header', { class: 'page-head' }, h('h1', null, 'Workers'), summary), list);
  let loading = false;

  const row = (w: WorkerJson, now: number) => {
    const load = w.concurrency ? w.active / w.concurrency : 0;
    const fill = h('div', { class: 'load-bar' });
    fill.style.width = `${Math.round(Math.min(1, load) * 100)}%`;
    return h(
      'tr',
      { 'data-worker': w.id, class: w.lost ? 'lost' : '' },
      h('td', { class: 'col-worker' }, trunc(w.id, 'mono')),
      h('td', null, w.lost ? h('span', { class: 'badge lost' }, 'lost') : h('span', { class: 'badge alive' }, 'alive')),
      h('td', { class: 'col-host' }, trunc(w.host)),
      h('td', { class: 'num' }, String(w.pid)),
      h('td', { class: 'col-queues' }, trunc(w.queues.join(', '))),
      h(
        'td',
        { class: 'nowrap' },
        h('div', { class: 'load', title: `${w.active} of ${w.concurrency} slots busy` }, fill),
        h('span', { class: 'small' }, `${num(w.active)} / ${num(w.concurrency)}`),
      ),
      h(
        'td',
        {
          class: `nowrap ${w.lost ? 'bad' : ''}`,
          title: `last heartbeat ${fullTime(w.lastSeen)}; lost after ${duration(w.ttlMs)} of silence`,
        },
        duration(w.heartbeatAgeMs),
      ),
      h(
        'td',
        { class: 'col-started', title: fullTime(w.startedAt) },
        time(w.startedAt, now),
        h(
          'span',
          { class: 'muted small' },
          w.lost ? ` · ran ${duration(w.lastSeen - w.startedAt)}` : ` · up ${duration(now - w.startedAt)}`,
        ),
      ),
    );
  };

  async function load() {
    if (loading) return;
    loading = true;
    try {
      const data = await get<WorkerList>('/workers');
      const lost = data.workers.filter((w) => w.lost).length;
      summary.textContent = `${num(data.workers.length - lost)} alive${lost ? `, ${num(lost)} lost (no heartbeat within their TTL)` : ''}. Workers seen in the last hour.`;
      if (!data.workers.length) {
        replace(list, h('div', { class: 'empty' }, 'No worker has reported in the last hour. Start one with `errand worker <module>`.'));
        return;
      }
      replace(
        list,
        h(
          'div',
          { class: 'table-scroll' },
          h(
            'table',
            { class: 'table workers' },
            h(
              'thead',
              null,
              h(
                'tr',
                null,
                h('th', { class: 'col-worker' }, 'Worker'),
                h('th', { class: 'col-status' }, 'Status'),
                h('th', { class: 'col-host' }, 'Host'),
                h('th', { class: 'num col-pid' }, 'PID'),
                h('th', { class: 'col-queues' }, 'Queues'),
                h('th', { class: 'col-active' }, 'Active'),
                h('th', { class: 'col-heartbeat', title: 'Time since the last heartbeat' }, 'Heartbeat'),
                h('th', { class: 'col-started' }, 'Started'),
              ),
            ),
            h('tbody', null, ...data.workers.map((w) => row(w, data.now))),
          ),
        ),
      );
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) replace(list, errorBox(err));
    } finally {
      loading = false;
    }
  }
  void load();
  return { el, tick: () => void load() };
}
