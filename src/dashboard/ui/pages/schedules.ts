// Schedules: every stored schedule, its state, next fire times, last run, fires and misses; for those
// who may act: new, edit, pause, resume, run now, backfill and delete (the dialogs: schedule-form.ts).
import type { ScheduleJson, ScheduleList } from '../../api-types.ts';
import { ApiError, get, post } from '../api.ts';
import { type Ctx, errorBox, type Page } from '../app.ts';
import { h, link, replace, trunc } from '../dom.ts';
import { ago, fullTime, num, plural, time } from '../format.ts';
import { ROOT } from '../base.ts';
import { backfillForm, scheduleForm, type TaskChoice } from './schedule-form.ts';

export function schedulesPage(ctx: Ctx): Page {
  const list = h('div', { class: 'card table-card' }, h('div', { class: 'empty' }, 'Loading…'));
  const summary = h('p', { class: 'muted small' });
  let tasks: TaskChoice[] = [];
  const create = ctx.canAct
    ? h(
        'button',
        {
          class: 'btn btn-primary',
          type: 'button',
          'data-action': 'new',
          onclick: async () => {
            if (await scheduleForm(ctx, tasks)) void load();
          },
        },
        'New schedule',
      )
    : null;
  const el = h(
    'div',
    { class: 'page' },
    h('header', { class: 'page-head' }, h('div', null, h('h1', null, 'Schedules'), summary), create),
    list,
  );
  let loading = false;
  let loadedAt = 0;

  const button = (s: ScheduleJson, verb: 'pause' | 'resume' | 'trigger', label: string, title: string) =>
    h(
      'button',
      {
        class: 'btn btn-small',
        type: 'button',
        'data-action': verb,
        title,
        onclick: async () => {
          const r = await ctx.act(
            () => post<{ runId?: string }>(`/schedules/${encodeURIComponent(s.queue)}/${encodeURIComponent(s.id)}/${verb}`),
            (x) => (verb === 'trigger' ? `Run ${x.runId} created` : `Schedule ${s.id} ${verb}d`),
          );
          if (r) void load();
        },
      },
      label,
    );

  const row = (s: ScheduleJson, now: number) =>
    h(
      'tr',
      { 'data-schedule': `${s.queue}/${s.id}` },
      h('td', { class: 'col-schedule' }, trunc(s.id, 'mono')),
      h('td', null, link(`${ROOT}/runs?queue=${encodeURIComponent(s.queue)}`, s.queue)),
      h('td', { class: 'col-task' }, trunc(s.task)),
      h('td', null, h('span', { class: `badge ${s.state === 'active' ? 'alive' : 'lost'}` }, s.state)),
      h('td', { class: 'col-when mono small' }, s.when),
      h(
        'td',
        { class: 'nowrap', title: s.upcoming.map((t) => fullTime(t)).join('\n') },
        s.next === null ? '–' : `${time(s.next, now)} (${ago(s.next, now)})`,
      ),
      h(
        'td',
        { class: 'nowrap' },
        s.lastRun ? link(`${ROOT}/runs/${encodeURIComponent(s.lastRun)}`, s.lastFire !== undefined ? time(s.lastFire, now) : 'run') : '–',
      ),
      h('td', { class: 'num' }, num(s.fires)),
      h('td', { class: `num ${s.missed ? 'bad' : ''}` }, num(s.missed)),
      h(
        'td',
        { class: 'col-row-actions' },
        ctx.canAct
          ? h(
              'div',
              { class: 'row-actions' },
              s.state === 'paused'
                ? button(s, 'resume', 'Resume', 'Fire again (the times passed are handled by the missed-fire policy)')
                : button(s, 'pause', 'Pause', 'No fires until resumed'),
              button(s, 'trigger', 'Run now', 'One run now, outside the fire times'),
              h(
                'button',
                {
                  class: 'btn btn-small',
                  type: 'button',
                  'data-action': 'edit',
                  title: 'Change the task, times, input or policies',
                  onclick: async () => {
                    if (await scheduleForm(ctx, tasks, s)) void load();
                  },
                },
                'Edit',
              ),
              h(
                'button',
                {
                  class: 'btn btn-small',
                  type: 'button',
                  'data-action': 'backfill',
                  title: 'A run for each fire time of a past range that has none',
                  onclick: async () => {
                    if (await backfillForm(ctx, s)) void load();
                  },
                },
                'Backfill',
              ),
              h(
                'button',
                {
                  class: 'btn btn-small btn-danger-quiet',
                  type: 'button',
                  'data-action': 'delete',
                  title: 'Delete the schedule (its runs stay)',
                  onclick: async () => {
                    const ok = await ctx.confirm({
                      title: `Delete schedule ${s.id}?`,
                      body: 'No more fires. Its runs stay. A schedule declared in code is stored again by the next worker that starts.',
                      confirmLabel: 'Delete',
                      danger: true,
                      typeToConfirm: s.id,
                    });
                    if (!ok) return;
                    const r = await ctx.act(
                      () => post(`/schedules/${encodeURIComponent(s.queue)}/${encodeURIComponent(s.id)}/delete`, { confirm: s.id }),
                      () => `Schedule ${s.id} deleted`,
                    );
                    if (r) void load();
                  },
                },
                'Delete',
              ),
            )
          : null,
      ),
    );

  async function load() {
    if (loading) return;
    loading = true;
    loadedAt = Date.now();
    try {
      const data = await get<ScheduleList>('/schedules');
      tasks = data.tasks ?? [];
      const paused = data.schedules.filter((s) => s.state === 'paused').length;
      const missed = data.schedules.reduce((n, s) => n + s.missed, 0);
      summary.textContent = `${plural(data.schedules.length, 'schedule')}${paused ? `, ${num(paused)} paused` : ''}${missed ? `; ${plural(missed, 'fire time')} missed in all` : ''}. Each fire time runs once, whatever the number of workers.`;
      if (!data.schedules.length) {
        replace(
          list,
          h(
            'div',
            { class: 'empty' },
            ctx.canAct
              ? 'No schedules. Create one with New schedule, declare one beside its task with errand.schedule(...), or PUT /schedules/{id}.'
              : 'No schedules. Declare one beside its task with errand.schedule(...), or PUT /schedules/{id}.',
          ),
        );
        return;
      }
      replace(
        list,
        h(
          'div',
          { class: 'table-scroll' },
          h(
            'table',
            { class: 'table schedules' },
            h(
              'thead',
              null,
              h(
                'tr',
                null,
                h('th', null, 'Schedule'),
                h('th', null, 'Queue'),
                h('th', null, 'Task'),
                h('th', null, 'State'),
                h('th', null, 'When'),
                h('th', { title: 'Hover for the next five' }, 'Next fire'),
                h('th', null, 'Last run'),
                h('th', { class: 'num' }, 'Fires'),
                h('th', { class: 'num', title: 'Fire times given up (missed-fire and overlap policies)' }, 'Missed'),
                h('th', null, ''),
              ),
            ),
            h('tbody', null, ...data.schedules.map((s) => row(s, data.now))),
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
  // The overview ticks every few seconds: the list is read again at most every 10 s.
  return { el, tick: () => (Date.now() - loadedAt >= 10_000 ? void load() : undefined) };
}
