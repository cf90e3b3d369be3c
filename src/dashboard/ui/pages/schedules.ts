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

  /** The spec in words, its time zone on a line of its own: `cron 0 3 * * *` over `Europe/Paris`. */
  const whenCell = (s: ScheduleJson) => {
    const zone = typeof s.spec.timezone === 'string' ? s.spec.timezone : '';
    if (!zone || !s.when.endsWith(` ${zone}`)) return trunc(s.when);
    // The space keeps the cell's text whole for a screen reader or a copy: `cron 0 3 * * * Europe/Paris`.
    return [trunc(s.when.slice(0, -zone.length - 1)), ' ', trunc(zone, 'muted')];
  };

  const row = (s: ScheduleJson, now: number) =>
    h(
      'tr',
      { 'data-schedule': `${s.queue}/${s.id}` },
      // The queue under the id: a schedule's id is unique within its queue.
      h(
        'td',
        { class: 'col-schedule' },
        trunc(s.id, 'mono'),
        h(
          'span',
          { class: 'trunc small muted', title: `queue ${s.queue}` },
          'queue ',
          link(`${ROOT}/runs?queue=${encodeURIComponent(s.queue)}`, s.queue),
        ),
      ),
      h('td', { class: 'col-task' }, trunc(s.task)),
      h('td', null, h('span', { class: `badge ${s.state === 'active' ? 'alive' : 'lost'}` }, s.state)),
      h('td', { class: 'col-when mono small' }, whenCell(s)),
      h(
        'td',
        { class: 'col-time', title: s.upcoming.map((t) => fullTime(t)).join('\n') },
        s.next === null ? '–' : [time(s.next, now), ' ', h('span', { class: 'sub' }, ago(s.next, now))],
      ),
      h(
        'td',
        { class: 'col-time', title: s.lastFire !== undefined ? fullTime(s.lastFire) : undefined },
        s.lastRun
          ? [
              link(`${ROOT}/runs/${encodeURIComponent(s.lastRun)}`, s.lastFire !== undefined ? time(s.lastFire, now) : 'run'),
              s.lastFire !== undefined ? [' ', h('span', { class: 'sub' }, ago(s.lastFire, now))] : null,
            ]
          : '–',
      ),
      h('td', { class: 'num' }, num(s.fires)),
      h('td', { class: `num ${s.missed ? 'bad' : ''}` }, num(s.missed)),
      ctx.canAct &&
        h(
          'td',
          { class: 'col-row-actions' },
          h(
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
          ),
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
                h('th', { class: 'col-schedule' }, 'Schedule'),
                h('th', { class: 'col-task' }, 'Task'),
                h('th', { class: 'col-state' }, 'State'),
                h('th', { class: 'col-when' }, 'When'),
                h('th', { class: 'col-time', title: 'Hover for the next five' }, 'Next fire'),
                h('th', { class: 'col-time' }, 'Last run'),
                h('th', { class: 'num col-count' }, 'Fires'),
                h('th', { class: 'num col-count', title: 'Fire times given up (missed-fire and overlap policies)' }, 'Missed'),
                ctx.canAct ? h('th', { class: 'col-row-actions' }, '') : null,
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
