// Schedule specs: each bad field is named in a ScheduleSpecError (a ConfigError); valid specs are
// normalised; nextFire / nextFires / firesBetween keep their contracts (strictly after, [from, to),
// start inclusive, end exclusive); intervals are elapsed time, anchored to start or the epoch.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ConfigError } from '../../src/core/errors.ts';
import {
  canonicalSpec,
  compileSchedule,
  firesBetween,
  nextFire,
  nextFires,
  type ScheduleSpec,
  ScheduleSpecError,
  scheduleIssues,
} from '../../src/schedule/index.ts';

const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());
const at = (s: string) => Date.parse(s);

function refused(spec: unknown, field: string, mention: string | RegExp): void {
  assert.throws(
    () => compileSchedule(spec as ScheduleSpec),
    (e: unknown) => {
      assert.ok(e instanceof ScheduleSpecError && e instanceof ConfigError, `not a ScheduleSpecError: ${e}`);
      const issue = e.issues.find((i) => i.field === field);
      assert.ok(issue, `no issue for field "${field}" in: ${e.message}`);
      if (typeof mention === 'string') assert.ok(issue.message.includes(mention), `"${issue.message}" does not mention "${mention}"`);
      else assert.match(issue.message, mention);
      assert.ok(e.message.includes(`- ${field}: `), `message does not name the field: ${e.message}`);
      return true;
    },
  );
}

describe('schedule specs: validation', () => {
  it('refuses bad cron expressions, naming the field and the problem', () => {
    refused({ cron: '61 * * * *' }, 'cron', 'minute: 61');
    refused({ cron: '* * * *' }, 'cron', 'has 4 fields; expected 5');
    refused({ cron: '0 0 0 * * * 2030' }, 'cron', 'has 7 fields');
    refused({ cron: '' }, 'cron', 'has 0 fields');
    refused({ cron: '2030-01-23T00:00:00' }, 'cron', 'has 1 field');
    refused({ cron: '@reboot' }, 'cron', 'not a known nickname');
    refused({ cron: '0 0 30 2 *' }, 'cron', 'never matches');
    refused({ cron: '*/0 * * * *' }, 'cron', 'stepping');
    refused({ cron: 5 }, 'cron', 'expected a cron expression string, got number');
  });

  it('refuses bad intervals, zones, instants and unknown fields', () => {
    refused({ every: '15 minutes' }, 'every', 'not an interval');
    refused({ every: '500ms' }, 'every', 'from 1 s to 366 days');
    refused({ every: 1.5 }, 'every', 'whole number');
    refused({ every: '400d' }, 'every', 'not an interval');
    refused({ cron: '* * * * *', every: '1m' }, 'cron', 'not both');
    refused({}, '(spec)', 'give a "cron" expression or an "every" interval');
    refused(null, '(spec)', 'expected an object');
    refused({ cron: '* * * * *', timezone: 'Mars/Olympus' }, 'timezone', 'not an IANA time zone');
    refused({ cron: '* * * * *', timezone: '+05:30' }, 'timezone', 'not an IANA time zone');
    refused({ cron: '* * * * *', timeZone: 'Europe/Paris' }, 'timeZone', 'did you mean "timezone"');
    refused({ cron: '* * * * *', start: '2030-01-01' }, 'start', 'ISO 8601 instant with a zone');
    refused({ cron: '* * * * *', start: '2030-01-01T09:00:00' }, 'start', 'ISO 8601 instant with a zone');
    refused({ cron: '* * * * *', end: new Date(Number.NaN) }, 'end', 'not a valid date');
    refused({ cron: '* * * * *', start: 1.5 }, 'start', 'whole number');
    refused({ cron: '* * * * *', start: Date.UTC(9500, 0, 1) }, 'start', 'outside the years');
    refused({ cron: '* * * * *', start: '2030-01-02T00:00:00Z', end: '2030-01-01T00:00:00Z' }, 'end', 'not after start');
  });

  it('reports every problem at once, and scheduleIssues never throws', () => {
    const issues = scheduleIssues({ cron: 'x', timezone: 'Nowhere/Place', end: 'soon', colour: 'red' });
    assert.deepEqual(issues.map((i) => i.field).sort(), ['colour', 'cron', 'end', 'timezone']);
    assert.deepEqual(scheduleIssues({ every: '1h' }), []);
  });

  it('normalises: zone names, whitespace, units, instants', () => {
    const a = compileSchedule({ cron: '  0   9 * * MON ', timezone: 'US/Eastern', start: '2030-01-01T00:00:00+01:00' });
    assert.deepEqual(a.spec, { kind: 'cron', cron: '0 9 * * MON', timezone: 'America/New_York', start: Date.UTC(2029, 11, 31, 23) });
    const b = compileSchedule({ every: '15m' });
    assert.deepEqual(b.spec, { kind: 'every', every: 900_000, timezone: 'UTC' });
    assert.equal(canonicalSpec(compileSchedule({ every: 900_000 })), canonicalSpec(b));
    assert.notEqual(canonicalSpec(compileSchedule({ every: '15m', timezone: 'Europe/Paris' })), canonicalSpec(b));
    assert.ok(Object.isFrozen(a) && Object.isFrozen(a.spec));
  });
});

describe('schedule specs: fire times', () => {
  it('cron: strictly after the given instant, 5 or 6 fields, nicknames', () => {
    const s = compileSchedule({ cron: '0 9 * * *', timezone: 'Europe/Paris' });
    assert.equal(iso(nextFire(s, at('2030-06-01T07:00:00Z'))), '2030-06-02T07:00:00.000Z');
    assert.equal(iso(nextFire(s, at('2030-06-01T06:59:59.999Z'))), '2030-06-01T07:00:00.000Z');
    const sec = compileSchedule({ cron: '*/10 * * * * *' });
    assert.deepEqual(nextFires(sec, at('2030-01-01T00:00:05Z'), 3).map(iso), [
      '2030-01-01T00:00:10.000Z',
      '2030-01-01T00:00:20.000Z',
      '2030-01-01T00:00:30.000Z',
    ]);
    assert.equal(
      iso(nextFire(compileSchedule({ cron: '@daily', timezone: 'Asia/Kolkata' }), at('2030-01-01T00:00:00Z'))),
      '2030-01-01T18:30:00.000Z',
    );
  });

  it('the DST rules, on known dates', () => {
    const ny = (cron: string, from: string, n: number) =>
      nextFires(compileSchedule({ cron, timezone: 'America/New_York' }), at(from), n).map(iso);
    // Spring forward 2030-03-10 02:00 EST -> 03:00 EDT: 02:30 does not exist, fires at 03:00 EDT.
    assert.deepEqual(ny('30 2 * * *', '2030-03-09T12:00:00Z', 2), ['2030-03-10T07:00:00.000Z', '2030-03-11T06:30:00.000Z']);
    // Fall back 2030-11-03 02:00 EDT -> 01:00 EST: 01:30 happens twice, a fixed-hour schedule fires once.
    assert.deepEqual(ny('30 1 * * *', '2030-11-02T12:00:00Z', 2), ['2030-11-03T05:30:00.000Z', '2030-11-04T06:30:00.000Z']);
    // Every 30 minutes keeps its elapsed spacing through both passes.
    assert.deepEqual(ny('*/30 * * * *', '2030-11-03T04:59:59Z', 5), [
      '2030-11-03T05:00:00.000Z',
      '2030-11-03T05:30:00.000Z',
      '2030-11-03T06:00:00.000Z',
      '2030-11-03T06:30:00.000Z',
      '2030-11-03T07:00:00.000Z',
    ]);
    // Lord Howe: 30-minute DST; 02:15 falls in the gap 02:00 -> 02:30 and fires at 02:30 (+11).
    const lh = compileSchedule({ cron: '15 2 * * *', timezone: 'Australia/Lord_Howe' });
    assert.equal(iso(nextFire(lh, at('2030-10-05T12:00:00Z'))), '2030-10-05T15:30:00.000Z');
  });

  it('start is inclusive and end exclusive; firesBetween is [from, to) with a limit', () => {
    const s = compileSchedule({ cron: '0 * * * *', start: '2030-01-01T05:00:00Z', end: '2030-01-01T08:00:00Z' });
    assert.deepEqual(nextFires(s, 0, 10).map(iso), ['2030-01-01T05:00:00.000Z', '2030-01-01T06:00:00.000Z', '2030-01-01T07:00:00.000Z']);
    assert.equal(nextFire(s, at('2030-01-01T07:00:00Z')), null);
    const h = compileSchedule({ cron: '0 * * * *' });
    const r = firesBetween(h, at('2030-01-01T01:00:00Z'), at('2030-01-01T04:00:00Z'));
    assert.deepEqual(r, { times: [at('2030-01-01T01:00:00Z'), at('2030-01-01T02:00:00Z'), at('2030-01-01T03:00:00Z')], truncated: false });
    assert.deepEqual(firesBetween(h, at('2030-01-01T01:00:00Z'), at('2030-01-02T01:00:00Z'), 2).truncated, true);
    assert.throws(() => nextFire(h, Number.NaN), /after: expected epoch milliseconds/);
    assert.throws(() => nextFires(h, 0, -1), /count/);
  });

  it('intervals are elapsed time from their anchor, whatever the zone (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1000, max: 3 * 24 * 3600_000 }),
        fc.option(fc.integer({ min: Date.UTC(2000, 0, 1), max: Date.UTC(2040, 0, 1) }), { nil: undefined }),
        fc.integer({ min: Date.UTC(1990, 0, 1), max: Date.UTC(2050, 0, 1) }),
        fc.constantFrom('UTC', 'America/New_York', 'Australia/Lord_Howe'),
        (every, start, after, timezone) => {
          const s = compileSchedule({ every, timezone, ...(start !== undefined ? { start } : {}) });
          const anchor = start ?? 0;
          const [a, b] = nextFires(s, after, 2) as [number, number];
          assert.ok(a > after && (a - anchor) % every === 0 && a >= anchor);
          assert.ok(a - after <= every || (start !== undefined && a === start));
          assert.equal(b - a, every);
          assert.deepEqual(nextFires(compileSchedule({ every, ...(start !== undefined ? { start } : {}) }), after, 2), [a, b]);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('nextFire chains: firesBetween equals repeated nextFire, increasing, no duplicates (property)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('*/7 * * * *', '0 */3 * * *', '30 1,2 * * *', '0 0 L * *', '0 12 * * MON#1', '15,45 * * * * *', '@hourly'),
        fc.constantFrom('UTC', 'Europe/Berlin', 'America/Santiago', 'Australia/Lord_Howe', 'Asia/Kathmandu'),
        fc.integer({ min: Date.UTC(2020, 0, 1), max: Date.UTC(2035, 0, 1) }),
        (cron, timezone, from) => {
          const s = compileSchedule({ cron, timezone });
          const list = nextFires(s, from - 1, 40);
          const { times } = firesBetween(s, from, list[list.length - 1]! + 1);
          assert.deepEqual(times, list);
          for (let i = 1; i < list.length; i++) assert.ok(list[i]! > list[i - 1]!);
        },
      ),
      { numRuns: 100 },
    );
  });
});
