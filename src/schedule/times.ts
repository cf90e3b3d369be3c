// The nominal fire times of a schedule: pure functions of the schedule and an instant, the same on
// every machine (no host `TZ`, no clock read). A broker's fire step uses them to move a schedule
// from its fire time F to `nextFire(schedule, F)` in one atomic step; backfill and missed fires
// use `firesBetween`.
//
// The rules, for a cron schedule in its zone:
// - A wall time that does not exist (spring-forward gap) fires once, at the first instant after the
//   gap (the transition itself). Several gap times, and a match just at the gap's end, are one fire.
// - A wall time that happens twice (fall-back overlap) fires once, at its first occurrence, if the
//   pattern names particular hours (`30 1 * * *`, `0 9-17 * * *`); if the pattern runs every hour
//   (`*/15 * * * *`, `0 * * * *`, `* * * * * *`) it fires in both passes, so its fires stay evenly
//   spaced in elapsed time.
// An `every` schedule is elapsed time: `start + k × every`, whatever the zone does.
import { show } from '../core/show.ts';
import type { Schedule } from './spec.ts';
import { MAX_TIME, MIN_TIME, offsetAt, transitionAfter, transitionAtOrBefore } from './zone.ts';

const DAY = 24 * 3600_000;

function checkInstant(name: string, t: number): void {
  if (typeof t !== 'number' || !Number.isFinite(t)) throw new TypeError(`${name}: expected epoch milliseconds, got ${show(t)}`);
}

/** The first wall-clock reading strictly after `wall` that the pattern matches, or null. */
function nextReading(s: Schedule, wall: number): number | null {
  const d = s.matcher!.nextRun(new Date(wall));
  return d === null ? null : d.getTime();
}

function nextCron(s: Schedule, after: number): number | null {
  const zone = s.spec.timezone;
  // Fires must be > cur. `o` is the offset in force from `segFrom` until the first transition after
  // it (a segment of constant offset). Each turn returns, or moves cur on past a match or a
  // transition. (A query 1 ms before a gap must still see the gap's fire at the transition.)
  let cur = after;
  let segFrom = after;
  let o = offsetAt(zone, after);
  for (;;) {
    if (cur >= MAX_TIME) return null;
    const reading = nextReading(s, cur + o);
    const candidate = reading === null ? MAX_TIME : reading - o;
    const tr = transitionAfter(zone, segFrom, candidate);
    if (!tr) {
      if (reading === null) return null;
      // In this segment. A second pass through a repeated hour is skipped by fixed-hour patterns.
      if (!s.everyHour) {
        const prev = transitionAtOrBefore(zone, candidate, candidate - DAY);
        if (prev && prev.before > prev.after && reading < prev.at + prev.before) {
          cur = segFrom = candidate;
          continue;
        }
      }
      return candidate;
    }
    if (tr.after > tr.before) {
      // A gap: readings [at + before, at + after) never happen. Any match among them fires at `at`.
      const inGap = nextReading(s, tr.at + tr.before - 1);
      if (inGap !== null && inGap < tr.at + tr.after) return tr.at;
    }
    // On into the next segment: instants from tr.at on, read with its offset.
    cur = tr.at - 1;
    segFrom = tr.at;
    o = tr.after;
  }
}

/**
 * The first nominal fire time strictly after `after` (epoch ms), or null if there is none (past
 * the schedule's `end`).
 */
export function nextFire(s: Schedule, after: number): number | null {
  checkInstant('after', after);
  const { start, end } = s.spec;
  const from = start !== undefined ? Math.max(after, start - 1) : Math.max(after, MIN_TIME - 1);
  let t: number | null;
  if (s.spec.kind === 'every') {
    const anchor = start ?? 0;
    const k = Math.floor((from - anchor) / s.spec.every) + 1;
    t = anchor + Math.max(k, 0) * s.spec.every;
    if (t >= MAX_TIME) t = null;
  } else t = nextCron(s, Math.floor(from));
  return t === null || (end !== undefined && t >= end) ? null : t;
}

/** The next `count` nominal fire times strictly after `after`, in order (fewer if the schedule ends). */
export function nextFires(s: Schedule, after: number, count: number): number[] {
  if (!Number.isInteger(count) || count < 0) throw new RangeError(`count: expected a whole number >= 0, got ${show(count)}`);
  const out: number[] = [];
  let t: number | null = after;
  while (out.length < count && (t = nextFire(s, t)) !== null) out.push(t);
  return out;
}

export interface FiresBetween {
  /** The fire times F with from <= F < to, in order, at most `limit` of them. */
  times: number[];
  /** True when there were more fire times in the range than `limit`. */
  truncated: boolean;
}

/**
 * The nominal fire times inside the range [from, to) (epoch ms): for backfill and missed fires. At
 * most `limit` (default 10,000); `truncated` tells whether more were left out. To list the fires
 * missed after a last fire L up to now N inclusive: `firesBetween(s, L + 1, N + 1)`.
 */
export function firesBetween(s: Schedule, from: number, to: number, limit = 10_000): FiresBetween {
  checkInstant('from', from);
  checkInstant('to', to);
  if (!Number.isInteger(limit) || limit < 0) throw new RangeError(`limit: expected a whole number >= 0, got ${show(limit)}`);
  const times: number[] = [];
  let t = nextFire(s, from - 1);
  while (t !== null && t < to) {
    if (times.length === limit) return { times, truncated: true };
    times.push(t);
    t = nextFire(s, t);
  }
  return { times, truncated: false };
}
