// Property: nominal fire times across IANA zones and years of DST transitions, checked against a
// brute-force oracle (test/schedule/oracle.ts) that shares no code with src/schedule.
// - A daily fixed-time schedule fires exactly once per local calendar day, transition days
//   included: at the reading's first occurrence, or at the end of the gap that swallowed it.
// - An every-hour pattern (`*/N * * * *`, `*/S * * * * *`) fires at every instant whose reading
//   matches, so in both passes of a repeated hour, plus once at the end of a gap that held a match;
//   when the shift is a multiple of the step, its fires stay evenly spaced in elapsed time.
// - Fire times are strictly increasing, never duplicated.
// Zones: every zone of Intl.supportedValuesOf('timeZone') (sampled), and a fixed list of the hard
// ones (30-minute DST, southern hemisphere, 2-hour DST, negative DST, midnight gaps, zones that
// changed their offset for good).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { compileSchedule, firesBetween, nextFire, type Schedule } from '../../src/schedule/index.ts';
import { dailyExpected, gapEnd, instantsOf, localDate, transitions, wall } from './oracle.ts';

const DAY = 24 * 3600_000;
const MIN = 60_000;
const ALL_ZONES = Intl.supportedValuesOf('timeZone');
export const HARD_ZONES = [
  'America/New_York',
  'Europe/Berlin',
  'Europe/London',
  'Europe/Dublin', // negative DST in the data
  'Australia/Lord_Howe', // 30-minute DST
  'Australia/Sydney',
  'Pacific/Auckland',
  'Pacific/Chatham', // +12:45 / +13:45
  'America/Santiago', // southern, gap at midnight
  'America/Asuncion',
  'America/Sao_Paulo', // DST until 2019, gap at midnight
  'America/Havana', // gap at midnight
  'America/St_Johns', // -3:30
  'Asia/Tehran', // +3:30 with DST until 2022
  'Africa/Casablanca', // DST suspended each Ramadan
  'Antarctica/Troll', // 2-hour DST
  'Pacific/Apia', // skipped 30 December 2011
  'Europe/Moscow', // permanent changes 2011, 2014
  'America/Caracas', // -4:30 from 2007 to 2016
  'Asia/Pyongyang', // +8:30 from 2015 to 2018
  'Europe/Istanbul', // permanent change 2016
  'Asia/Gaza',
  'America/Godthab',
  'Asia/Kolkata',
  'UTC',
];

function strictlyIncreasing(times: number[]): void {
  for (let i = 1; i < times.length; i++) assert.ok(times[i]! > times[i - 1]!, `not increasing at ${i}: ${times[i - 1]} then ${times[i]}`);
}

/**
 * From any instant, not only from a fire time: nextFire(after) is the first of `fires` (all fires of
 * a window, in order) strictly after `after`. Probes each fire ±1 ms, the midpoints, and the
 * transition ±1 ms (inside a repeated hour, the second pass must not re-fire a fixed-hour time).
 */
function checkFromAnywhere(s: Schedule, fires: number[], transitionAt: number, what: string): void {
  const probes = [transitionAt - 1, transitionAt, transitionAt + 1];
  for (let i = 0; i < fires.length; i++) {
    probes.push(fires[i]! - 1, fires[i]!);
    if (i > 0) probes.push(Math.floor((fires[i - 1]! + fires[i]!) / 2));
  }
  for (const after of probes) {
    if (after < fires[0]! - 1 || after >= fires[fires.length - 1]!) continue;
    const want = fires.find((f) => f > after)!;
    assert.equal(iso(nextFire(s, after)), iso(want), `${what}: nextFire after ${iso(after)}`);
  }
}

function iso(t: number | null): string | null {
  return t === null ? null : new Date(t).toISOString();
}

function isoList(times: number[]): string[] {
  return times.map((t) => new Date(t).toISOString());
}

/** UTC-clock ms of the local date's midnight, for the date that contains instant t. */
function localMidnight(zone: string, t: number): number {
  return Math.floor(wall(zone, t) / DAY) * DAY;
}

/** A daily schedule at hour:minute, checked in `zone` over the whole UTC year and around each transition. */
function checkDaily(zone: string, year: number, hour: number, minute: number): void {
  const s = compileSchedule({ cron: `${minute} ${hour} * * *`, timezone: zone });
  const y0 = Date.UTC(year, 0, 1);
  const y1 = Date.UTC(year + 1, 0, 1);
  // One fire per local calendar day, over the year (days at both ends may be cut by the range).
  const { times } = firesBetween(s, y0, y1);
  strictlyIncreasing(times);
  const perDay = new Map<string, number>();
  for (const t of times) {
    const reading = wall(zone, t);
    // A fire at a gap's end stands for the day of the reading it replaces: the same local date,
    // except when a whole day was skipped (Pacific/Apia, 30 December 2011).
    const d = new Date(reading).toISOString().slice(0, 10);
    perDay.set(d, (perDay.get(d) ?? 0) + 1);
  }
  for (const [d, n] of perDay) {
    if (n !== 1) {
      // Allowed only where the day before does not exist at all (its reading landed here).
      const prev = new Date(Date.parse(d) - DAY).toISOString().slice(0, 10);
      assert.equal(
        perDay.has(prev),
        false,
        `${zone} ${hour}:${minute}: ${n} fires on local date ${d}: ${isoList(times.filter((t) => localDate(zone, t) === d))}`,
      );
    }
  }
  // No local date missing between the first fire and the last, unless it does not exist at all.
  const dates = [...perDay.keys()];
  for (let d = Date.parse(dates[0]!); d <= Date.parse(dates[dates.length - 1]!); d += DAY) {
    const date = new Date(d).toISOString().slice(0, 10);
    if (!perDay.has(date))
      assert.equal(instantsOf(zone, d + 12 * 3600_000).length, 0, `${zone} ${hour}:${minute}: no fire on local date ${date}`);
  }
  // Exactly the oracle's fires around every transition of the year.
  for (const tr of transitions(zone, y0, y1)) {
    const first = localMidnight(zone, tr.at) - 2 * DAY;
    const last = first + 4 * DAY;
    const expected = dailyExpected(zone, hour, minute, first, last);
    const got = firesBetween(s, expected[0]!, expected[expected.length - 1]! + 1).times;
    assert.deepEqual(isoList(got), isoList(expected), `${zone} daily ${hour}:${minute} around ${new Date(tr.at).toISOString()}`);
    checkFromAnywhere(s, expected, tr.at, `${zone} daily ${hour}:${minute}`);
  }
}

/** The readings that match an every-hour step pattern: every `stepMin` minutes, or `stepSec` seconds. */
function matches(reading: number, step: { min?: number; sec?: number }): boolean {
  const d = new Date(reading);
  if (step.sec !== undefined) return d.getUTCMilliseconds() === 0 && d.getUTCSeconds() % step.sec === 0;
  return d.getUTCMilliseconds() === 0 && d.getUTCSeconds() === 0 && d.getUTCMinutes() % step.min! === 0;
}

/** An every-hour pattern around each transition of the year: exact fires, and even spacing where it can hold. */
function checkEveryHour(zone: string, year: number, step: { min?: number; sec?: number }): void {
  const cron = step.sec !== undefined ? `*/${step.sec} * * * * *` : `*/${step.min} * * * *`;
  const s = compileSchedule({ cron, timezone: zone });
  const grid = step.sec !== undefined ? 1000 : MIN;
  const stepMs = step.sec !== undefined ? step.sec * 1000 : step.min! * MIN;
  for (const tr of transitions(zone, Date.UTC(year, 0, 1), Date.UTC(year + 1, 0, 1))) {
    // Wide enough for both passes of a 2-hour overlap (minute steps); an hour either side for seconds.
    const w0 = tr.at - (step.sec !== undefined ? 3600_000 : 2.5 * 3600_000);
    const w1 = tr.at + (step.sec !== undefined ? 3600_000 : 2.5 * 3600_000);
    const expected = new Set<number>();
    for (let u = w0; u < w1; u += grid) if (matches(wall(zone, u), step)) expected.add(u);
    if (tr.shift > 0) {
      // Readings [at + before, at + after) never happen: a match among them fires at the gap's end.
      const before = wall(zone, tr.at - 1000) + 1000;
      for (let r = before; r < before + tr.shift; r += grid) {
        if (matches(r, step)) {
          expected.add(gapEnd(zone, r));
          break;
        }
      }
    }
    const want = [...expected].sort((a, b) => a - b);
    const got = firesBetween(s, w0, w1).times;
    strictlyIncreasing(got);
    assert.deepEqual(isoList(got), isoList(want), `${zone} ${cron} around ${new Date(tr.at).toISOString()}`);
    if (want.length > 0) checkFromAnywhere(s, want, tr.at, `${zone} ${cron}`);
    // Even spacing can hold when the shift is whole steps and the clock jumps at a step boundary.
    const jumpReading = wall(zone, tr.at - 1000) + 1000;
    if (Math.abs(tr.shift) % stepMs === 0 && 3600_000 % stepMs === 0 && jumpReading % stepMs === 0) {
      for (let i = 1; i < got.length; i++)
        assert.equal(got[i]! - got[i - 1]!, stepMs, `${zone} ${cron}: uneven spacing at ${new Date(got[i]!).toISOString()}`);
    }
  }
}

describe('schedules across time zones and DST transitions', () => {
  it('a daily fixed-time schedule fires once per local day in the hard zones, 1996-2026 (sample years)', () => {
    for (const zone of HARD_ZONES) {
      for (const year of [1996, 2011, 2016, 2026]) {
        for (const [h, m] of [
          [2, 30],
          [0, 0],
        ] as const)
          checkDaily(zone, year, h, m);
      }
    }
  });

  it('a daily fixed-time schedule fires once per local day in any zone and year (property)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...ALL_ZONES),
        fc.integer({ min: 1973, max: 2037 }),
        fc.integer({ min: 0, max: 23 }),
        fc.constantFrom(0, 1, 15, 30, 45, 59),
        (zone, year, h, m) => checkDaily(zone, year, h, m),
      ),
      { numRuns: 60 },
    );
  });

  it('every-hour patterns fire in both passes of a repeated hour and once after a gap, evenly spaced (hard zones)', () => {
    for (const zone of HARD_ZONES) {
      for (const year of [2011, 2016, 2026]) {
        checkEveryHour(zone, year, { min: 15 });
        checkEveryHour(zone, year, { min: 20 });
      }
    }
  });

  it('every-hour minute and second patterns match the oracle in any zone and year (property)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...ALL_ZONES),
        fc.integer({ min: 1973, max: 2037 }),
        fc.oneof(
          fc.constantFrom(1, 5, 10, 15, 20, 30, 7).map((min) => ({ min })),
          fc.constantFrom(15, 20, 30).map((sec) => ({ sec })),
        ),
        (zone, year, step) => checkEveryHour(zone, year, step),
      ),
      { numRuns: 40 },
    );
  });
});
