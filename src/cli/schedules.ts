/**
 * `errand schedules`: the stored schedules of a broker, and what can be done to them without the
 * app's code: list (state, next five fire times, last run, fires, misses), pause, resume, trigger,
 * backfill a range, delete. `--json` answers with the HTTP layer's schedule JSON.
 */
import { guardBroker } from '../broker/shared/guard.ts';
import type { Broker } from '../broker/types.ts';
import { ConfigError } from '../core/errors.ts';
import { redactValue } from '../core/redact.ts';
import { scheduleToJson } from '../http/schemas.ts';
import { backfillSchedule, findSchedule, type ScheduleView, triggerSchedule, viewOf } from '../schedule/manage.ts';
import { readInstant } from '../schedule/spec.ts';
import { CliError, HelpRequested, type Output, parse, redactPaths, usage, withBroker } from './admin-shared.ts';
import { clean, cut, relative, table, when } from './format.ts';

export const SCHEDULES_USAGE = `  schedules [list]   Stored schedules: state, next fire times, last run, fires, misses
    --queue Q          of one queue
  schedules pause <id> | resume <id> | trigger <id> | delete <id>   (--queue Q when the id is in several queues)
  schedules backfill <id> --from T --to T   A run, marked backfilled, for each fire time in [from, to) without one; safe to repeat
    T: ISO 8601 with Z or an offset, or epoch ms
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
    if (s.every !== undefined) return `every ${s.every}ms`;
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
    default:
      throw usage(`schedules ${JSON.stringify(cut(action, 40))}: expected list, pause, resume, trigger, backfill or delete`);
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

async function act(action: 'pause' | 'resume' | 'trigger' | 'delete' | 'backfill', args: string[], out: Output): Promise<void> {
  const { values, positionals } = parse(
    `schedules ${action}`,
    args,
    { queue: { type: 'string' }, from: { type: 'string' }, to: { type: 'string' } },
    { min: 1, max: 1, what: 'one schedule id' },
  );
  const id = positionals[0]!;
  const from = action === 'backfill' ? instant(values.from, 'from') : 0;
  const to = action === 'backfill' ? instant(values.to, 'to') : 0;
  await withBroker(values, async (raw) => {
    const broker: Broker = guardBroker(raw);
    const rec = await findSchedule(broker, id, typeof values.queue === 'string' ? values.queue : undefined);
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
        const r = await triggerSchedule(broker, rec, now);
        if (out.json) return out.data({ ...base, run_id: r.id, status: r.state });
        return out.text(`Run ${r.id} created (${r.state}).\n`);
      }
      case 'backfill': {
        let r: Awaited<ReturnType<typeof backfillSchedule>>;
        try {
          r = await backfillSchedule(broker, rec, from, to, now);
        } catch (err) {
          if (err instanceof ConfigError) throw new CliError('usage', err.message);
          throw err;
        }
        if (out.json) return out.data({ ...base, created: r.created, existing: r.existing, truncated: r.truncated });
        return out.text(
          `${r.times.length} fire time(s) from ${when(from, now)} to ${when(to, now)}: ${r.created} run(s) created, ${r.existing} already had theirs${r.truncated ? ' (stopped at 1000: run it again from the last one)' : ''}.\n`,
        );
      }
    }
  });
}
