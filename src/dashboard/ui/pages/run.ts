// One run: what it was asked to do, what came of it, every attempt and a timeline. Live until it finishes.
import type { RunDetail, RunError } from '../../api-types.ts';
import { ApiError, get, post } from '../api.ts';
import { type Ctx, errorBox, type Page, stateBadge } from '../app.ts';
import { type Child, h, link, replace, trunc } from '../dom.ts';
import { ago, duration, fullTime, json, time } from '../format.ts';
import { ROOT } from '../base.ts';

const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);

function fact(label: string, value: Child, title?: string): HTMLElement[] {
  return [h('dt', null, label), h('dd', { title }, value ?? '–')];
}

function errorBlock(e: RunError): HTMLElement {
  return h(
    'div',
    { class: 'run-error' },
    h(
      'div',
      { class: 'run-error-head' },
      h('strong', null, e.name),
      ': ',
      e.message,
      e.reason ? h('span', { class: 'badge reason' }, e.reason) : null,
    ),
    e.stack ? h('pre', { class: 'code stack' }, e.stack) : h('p', { class: 'muted small' }, 'No stack was recorded.'),
  );
}

function progressBlock(progress: unknown): HTMLElement {
  // A number from 0 to 1 (or 0 to 100), or { percent } / { done, total }, shows as a bar too.
  let fraction: number | null = null;
  if (typeof progress === 'number') fraction = progress <= 1 ? progress : progress / 100;
  else if (progress && typeof progress === 'object') {
    const p = progress as Record<string, unknown>;
    if (typeof p.percent === 'number') fraction = p.percent / 100;
    else if (typeof p.done === 'number' && typeof p.total === 'number' && p.total > 0) fraction = p.done / p.total;
  }
  let bar: HTMLElement | null = null;
  if (fraction !== null && Number.isFinite(fraction)) {
    const pct = Math.round(Math.min(1, Math.max(0, fraction)) * 100);
    const fill = h('div', { class: 'progress-bar' });
    fill.style.width = `${pct}%`; // CSSOM, which the content security policy allows (a style attribute it would not)
    bar = h('div', { class: 'progress', role: 'progressbar', 'aria-valuenow': pct, 'aria-valuemin': 0, 'aria-valuemax': 100 }, fill);
  }
  return h('div', null, bar, h('pre', { class: 'code' }, json(progress)));
}

export function runPage(ctx: Ctx, id: string): Page {
  const body = h('div', { class: 'run-body' }, h('div', { class: 'empty' }, 'Loading…'));
  const el = h('div', { class: 'page' }, h('nav', { class: 'crumbs' }, link(`${ROOT}/runs`, '← Runs')), body);
  let lastKey = '';
  let loading = false;

  const actions = (r: RunDetail): HTMLElement | null => {
    if (!ctx.canAct) return null;
    const buttons: HTMLElement[] = [];
    // A record of a task that ran elsewhere (a Celery task) is replayed where it ran, not here.
    if ((r.state === 'failed' || r.state === 'cancelled') && !r.origin)
      buttons.push(
        h(
          'button',
          {
            class: 'btn btn-primary',
            type: 'button',
            'data-action': 'retry',
            onclick: async () => {
              if (
                await ctx.act(
                  () => post(`/runs/${encodeURIComponent(r.id)}/retry`),
                  () => 'Run queued again',
                )
              )
                void load();
            },
          },
          'Retry',
        ),
      );
    if (!FINISHED.has(r.state))
      buttons.push(
        h(
          'button',
          {
            class: 'btn btn-danger-quiet',
            type: 'button',
            'data-action': 'cancel',
            onclick: async () => {
              const ok = await ctx.confirm({
                title: 'Cancel this run?',
                body: r.state === 'active' ? 'It is running: its worker is told to stop it.' : 'It will not start.',
                confirmLabel: 'Cancel run',
                dismissLabel: 'Keep run',
                danger: true,
              });
              if (
                ok &&
                (await ctx.act(
                  () => post(`/runs/${encodeURIComponent(r.id)}/cancel`),
                  () => 'Run cancelled',
                ))
              )
                void load();
            },
          },
          'Cancel',
        ),
      );
    return buttons.length ? h('div', { class: 'head-actions' }, ...buttons) : null;
  };

  const render = (r: RunDetail) => {
    const now = Date.now();
    const ran = r.startedAt !== undefined ? (r.finishedAt ?? now) - r.startedAt : undefined;
    const head = h(
      'header',
      { class: 'page-head run-head' },
      h('div', { class: 'run-title' }, h('h1', { class: 'mono trunc', title: r.id }, r.id), stateBadge(r.state)),
      actions(r),
    );
    const facts = h(
      'dl',
      { class: 'facts card' },
      ...fact('Task', trunc(r.task)),
      ...(r.workflow ? fact('Workflow', link(`${ROOT}/workflows/${encodeURIComponent(r.workflow)}`, trunc(r.workflow, 'mono'))) : []),
      ...fact('Queue', link(`${ROOT}/runs?queue=${encodeURIComponent(r.queue)}`, r.queue)),
      ...fact('Enqueued', `${time(r.enqueuedAt, now)} (${ago(r.enqueuedAt, now)})`, fullTime(r.enqueuedAt)),
      ...(r.runAt !== undefined ? fact('Due', `${time(r.runAt, now)} (${ago(r.runAt, now)})`, fullTime(r.runAt)) : []),
      ...fact('Started', r.startedAt !== undefined ? time(r.startedAt, now) : '–', fullTime(r.startedAt)),
      ...fact('Finished', r.finishedAt !== undefined ? time(r.finishedAt, now) : '–', fullTime(r.finishedAt)),
      ...fact(FINISHED.has(r.state) ? 'Last attempt took' : 'Running for', ran !== undefined ? duration(ran) : '–'),
      ...fact('Attempts', String(r.attempts)),
      ...fact('Lease losses', String(r.leaseLosses)),
      ...fact('Priority', String(r.priority)),
      ...fact('Worker', r.worker ? trunc(r.worker, 'mono') : '–'),
      ...(r.idempotencyKey ? fact('Idempotency key', trunc(r.idempotencyKey, 'mono')) : []),
      ...(r.origin ? fact('Ran in', `${r.origin} (recorded here when it ended)`) : []),
      ...(r.traceparent ? fact('Trace', trunc(r.traceparent, 'mono')) : []),
      ...(r.schedule
        ? fact(
            'Schedule',
            `${r.schedule.id}, fire time ${time(r.schedule.at, now)}${r.schedule.backfilled ? ' (backfilled)' : ''}`,
            fullTime(r.schedule.at),
          )
        : []),
      ...(r.startBy !== undefined ? fact('Start by', `${time(r.startBy, now)} (${ago(r.startBy, now)})`, fullTime(r.startBy)) : []),
      ...(r.expiresAt !== undefined ? fact('Deleted', ago(r.expiresAt, now), `after its retention, at ${fullTime(r.expiresAt)}`) : []),
    );
    const sections: Child[] = [];
    if (r.corrupt?.length)
      sections.push(h('div', { class: 'error-box' }, `Stored JSON could not be read for: ${r.corrupt.join(', ')}. The raw text is shown.`));
    if (r.runError) sections.push(h('section', { class: 'card' }, h('h2', null, 'Error'), errorBlock(r.runError)));
    if (r.progress !== undefined) sections.push(h('section', { class: 'card' }, h('h2', null, 'Progress'), progressBlock(r.progress)));
    if (r.result !== undefined)
      sections.push(h('section', { class: 'card' }, h('h2', null, 'Result'), h('pre', { class: 'code' }, json(r.result))));
    sections.push(h('section', { class: 'card' }, h('h2', null, 'Input'), h('pre', { class: 'code' }, json(r.input))));

    const attempts = h(
      'section',
      { class: 'card table-card' },
      h('h2', null, 'Attempts'),
      r.history.length
        ? h(
            'div',
            { class: 'table-scroll' },
            h(
              'table',
              { class: 'table attempts' },
              h(
                'thead',
                null,
                h(
                  'tr',
                  null,
                  h('th', null, '#'),
                  h('th', null, 'Worker'),
                  h('th', { class: 'col-started' }, 'Started'),
                  h('th', { class: 'col-duration' }, 'Duration'),
                  h('th', { class: 'col-outcome' }, 'Outcome'),
                  h('th', null, 'Error'),
                ),
              ),
              h(
                'tbody',
                null,
                ...r.history.map((a) =>
                  h(
                    'tr',
                    { 'data-attempt': a.attempt },
                    h('td', { class: 'num' }, String(a.attempt)),
                    h('td', { class: 'col-worker' }, trunc(a.worker, 'mono')),
                    h('td', { class: 'nowrap', title: fullTime(a.startedAt) }, time(a.startedAt, now)),
                    h(
                      'td',
                      { class: 'nowrap' },
                      a.durationMs !== undefined
                        ? duration(a.durationMs)
                        : h('span', { class: 'muted' }, `running ${duration(now - a.startedAt)}`),
                    ),
                    h(
                      'td',
                      null,
                      a.outcome
                        ? h('span', { class: `badge outcome-${a.outcome}` }, a.outcome)
                        : h('span', { class: 'badge state-active' }, 'running'),
                    ),
                    h('td', { class: 'col-error' }, a.error ? trunc(`${a.error.name}: ${a.error.message}`, 'error-text') : ''),
                  ),
                ),
              ),
            ),
          )
        : h(
            'div',
            { class: 'empty' },
            // A run that finished without an attempt will never have one (cancelled or expired while it waited).
            r.state === 'cancelled'
              ? 'None: it was cancelled before it started.'
              : r.state === 'failed'
                ? 'None: it failed before it started (see its error).'
                : r.state === 'succeeded'
                  ? 'None recorded.'
                  : 'Not started yet.',
          ),
    );
    const timeline = h(
      'section',
      { class: 'card' },
      h('h2', null, 'Timeline'),
      h(
        'ol',
        { class: 'timeline' },
        ...r.timeline.map((e) =>
          h(
            'li',
            { class: `tl tl-${e.kind} ${e.at > now ? 'tl-future' : ''}` },
            h('time', { title: fullTime(e.at) }, time(e.at, now)),
            h(
              'div',
              null,
              h('div', { class: 'tl-label' }, e.label),
              e.detail ? h('div', { class: 'tl-detail trunc', title: e.detail }, e.detail) : null,
            ),
          ),
        ),
      ),
    );
    replace(
      body,
      head,
      h(
        'div',
        { class: 'run-grid' },
        h('div', { class: 'run-main' }, ...sections, attempts),
        h('div', { class: 'run-side' }, facts, timeline),
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
      const r = await get<RunDetail>(`/runs/${encodeURIComponent(id)}`);
      const key = JSON.stringify(r);
      if (key !== lastKey || !FINISHED.has(r.state)) {
        lastKey = key;
        render(r);
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
      // Re-read every tick: cheap, and a finished run can be retried from elsewhere.
      void load();
    },
  };
}
