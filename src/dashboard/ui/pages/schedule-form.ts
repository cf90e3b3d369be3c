// The schedule dialogs of the Schedules page: create or edit a schedule (task, cron or interval,
// zone, start and end, input JSON, policies), and backfill a range. What the browser can check is
// checked before sending (each field's problem shown beside the form); the server checks the rest
// as HTTP PUT /schedules/{id} does (the spec, the zone, the input against the task's schema) and its
// answer is shown in the form, which stays open with what was typed.
import type { ScheduleJson } from '../../api-types.ts';
import { ApiError, post } from '../api.ts';
import { type Ctx, showModal } from '../app.ts';
import { type Child, h } from '../dom.ts';
import { plural } from '../format.ts';

export interface TaskChoice {
  name: string;
  queue: string;
}

/**
 * Opens a dialog around `fields`; resolves when it is closed. `submit` returns true to close. The
 * fields scroll between the title and the buttons when the window is too short for them all; the
 * form's error shows above the buttons.
 */
function modal(title: string, fields: Child, submitLabel: string, submit: (error: (m: string) => void) => Promise<boolean>) {
  return new Promise<boolean>((resolve) => {
    const error = h('p', { class: 'form-error', role: 'alert', 'data-form-error': true });
    const ok = h('button', { type: 'submit', class: 'btn btn-primary' }, submitLabel);
    const cancel = h('button', { type: 'button', class: 'btn' }, 'Cancel');
    const form = h(
      'form',
      { class: 'dialog-body', novalidate: true },
      h('h2', null, title),
      h('div', { class: 'dialog-scroll' }, fields),
      error,
      h('div', { class: 'dialog-actions' }, cancel, ok),
    );
    const dialog = h('dialog', { class: 'dialog dialog-wide' }, form);
    let done = false;
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      error.textContent = '';
      ok.disabled = true;
      try {
        if (await submit((m) => (error.textContent = m))) {
          done = true;
          dialog.close();
        }
      } finally {
        ok.disabled = false;
      }
    });
    cancel.addEventListener('click', () => dialog.close());
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(done);
    });
    showModal(dialog);
    (form.querySelector('input:not([disabled]), select, textarea') as HTMLElement | null)?.focus();
  });
}

const field = (label: string, control: HTMLElement, hint?: string) =>
  h('label', { class: 'field' }, h('span', null, label), control, hint ? h('span', { class: 'muted small' }, hint) : null);

const text = (name: string, value = '', placeholder = '') =>
  h('input', { type: 'text', class: 'input', name, value, placeholder, autocomplete: 'off', spellcheck: 'false' });

function choice(name: string, options: string[], value: string): HTMLSelectElement {
  const sel = h('select', { class: 'input', name }, ...options.map((o) => h('option', { value: o }, o)));
  sel.value = value;
  return sel;
}

/** An instant as stored (epoch ms) shown as ISO 8601; text as it is. */
function instantText(v: unknown): string {
  return typeof v === 'number' && Number.isFinite(v) ? new Date(v).toISOString() : typeof v === 'string' ? v : '';
}

/** Create (no `s`) or edit schedule `s`. Resolves to true when saved. */
export function scheduleForm(ctx: Ctx, tasks: TaskChoice[], s?: ScheduleJson): Promise<boolean> {
  const spec = s?.spec ?? {};
  const pol = s?.policies ?? {};
  const id = text('id', s?.id ?? '', 'nightly-report');
  if (s) id.disabled = true;
  const taskNames = tasks.map((t) => t.name);
  if (s && !taskNames.includes(s.task)) taskNames.unshift(s.task);
  const task = h(
    'select',
    { class: 'input', name: 'task' },
    h('option', { value: '' }, 'Choose a task'),
    ...taskNames.map((n) => {
      const q = tasks.find((t) => t.name === n)?.queue;
      return h('option', { value: n }, q ? `${n} (queue ${q})` : `${n} (not defined in this app)`);
    }),
  );
  task.value = s?.task ?? '';
  const kind = choice('kind', ['cron', 'every'], typeof spec.every === 'number' ? 'every' : 'cron');
  const when = text(
    'when',
    // an interval as the list shows it ("every 2h": 2h), not in ms
    typeof spec.every === 'number'
      ? (s?.when.replace(/^every /, '') ?? String(spec.every))
      : typeof spec.cron === 'string'
        ? spec.cron
        : '',
    '0 9 * * 1-5',
  );
  const zone = text('timezone', typeof spec.timezone === 'string' ? spec.timezone : '', 'UTC');
  const start = text('start', instantText(spec.start), '2026-01-01T00:00:00Z');
  const end = text('end', instantText(spec.end), '');
  const input = h('textarea', { class: 'input mono', name: 'input', rows: 3, spellcheck: 'false' });
  input.value = s && !s.inputRedacted ? JSON.stringify(s.input ?? null, null, 2) : '';
  const missed = choice('missed', ['latest', 'skip', 'all'], typeof pol.missed === 'string' ? pol.missed : 'latest');
  const overlap = choice('overlap', ['allow', 'skip', 'cancel', 'buffer'], typeof pol.overlap === 'string' ? pol.overlap : 'allow');
  const expire = text('expire', pol.expire === undefined ? 'never' : String(pol.expire), 'never, period or ms');
  const priority = text('priority', pol.priority === undefined ? '0' : String(pol.priority));
  const maxBackfill = text('maxBackfill', pol.maxBackfill === undefined ? '' : String(pol.maxBackfill), '100');
  const catchUp = text('catchUpMs', pol.catchUpMs === undefined ? '' : String(pol.catchUpMs), '60000');
  const placeholder = () => {
    when.placeholder = kind.value === 'cron' ? '0 9 * * 1-5' : '15m, 2h, or ms';
  };
  kind.addEventListener('change', placeholder);
  placeholder();

  const fields = h(
    'div',
    { class: 'form-grid' },
    field('Schedule id', id),
    field('Task', task),
    h(
      'div',
      { class: 'form-triple' },
      field('Kind', kind),
      field('Cron or interval', when),
      field('Time zone', zone, 'IANA name; default UTC'),
    ),
    h('div', { class: 'form-pair form-times' }, field('Start', start, 'optional, with Z or an offset'), field('End', end, 'optional')),
    field(
      'Input (JSON)',
      input,
      s?.inputRedacted
        ? 'The stored input has secret fields (shown nowhere): give the whole input again to save.'
        : 'JSON; leave it empty for no input (a task whose input may be absent)',
    ),
    h('div', { class: 'form-pair' }, field('Missed fires', missed), field('Overlap', overlap)),
    h('div', { class: 'form-pair' }, field('Expire', expire), field('Priority', priority)),
    h('div', { class: 'form-pair' }, field('Max backfill', maxBackfill), field('Catch-up (ms)', catchUp)),
  );

  return modal(s ? `Edit schedule ${s.id}` : 'New schedule', fields, 'Save', async (error) => {
    // What the browser can check; the server checks the rest and says what is wrong.
    const problems: string[] = [];
    const body: Record<string, unknown> = { id: id.value.trim(), task: task.value };
    if (!/^\S{1,128}$/.test(String(body.id))) problems.push('Schedule id: 1 to 128 characters without spaces');
    if (!task.value) problems.push('Task: choose one');
    const w = when.value.trim();
    if (!w) problems.push(`${kind.value === 'cron' ? 'Cron expression' : 'Interval'}: required`);
    else if (kind.value === 'cron') body.cron = w;
    else body.every = /^\d+$/.test(w) ? Number(w) : w;
    if (zone.value.trim()) body.timezone = zone.value.trim();
    for (const [el, key] of [
      [start, 'start'],
      [end, 'end'],
    ] as const) {
      const v = el.value.trim();
      if (v) body[key] = /^\d+$/.test(v) ? Number(v) : v;
    }
    const inputText = input.value.trim();
    if (inputText) {
      try {
        body.input = JSON.parse(inputText);
      } catch (err) {
        problems.push(`Input: not JSON (${(err as Error).message})`);
      }
    } else if (s?.inputRedacted) problems.push('Input: the stored one has secret fields; give the whole input again');
    body.missed = missed.value;
    body.overlap = overlap.value;
    const ex = expire.value.trim();
    if (ex === 'never' || ex === 'period') body.expire = ex;
    else if (/^\d+$/.test(ex)) body.expire = Number(ex);
    else problems.push('Expire: never, period, or a number of ms');
    for (const [el, key, label] of [
      [priority, 'priority', 'Priority'],
      [maxBackfill, 'maxBackfill', 'Max backfill'],
      [catchUp, 'catchUpMs', 'Catch-up'],
    ] as const) {
      const v = el.value.trim();
      if (!v) continue;
      if (/^-?\d+$/.test(v)) body[key] = Number(v);
      else problems.push(`${label}: a whole number`);
    }
    if (problems.length) {
      error(problems.join('. '));
      return false;
    }
    try {
      const r = await post<{ id: string; queue: string }>('/schedules/save', body);
      ctx.notify(`Schedule ${r.id} saved`);
      return true;
    } catch (err) {
      error(err instanceof ApiError ? err.message : String(err));
      return false;
    }
  });
}

/** Backfill schedule `s` over [from, to). Resolves to true when done. */
export function backfillForm(ctx: Ctx, s: ScheduleJson): Promise<boolean> {
  const hour = 3_600_000;
  const to = text('to', new Date(Math.floor(Date.now() / hour) * hour).toISOString());
  const from = text('from', new Date(Math.floor(Date.now() / hour) * hour - 24 * hour).toISOString());
  const fields = h(
    'div',
    null,
    h(
      'p',
      { class: 'dialog-text' },
      'A run, marked backfilled, for each fire time in [from, to) that has none yet (at most 1000). Safe to repeat: a time keeps its one run.',
    ),
    h('div', { class: 'form-pair form-times' }, field('From', from, 'ISO 8601 with Z or an offset'), field('To', to, 'at or before now')),
  );
  return modal(`Backfill ${s.id}`, fields, 'Backfill', async (error) => {
    const v = (el: HTMLInputElement) => {
      const t = el.value.trim();
      return /^\d+$/.test(t) ? Number(t) : t;
    };
    if (!from.value.trim() || !to.value.trim()) {
      error('From and To are required');
      return false;
    }
    try {
      const r = await post<{ created: number; existing: number; truncated: boolean }>(
        `/schedules/${encodeURIComponent(s.queue)}/${encodeURIComponent(s.id)}/backfill`,
        { from: v(from), to: v(to) },
      );
      ctx.notify(
        `${plural(r.created, 'run')} created, ${plural(r.existing, 'fire time')} already had ${r.existing === 1 ? 'its' : 'theirs'}${r.truncated ? ' (stopped at 1000: backfill again from the last one)' : ''}`,
      );
      return true;
    } catch (err) {
      error(err instanceof ApiError ? err.message : String(err));
      return false;
    }
  });
}
