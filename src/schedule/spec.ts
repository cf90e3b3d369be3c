// A schedule spec: what a user writes (in code beside a task, or later through the API), checked and
// turned into a `Schedule` that the time functions in `times.ts` work on.
//
// Cron expressions are parsed and matched by croner (a dependency of Errand), always at UTC offset 0
// (`utcOffset: 0`, several times faster than `timezone: 'UTC'`, which goes through Intl) over
// *wall-clock readings*: croner answers "which readings of a clock match this pattern", and
// `times.ts` maps readings to instants in the schedule's zone with our own DST rules. Why croner,
// and why not its own time-zone handling:
//
// - croner: zero dependencies, TypeScript types, the seconds field, `L W #`, nicknames, maintained;
//   its DST bugs (croner#132, #142, #284: days skipped, and a UTC schedule shifted by the host's own
//   DST change) were fixed, and #284 is why we test under several host `TZ` values.
// - cron-parser (the other candidate, used by BullMQ and pg-boss) pulls in luxon, and had open DST
//   bugs when this was written: `hasNext()` false and `next()` undefined across a spring-forward gap
//   (cron-parser#404), `prev()` skipping a day after a transition (#378).
// - Neither library's DST rule is ours: croner skips gap times of interval-like patterns and counts
//   `30 1,2 * * *` as an interval job (it fires twice in an overlap). So no library is trusted with
//   zones: both would be used in UTC mode, where there is no DST, and the zone mapping is ours.
import { Cron, CronPattern } from 'croner';
import { ConfigError } from '../core/errors.ts';
import { show } from '../core/show.ts';
import { canonicalZone, MAX_TIME, MIN_TIME } from './zone.ts';

/** An instant: a `Date`, epoch milliseconds, or an ISO 8601 string with `Z` or an explicit offset. */
export type Instant = Date | number | string;

interface SpecCommon {
  /** IANA time zone the cron fields are read in (e.g. `Europe/Paris`). Default `UTC`. */
  timezone?: string;
  /** No fire before this instant (inclusive). For `every`, also the anchor of the interval. */
  start?: Instant;
  /** No fire at or after this instant (exclusive). */
  end?: Instant;
}

/**
 * A cron expression: 5 fields (`minute hour day-of-month month day-of-week`), or 6 with seconds first;
 * or a nickname (`@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`). Lists, ranges, steps, names
 * (`MON`, `JAN`), and croner's `L`, `W`, `#` and `+` are accepted.
 */
export interface CronSpec extends SpecCommon {
  cron: string;
}

/**
 * An interval of elapsed time: milliseconds, or a string such as `'30s'`, `'15m'`, `'2h'`, `'1500ms'`
 * (units `ms`, `s`, `m`/`min`, `h`). Fires at `start + k × every` (k = 0, 1, …); with no `start`, at
 * whole multiples since the Unix epoch, so every worker computes the same times. At least 1 s.
 */
export interface EverySpec extends SpecCommon {
  every: number | string;
}

export type ScheduleSpec = CronSpec | EverySpec;

/** The checked, normalised form of a spec: plain JSON, the same for equal specifications. */
export type NormalizedSpec =
  | { kind: 'cron'; cron: string; timezone: string; start?: number; end?: number }
  | { kind: 'every'; every: number; timezone: string; start?: number; end?: number };

/** A checked schedule, ready for `nextFire` and the other time functions. Immutable. */
export interface Schedule {
  readonly spec: NormalizedSpec;
  /** @internal croner in UTC mode, over wall-clock readings. */
  readonly matcher?: Cron;
  /**
   * @internal Whether the pattern's hour field covers all 24 hours (`*`, `*\/1`, `0-23`):
   * then a repeated (fall-back) hour fires in both passes; otherwise only in the first.
   */
  readonly everyHour: boolean;
}

export interface ScheduleIssue {
  /** The field of the spec: `cron`, `every`, `timezone`, `start`, `end`, or the unknown key. */
  field: string;
  message: string;
}

/** A schedule spec that Errand refuses: each issue names its field. */
export class ScheduleSpecError extends ConfigError {
  override name = 'ScheduleSpecError';
  readonly issues: ScheduleIssue[];
  constructor(issues: ScheduleIssue[], what = 'Schedule') {
    const lines = issues.map((i) => `  - ${i.field}: ${i.message}`);
    super(`${what} refused (${issues.length} problem${issues.length === 1 ? '' : 's'}):\n${lines.join('\n')}`);
    this.issues = issues;
  }
}

export const MIN_EVERY_MS = 1000;
export const MAX_EVERY_MS = 366 * 24 * 3600_000;
const KEYS = new Set(['cron', 'every', 'timezone', 'start', 'end']);
const MISSPELT: Record<string, string> = { timeZone: 'timezone', tz: 'timezone', zone: 'timezone', interval: 'every', pattern: 'cron' };
const NICKNAMES = new Set(['@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight', '@hourly']);
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, sec: 1000, m: 60_000, min: 60_000, h: 3600_000 };
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})$/;

function parseInstant(field: string, v: unknown, issues: ScheduleIssue[]): number | undefined {
  let t: number;
  if (v instanceof Date) t = v.getTime();
  else if (typeof v === 'number') {
    if (!Number.isInteger(v)) {
      issues.push({ field, message: `${show(v)} is not a whole number of epoch milliseconds` });
      return undefined;
    }
    t = v;
  } else if (typeof v === 'string') {
    if (!ISO.test(v)) {
      issues.push({
        field,
        message: `${show(v)} is not an ISO 8601 instant with a zone: write e.g. "2030-01-31T09:00:00Z" or "2030-01-31T09:00:00+01:00"`,
      });
      return undefined;
    }
    t = Date.parse(v);
  } else {
    issues.push({ field, message: `expected a Date, epoch milliseconds or an ISO 8601 string, got ${v === null ? 'null' : typeof v}` });
    return undefined;
  }
  if (!Number.isFinite(t)) {
    issues.push({ field, message: `${show(v)} is not a valid date` });
    return undefined;
  }
  if (t < MIN_TIME || t >= MAX_TIME) {
    issues.push({ field, message: `${show(v)} is outside the years 1900-8999 that schedules support` });
    return undefined;
  }
  return t;
}

/**
 * An instant given for a schedule (a backfill's from and to): a Date, whole epoch milliseconds, or an
 * ISO 8601 string with a zone, within the years schedules support; else why not (without the field).
 */
export function readInstant(field: string, v: unknown): { at: number } | { error: string } {
  const issues: ScheduleIssue[] = [];
  const at = parseInstant(field, v, issues);
  return at === undefined ? { error: issues[0]?.message ?? 'not an instant' } : { at };
}

/** An interval in the largest unit that divides it, as `every` takes it: "2h", "15m", "30s", "1500ms". */
export function intervalText(ms: number): string {
  const [size, unit] =
    ms % 3_600_000 === 0 ? [3_600_000, 'h'] : ms % 60_000 === 0 ? [60_000, 'm'] : ms % 1000 === 0 ? [1000, 's'] : [1, 'ms'];
  return `${ms / size}${unit}`;
}

function parseEvery(v: unknown, issues: ScheduleIssue[]): number | undefined {
  let ms: number;
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) {
      issues.push({ field: 'every', message: `${v} is not a whole number of milliseconds` });
      return undefined;
    }
    ms = v;
  } else if (typeof v === 'string') {
    const m = /^\s*(\d+)\s*(ms|s|sec|m|min|h)\s*$/.exec(v);
    if (!m) {
      issues.push({
        field: 'every',
        message: `${show(v)} is not an interval: write a number and a unit, e.g. "30s", "15m", "2h", "1500ms"`,
      });
      return undefined;
    }
    ms = Number(m[1]) * UNIT_MS[m[2]!]!;
  } else {
    issues.push({ field: 'every', message: `expected milliseconds or a string such as "15m", got ${v === null ? 'null' : typeof v}` });
    return undefined;
  }
  if (ms < MIN_EVERY_MS || ms > MAX_EVERY_MS) {
    issues.push({ field: 'every', message: `${show(v)} is ${ms} ms; an interval must be from 1 s to 366 days` });
    return undefined;
  }
  return ms;
}

function parseCron(v: unknown, issues: ScheduleIssue[]): { cron: string; matcher: Cron; everyHour: boolean } | undefined {
  if (typeof v !== 'string') {
    issues.push({ field: 'cron', message: `expected a cron expression string, got ${v === null ? 'null' : typeof v}` });
    return undefined;
  }
  const cron = v.trim().replace(/\s+/g, ' ');
  if (cron.startsWith('@')) {
    if (!NICKNAMES.has(cron.toLowerCase())) {
      issues.push({ field: 'cron', message: `${show(v)} is not a known nickname (${[...NICKNAMES].join(', ')})` });
      return undefined;
    }
  } else {
    const n = cron === '' ? 0 : cron.split(' ').length;
    if (n !== 5 && n !== 6) {
      issues.push({
        field: 'cron',
        message: `${show(v)} has ${n} field${n === 1 ? '' : 's'}; expected 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)`,
      });
      return undefined;
    }
  }
  let matcher: Cron;
  let pattern: CronPattern;
  try {
    const opts = { mode: '5-or-6-parts' as const };
    pattern = new CronPattern(cron, 'UTC', opts);
    matcher = new Cron(cron, { ...opts, utcOffset: 0, paused: true });
  } catch (e) {
    issues.push({ field: 'cron', message: `${show(v)}: ${String((e as Error).message).replace(/^CronPattern:\s*/, '')}` });
    return undefined;
  }
  if (matcher.nextRun(new Date(Date.UTC(2000, 0, 1))) === null) {
    issues.push({ field: 'cron', message: `${show(v)} never matches a date (such as 30 February)` });
    return undefined;
  }
  return { cron, matcher, everyHour: pattern.hour.every((h) => h !== 0) };
}

/** The problems of a spec (empty when it is valid). Never throws. */
export function scheduleIssues(spec: unknown): ScheduleIssue[] {
  return checkSpec(spec).issues;
}

function checkSpec(spec: unknown): { issues: ScheduleIssue[]; schedule?: Schedule } {
  const issues: ScheduleIssue[] = [];
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) {
    issues.push({
      field: '(spec)',
      message: `expected an object with "cron" or "every", got ${Array.isArray(spec) ? 'an array' : show(spec)}`,
    });
    return { issues };
  }
  const s = spec as Record<string, unknown>;
  for (const k of Object.keys(s)) {
    if (!KEYS.has(k)) issues.push({ field: k, message: `unknown field${MISSPELT[k] ? ` (did you mean "${MISSPELT[k]}"?)` : ''}` });
  }
  const hasCron = s.cron !== undefined;
  const hasEvery = s.every !== undefined;
  if (hasCron === hasEvery) {
    issues.push({
      field: hasCron ? 'cron' : '(spec)',
      message: hasCron ? 'give "cron" or "every", not both' : 'give a "cron" expression or an "every" interval',
    });
  }
  const cron = hasCron ? parseCron(s.cron, issues) : undefined;
  const every = hasEvery ? parseEvery(s.every, issues) : undefined;
  let timezone = 'UTC';
  if (s.timezone !== undefined) {
    const z = typeof s.timezone === 'string' ? canonicalZone(s.timezone) : undefined;
    if (z === undefined) {
      issues.push({
        field: 'timezone',
        message: `${show(s.timezone)} is not an IANA time zone known to this runtime (e.g. "Europe/Paris", "UTC")`,
      });
    } else timezone = z;
  }
  const start = s.start !== undefined ? parseInstant('start', s.start, issues) : undefined;
  const end = s.end !== undefined ? parseInstant('end', s.end, issues) : undefined;
  if (start !== undefined && end !== undefined && end <= start) {
    issues.push({ field: 'end', message: `${new Date(end).toISOString()} is not after start ${new Date(start).toISOString()}` });
  }
  if (issues.length > 0) return { issues };
  const bounds = { ...(start !== undefined ? { start } : {}), ...(end !== undefined ? { end } : {}) };
  const schedule: Schedule = cron
    ? { spec: Object.freeze({ kind: 'cron', cron: cron.cron, timezone, ...bounds }), matcher: cron.matcher, everyHour: cron.everyHour }
    : { spec: Object.freeze({ kind: 'every', every: every!, timezone, ...bounds }), everyHour: true };
  return { issues, schedule: Object.freeze(schedule) };
}

/**
 * Check a spec and return the `Schedule` that the time functions take. Throws `ScheduleSpecError`
 * (a `ConfigError`) naming each bad field. `what` names the schedule in the message.
 */
export function compileSchedule(spec: ScheduleSpec, what?: string): Schedule {
  const { issues, schedule } = checkSpec(spec);
  if (!schedule) throw new ScheduleSpecError(issues, what);
  return schedule;
}

/**
 * A stable string of the normalised spec (keys in a fixed order): equal for equal schedules, so it
 * can be hashed to tell whether a declared schedule changed.
 */
export function canonicalSpec(schedule: Schedule): string {
  const s = schedule.spec;
  return JSON.stringify([s.kind, s.kind === 'cron' ? s.cron : s.every, s.timezone, s.start ?? null, s.end ?? null]);
}
