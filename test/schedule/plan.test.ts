// The plan of one fire step (src/schedule/plan.ts): on-time fires, missed-fire policies, the
// upsert digest and the options of a declaration.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '../../src/core/errors.ts';
import { splitScheduleOptions } from '../../src/schedule/manage.ts';
import { checkPolicies, DEFAULT_POLICIES, planFire, readStored, scheduleDefinition, upcoming } from '../../src/schedule/plan.ts';
import { compileSchedule } from '../../src/schedule/spec.ts';

const T0 = Date.parse('2030-01-01T00:00:00Z');
const everySecond = (policies = {}) => ({ schedule: compileSchedule({ every: 1000 }), policies: { ...DEFAULT_POLICIES, ...policies } });

describe('planFire', () => {
  it('a fire on time: one run at F, next is the following time', () => {
    assert.deepEqual(planFire(everySecond(), T0, T0 - 2000), { runs: [{ at: T0, backfilled: false }], missed: 0, next: T0 + 1000 });
    // Late but within catchUpMs: still on time.
    assert.deepEqual(planFire(everySecond(), T0, T0 + 30_000).runs, [{ at: T0, backfilled: false }]);
  });

  it('missed fires beyond catchUpMs: skip counts them; the times still on time run', () => {
    const p = planFire(everySecond({ missed: 'skip', catchUpMs: 5000 }), T0, T0 + 10_000);
    // T0 .. T0+4s are late (before now - 5 s), T0+5s .. T0+10s on time.
    assert.equal(p.missed, 5);
    assert.deepEqual(
      p.runs.map((r) => [r.at - T0, r.backfilled]),
      [5000, 6000, 7000, 8000, 9000, 10_000].map((t) => [t, false]),
    );
    assert.equal(p.next, T0 + 11_000);
  });

  it('latest: one backfilled run for the latest missed time when none is on time', () => {
    const s = { schedule: compileSchedule({ every: '1h' }), policies: { ...DEFAULT_POLICIES, missed: 'latest' as const } };
    const now = T0 + 5 * 3600_000 + 120_000; // 5 h 2 min later: T0..T0+5h missed (6 times)
    const p = planFire(s, T0, now);
    assert.deepEqual(p.runs, [{ at: T0 + 5 * 3600_000, backfilled: true }]);
    assert.equal(p.missed, 5);
    assert.equal(p.next, T0 + 6 * 3600_000);
  });

  it('all: each missed time up to maxBackfill (the latest), backfilled; the rest counted', () => {
    const s = { schedule: compileSchedule({ every: '1h' }), policies: { ...DEFAULT_POLICIES, missed: 'all' as const, maxBackfill: 2 } };
    const p = planFire(s, T0, T0 + 5 * 3600_000 + 120_000);
    assert.deepEqual(p.runs, [
      { at: T0 + 4 * 3600_000, backfilled: true },
      { at: T0 + 5 * 3600_000, backfilled: true },
    ]);
    assert.equal(p.missed, 4);
  });

  it('more missed times than the step looks at: counted, and the next step goes on', () => {
    const p = planFire(everySecond({ missed: 'latest', catchUpMs: 0 }), T0, T0 + 100_000, 10);
    assert.deepEqual(p, { runs: [], missed: 10, next: T0 + 10_000 });
  });

  it('the end of a schedule: next null', () => {
    const s = { schedule: compileSchedule({ every: 1000, end: T0 + 1000 }), policies: DEFAULT_POLICIES };
    assert.equal(planFire(s, T0, T0).next, null);
  });
});

describe('definitions', () => {
  it('the digest changes with the spec, input, task or policies, and not otherwise', () => {
    const base = {
      id: 'a',
      queue: 'q',
      task: 't',
      schedule: compileSchedule({ cron: '0 * * * *' }),
      input: '{}',
      policies: DEFAULT_POLICIES,
      version: 1,
    };
    const h = scheduleDefinition(base, T0).hash;
    assert.equal(scheduleDefinition({ ...base }, T0 + 5).hash, h);
    assert.notEqual(scheduleDefinition({ ...base, input: '{"x":1}' }, T0).hash, h);
    assert.notEqual(scheduleDefinition({ ...base, task: 'u' }, T0).hash, h);
    assert.notEqual(scheduleDefinition({ ...base, schedule: compileSchedule({ cron: '5 * * * *' }) }, T0).hash, h);
    assert.notEqual(scheduleDefinition({ ...base, policies: { ...DEFAULT_POLICIES, missed: 'skip' } }, T0).hash, h);
    const d = scheduleDefinition(base, T0);
    assert.equal(d.next, T0, 'a fire time equal to now is the first');
    assert.deepEqual(readStored(d).policies, DEFAULT_POLICIES);
    assert.deepEqual(upcoming({ ...d, next: T0 }, 3), [T0, T0 + 3600_000, T0 + 7200_000]);
  });

  it('declaration options: spec, policies and version apart; bad ones named', () => {
    const s = splitScheduleOptions({ cron: '*/5 * * * *', timezone: 'Europe/Paris', missed: 'skip', input: { a: 1 }, version: 3 }, 'x');
    assert.equal(s.policies.missed, 'skip');
    assert.equal(s.version, 3);
    assert.deepEqual(s.input, { a: 1 });
    assert.equal(s.schedule.spec.timezone, 'Europe/Paris');
    assert.throws(
      () => splitScheduleOptions({ cron: '*/5 * * * *', missed: 'never' as 'skip' }, 'Schedule "x"'),
      /Schedule "x": missed: expected one of skip, latest, all/,
    );
    assert.throws(
      () => splitScheduleOptions({ every: '10m', overlap: 'queue' as 'skip', maxBackfill: 0 }, 'x'),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, /overlap/);
        assert.match(err.message, /maxBackfill/);
        return true;
      },
    );
    assert.throws(() => splitScheduleOptions({ cron: '61 * * * *' }, 'x'), /minute/);
    // A version is an integer from 0 to 2^53-1: a typo such as 1e300 would lock out every later update.
    for (const [version, shown] of [
      [1e300, '1e+300'],
      [1.5, '1.5'],
      [-1, '-1'],
      [2 ** 53, '9007199254740992'],
      ['7', '"7"'],
    ] as const) {
      assert.throws(
        () => splitScheduleOptions({ every: '1m', version: version as number }, 'Schedule "x"'),
        (err: unknown) =>
          err instanceof ConfigError &&
          err.message ===
            `Schedule "x": version must be an integer from 0 to 9007199254740991 (a build time or a release number), got ${shown}`,
      );
    }
    assert.equal(splitScheduleOptions({ every: '1m', version: 2 ** 53 - 1 }, 'x').version, 2 ** 53 - 1);
    const env = process.env.ERRAND_SCHEDULE_VERSION;
    try {
      process.env.ERRAND_SCHEDULE_VERSION = '1e300';
      assert.throws(
        () => splitScheduleOptions({ every: '1m' }, 'x'),
        /ERRAND_SCHEDULE_VERSION must be an integer from 0 to 9007199254740991 .*, got "1e300"$/,
      );
      process.env.ERRAND_SCHEDULE_VERSION = '20261205';
      assert.equal(splitScheduleOptions({ every: '1m' }, 'x').version, 20261205);
    } finally {
      if (env === undefined) delete process.env.ERRAND_SCHEDULE_VERSION;
      else process.env.ERRAND_SCHEDULE_VERSION = env;
    }
    assert.throws(() => checkPolicies({ priority: 5000 }, 'y'), /priority/);
  });
});
