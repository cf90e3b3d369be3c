/**
 * `errand schedules`: the stored schedules of a broker, and what can be done to them without the
 * app's code: list (state, next five fire times, last run, fires, misses), pause, resume, trigger,
 * backfill a range, delete. `--json` answers with the HTTP layer's schedule JSON.
 * Trigger and backfill of a task with flow-control limits need the app's task definition (a run's
 * key comes from its input by the task's code): given with `--app <module>` (loaded as `errand
 * worker` loads it); without it they refuse (ScheduleLimitsError, exit 2) rather than make runs
 * that escape the limits. See docs/cli.md.
 */
import { guardBroker } from '../broker/shared/guard.ts';
import { isScheduleVersion, SCHEDULE_VERSION_RULE } from '../broker/shared/schedules.ts';
import type { Broker } from '../broker/types.ts';
import { ConfigError, ScheduleLimitsError, ScheduleVersionError } from '../core/errors.ts';
import { redactValue } from '../core/redact.ts';
import { scheduleToJson } from '../http/schemas.ts';
import {
  backfillSchedule,
  checkNewScheduleId,
  type FlowOf,
  findSchedule,
  putSchedule,
  type ScheduleOptions,
  type ScheduleView,
  splitScheduleOptions,
  triggerSchedule,
  viewOf,
} from '../schedule/manage.ts';
import { limitsRecorded } from '../schedule/plan.ts';
import { intervalText, readInstant } from '../schedule/spec.ts';
import { CliError, HelpRequested, type Output, parse, redactPaths, usage, withBroker } from './admin-shared.ts';
import { clean, cut, relative, table, when } from './format.ts';
import { loadApp } from './load.ts';

export const SCHEDULES_USAGE = `  schedules [list]   Stored schedules: state, next fire times, last run, fires, misses
    --queue Q          of one queue
  schedules pause <id> | resume <id> | trigger <id> | delete <id>   (--queue Q when the id is in several queues)
  schedules backfill <id> --from T --to T   A run, marked backfilled, for each fire time in [from, to) without one; safe to repeat
    T: ISO 8601 with Z or an offset, or epoch ms
    trigger, backfill: --app <module>   the app's tasks (the module errand worker runs): needed when the task has
                       flow-control limits (its runs' keys come from the task's code); refused without it
  schedules set <id> --task T (--cron C | --every D)   Create or update a schedule (the whole definition, as HTTP PUT)
    --zone Z  --start T  --end T  --input JSON (default null)  --queue Q (needed to create: the task's queue)
    --missed skip|latest|all  --max-backfill N  --catch-up-ms N  --overlap allow|skip|cancel|buffer
    --expire period|never|MS  --priority N  --version N (0 to 2^53-1, default: now; a smaller one than stored is refused)
    The input is checked as JSON only: the CLI has no task definitions (HTTP PUT checks it against the task's schema)
`;

function json(v: ScheduleView, paths: readonly string[]) {
  let input: unknown = v.input;
  try {
    input = redactValue(JSON.parse(v.input), paths);
  } catch {
    // shown as stored
  }
  return scheduleToJson(v, input);
}

function specText(spec: string): string {
  try {
    const s = JSON.parse(spec) as { cron?: string; every?: number; timezone?: string };
    if (s.cron) return `cron ${s.cron}${s.timezone && s.timezone !== 'UTC' ? ` ${s.timezone}` : ''}`;
    if (typeof s.every === 'number') return `every ${intervalText(s.every)}`;
  } catch {
    // fall through
  }
  return cut(spec, 40);
}

function instant(v: string | boolean | undefined, flag: string): number {
  if (typeof v !== 'string') throw usage(`schedules backfill needs --${flag}`);
  // Read as every schedule instant is (readInstant); digits alone are epoch milliseconds.
  const r = readInstant(`--${flag}`, /^\d+$/.test(v) ? Number(v) : v);
  if ('error' in r) throw new CliError('usage', `--${flag}: ${JSON.stringify(cut(v, 60))} is not an instant: ${cut(r.error, 240)}`);
  return r.at;
}

export async function schedulesCommand(args: string[], out: Output): Promise<void> {
  const [first, ...rest] = args;
  if (first === '--help' || first === '-h') throw new HelpRequested();
  const action = first === undefined || first.startsWith('-') ? 'list' : first;
  const tail = action === 'list' && first !== 'list' ? args : rest;
  switch (action) {
    case 'list':
      return list(tail, out);
    case 'pause':
    case 'resume':
    case 'trigger':
    case 'delete':
    case 'backfill':
      return act(action, tail, out);
    case 'set':
      return set(tail, out);
    default:
      throw usage(`schedules ${JSON.stringify(cut(action, 40))}: expected list, set, pause, resume, trigger, backfill or delete`);
  }
}

async function list(args: string[], out: Output): Promise<void> {
  const { values } = parse(
    'schedules',
    args,
    { queue: { type: 'string' }, redact: { type: 'string' } },
    { min: 0, max: 0, what: 'no arguments' },
  );
  const paths = redactPaths(values);
  await withBroker(values, async (raw) => {
    const broker = guardBroker(raw);
    const views = (await broker.listSchedules(typeof values.queue === 'string' ? [values.queue] : undefined)).map(viewOf);
    if (out.json) return out.data({ schedules: views.map((v) => json(v, paths)) });
    if (!views.length) return out.text('No schedules stored on this broker.\n');
    const now = Date.now();
    out.text(
      table(
        ['QUEUE', 'ID', 'TASK', 'STATE', 'WHEN', 'NEXT', 'LAST RUN', 'FIRES', 'MISSED'],
        views.map((v) => [
          clean(v.queue),
          clean(v.id),
          clean(v.task),
          v.state,
          clean(specText(v.spec)),
          v.next === null ? '-' : relative(v.next, now),
          v.lastRun ? clean(v.lastRun) : '-',
          String(v.fires),
          String(v.missed),
        ]),
        new Set([7, 8]),
      ),
    );
    for (const v of views) {
      if (v.upcoming.length) out.text(`${clean(v.id)} next: ${v.upcoming.map((t) => new Date(t).toISOString()).join(', ')}\n`);
    }
  });
}

/**
 * Pauses, resumes or deletes the schedule `rec` was read from. One deleted by someone else since it
 * was read is not found (exit code 2, `schedule_not_found`), never reported as paused or deleted.
 */
export async function changeSchedule(
  broker: Broker,
  rec: { queue: string; id: string },
  action: 'pause' | 'resume' | 'delete',
  now: number,
): Promise<void> {
  const done =
    action === 'delete'
      ? await broker.deleteSchedule(rec.queue, rec.id)
      : await broker.pauseSchedule(rec.queue, rec.id, action === 'pause', now);
  if (!done) throw new CliError('schedule_not_found', `schedule ${JSON.stringify(cut(rec.id, 128))} not found (deleted since it was read)`);
}

/**
 * The flow specs of `--app <module>`'s tasks (null for a task it does not define), and the hint a
 * refusal gives; without `--app`, none (a task known to have limits is then refused).
 */
async function appFlows(
  module: string | undefined,
  id: string,
  action: string,
): Promise<{ flowOf?: FlowOf; hint: string; close(): Promise<void> }> {
  const withApp = `give the CLI the app that defines it, the module errand worker runs: errand schedules ${action} ${cut(id, 128)} --app <module> (or act from that app: its errand.${action}Schedule, HTTP routes or dashboard)`;
  if (module === undefined) return { hint: `To create them, ${withApp}.`, close: async () => {} };
  let app: Awaited<ReturnType<typeof loadApp>>;
  try {
    app = await loadApp(module);
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError('usage', `--app: ${err.message}`);
    throw err;
  }
  return {
    flowOf: (task, input) => {
      const t = app.tasks.get(task);
      return t ? t.flowOfStored(input) : null;
    },
    hint: `The app of ${cut(module, 200)} (--app) does not define it: ${withApp}.`,
    close: () => app.close(),
  };
}

async function act(action: 'pause' | 'resume' | 'trigger' | 'delete' | 'backfill', args: string[], out: Output): Promise<void> {
  const { values, positionals } = parse(
    `schedules ${action}`,
    args,
    { queue: { type: 'string' }, from: { type: 'string' }, to: { type: 'string' }, app: { type: 'string' } },
    { min: 1, max: 1, what: 'one schedule id' },
  );
  const id = positionals[0]!;
  if (values.app !== undefined && action !== 'trigger' && action !== 'backfill')
    throw usage(`schedules ${action}: --app is for trigger and backfill only`);
  const from = action === 'backfill' ? instant(values.from, 'from') : 0;
  const to = action === 'backfill' ? instant(values.to, 'to') : 0;
  const flows = await appFlows(typeof values.app === 'string' ? values.app : undefined, id, action);
  try {
    await withBroker(values, (raw) =>
      actOn(raw, action, id, typeof values.queue === 'string' ? values.queue : undefined, from, to, flows, out),
    );
  } catch (err) {
    if (err instanceof ScheduleLimitsError) throw new CliError('schedule_limits', err.message, { details: { task: err.task } });
    throw err;
  } finally {
    await flows.close();
  }
}

async function actOn(
  raw: Broker,
  action: 'pause' | 'resume' | 'trigger' | 'delete' | 'backfill',
  id: string,
  queue: string | undefined,
  from: number,
  to: number,
  flows: { flowOf?: FlowOf; hint: string },
  out: Output,
): Promise<void> {
  const broker: Broker = guardBroker(raw);
  const rec = await findSchedule(broker, id, queue);
  if (!rec) throw new CliError('schedule_not_found', `schedule ${JSON.stringify(cut(id, 128))} not found`);
  const now = Date.now();
  const base = { id: rec.id, queue: rec.queue };
  switch (action) {
    case 'pause':
    case 'resume': {
      await changeSchedule(broker, rec, action, now);
      if (out.json) return out.data({ ...base, paused: action === 'pause' });
      return out.text(action === 'pause' ? `Schedule ${clean(rec.id)} paused.\n` : `Schedule ${clean(rec.id)} resumed.\n`);
    }
    case 'delete': {
      await changeSchedule(broker, rec, action, now);
      if (out.json) return out.data({ ...base, deleted: true });
      return out.text(`Schedule ${clean(rec.id)} deleted (its runs stay).\n`);
    }
    case 'trigger': {
      const r = await triggerSchedule(broker, rec, now, flows.flowOf, flows.hint);
      if (out.json) return out.data({ ...base, run_id: r.id, status: r.state });
      return out.text(`Run ${r.id} created (${r.state}).\n`);
    }
    case 'backfill': {
      let r: Awaited<ReturnType<typeof backfillSchedule>>;
      try {
        r = await backfillSchedule(broker, rec, from, to, now, undefined, flows.flowOf, flows.hint);
      } catch (err) {
        if (err instanceof ConfigError && !(err instanceof ScheduleLimitsError)) throw new CliError('usage', err.message);
        throw err;
      }
      if (out.json) return out.data({ ...base, created: r.created, existing: r.existing, truncated: r.truncated });
      return out.text(
        `${r.times.length} fire time(s) from ${when(from, now)} to ${when(to, now)}: ${r.created} run(s) created, ${r.existing} already had theirs${r.truncated ? ' (stopped at 1000: run it again from the last one)' : ''}.\n`,
      );
    }
  }
}

/** `schedules set`: the options of HTTP PUT /schedules/{id}, from flags, checked by the same code. */
async function set(args: string[], out: Output): Promise<void> {
  const flags = {
    queue: { type: 'string' },
    task: { type: 'string' },
    cron: { type: 'string' },
    every: { type: 'string' },
    zone: { type: 'string' },
    start: { type: 'string' },
    end: { type: 'string' },
    input: { type: 'string' },
    missed: { type: 'string' },
    'max-backfill': { type: 'string' },
    'catch-up-ms': { type: 'string' },
    overlap: { type: 'string' },
    expire: { type: 'string' },
    priority: { type: 'string' },
    version: { type: 'string' },
    redact: { type: 'string' },
  } as const;
  const { values, positionals } = parse('schedules set', args, flags, { min: 1, max: 1, what: 'one schedule id' });
  const id = positionals[0]!;
  const where = `schedules set ${cut(id, 128)}`;
  const str = (k: keyof typeof flags) => (typeof values[k] === 'string' ? (values[k] as string) : undefined);
  const int = (k: keyof typeof flags) => {
    const v = str(k);
    if (v === undefined) return undefined;
    if (!/^-?\d+$/.test(v)) throw usage(`${where}: --${k} must be an integer, got ${JSON.stringify(cut(v, 40))}`);
    return Number(v);
  };
  // Digits alone are epoch ms (an instant) or ms (an interval), as numbers over HTTP.
  const numOrText = (v: string | undefined) => (v !== undefined && /^\d+$/.test(v) ? Number(v) : v);
  const task = str('task');
  if (task === undefined) throw usage(`${where}: --task is required`);
  const options: Record<string, unknown> = {};
  const put = (k: string, v: unknown) => {
    if (v !== undefined) options[k] = v;
  };
  put('cron', str('cron'));
  put('every', numOrText(str('every')));
  put('timezone', str('zone'));
  put('start', numOrText(str('start')));
  put('end', numOrText(str('end')));
  put('missed', str('missed'));
  put('maxBackfill', int('max-backfill'));
  put('catchUpMs', int('catch-up-ms'));
  put('overlap', str('overlap'));
  const expire = str('expire');
  put(
    'expire',
    expire === undefined || expire === 'period' || expire === 'never' ? expire : /^\d+$/.test(expire) ? Number(expire) : expire,
  );
  put('priority', int('priority'));
  const version = str('version');
  if (version !== undefined && !(/^\d+$/.test(version) && isScheduleVersion(Number(version)))) {
    throw usage(`${where}: --version must be ${SCHEDULE_VERSION_RULE}, got ${JSON.stringify(cut(version, 40))}`);
  }
  const now = Date.now();
  put('version', version === undefined ? now : Number(version));
  let input: unknown = null;
  const inputText = str('input');
  if (inputText !== undefined) {
    try {
      input = JSON.parse(inputText);
    } catch (err) {
      throw usage(`${where}: --input is not JSON: ${cut((err as Error).message, 120)}`);
    }
  }
  let split: ReturnType<typeof splitScheduleOptions>;
  try {
    checkNewScheduleId(id, where);
    split = splitScheduleOptions(options as unknown as ScheduleOptions, where);
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError('usage', err.message);
    throw err;
  }
  const paths = redactPaths(values);
  await withBroker(values, async (raw) => {
    const broker: Broker = guardBroker(raw);
    let queue = str('queue');
    let stored = null;
    if (queue === undefined) {
      stored = await findSchedule(broker, id);
      if (!stored)
        throw usage(
          `${where}: --queue is needed to create a schedule (the CLI does not know the queue of task ${JSON.stringify(cut(task, 128))})`,
        );
      queue = stored.queue;
    } else {
      stored = await broker.getSchedule(queue, id);
    }
    // The CLI does not know the task's limits: what an app recorded for the same task is kept.
    const limits = stored !== null && stored.task === task && limitsRecorded(stored);
    let v: ScheduleView;
    try {
      v = await putSchedule(broker, { id, queue, task, input: JSON.stringify(input), limits }, split, now, where);
    } catch (err) {
      if (err instanceof ScheduleVersionError) throw new CliError('version_conflict', err.message);
      throw err;
    }
    if (out.json) return out.data(json(v, paths));
    const next = v.next === null ? 'no next fire time' : `next fire ${new Date(v.next).toISOString()}`;
    return out.text(`Schedule ${clean(v.id)} of queue ${clean(v.queue)} stored (${clean(specText(v.spec))}, ${v.state}, ${next}).\n`);
  });
}
