/**
 * The broker conformance suite, section: schedules (upsertSchedule, fireSchedule, the listings,
 * pause, delete). The fire step is a compare-and-set on the stored next fire time that creates the
 * fire's runs in the same atomic step. See `suite.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import type { Broker, BrokerInspector, FireRequest, NewRun, RunRecord, ScheduleDefinition } from '../../src/broker/types.ts';
import { newRunId } from '../../src/core/ids.ts';
import { type ConformanceContext, Q, TASK } from './context.ts';

const SEC = 1000;

function def(over: Partial<ScheduleDefinition> = {}): ScheduleDefinition {
  return {
    id: 'every-second',
    queue: Q,
    task: TASK,
    spec: '{"every":1000}',
    input: '{"n":1}',
    options: '{}',
    hash: 'h1',
    version: 1,
    next: 1_000_000,
    ...over,
  };
}

/** The run of the fire of schedule `id` at nominal time `at`. */
function fireRun(at: number, id = 'every-second', backfilled = false): NewRun {
  return {
    id: newRunId(Q),
    task: TASK,
    queue: Q,
    input: '{"n":1}',
    priority: 0,
    runAt: at,
    idempotencyKey: `schedule:${id}:${at}`,
    schedule: { id, at, backfilled },
  };
}

function fire(at: number, now: number, over: Partial<FireRequest> = {}): FireRequest {
  return { queue: Q, id: 'every-second', hash: 'h1', expect: at, next: at + SEC, runs: [fireRun(at)], missed: 0, now, ...over };
}

async function runsOf(b: Broker, scheduleId = 'every-second'): Promise<RunRecord[]> {
  const all: RunRecord[] = [];
  for (const s of ['queued', 'scheduled'] as const) {
    const page = await (b as Broker & BrokerInspector).listRuns({ queue: Q, state: s, limit: 500 });
    all.push(...page.runs);
  }
  return all.filter((r) => r.schedule?.id === scheduleId);
}

export function scheduleConformance(c: ConformanceContext): void {
  const { open, share, test } = c;

  describe('schedules', () => {
    test('upsert creates a schedule; get and list read it back', async () => {
      const b = await open();
      const now = Date.now();
      const r = await b.upsertSchedule(def(), now);
      assert.equal(r.outcome, 'created');
      const s = await b.getSchedule(Q, 'every-second');
      assert.ok(s);
      assert.deepEqual(
        {
          next: s.next,
          paused: s.paused,
          fires: s.fires,
          missed: s.missed,
          hash: s.hash,
          version: s.version,
          spec: s.spec,
          input: s.input,
        },
        { next: 1_000_000, paused: false, fires: 0, missed: 0, hash: 'h1', version: 1, spec: '{"every":1000}', input: '{"n":1}' },
      );
      assert.deepEqual(
        (await b.listSchedules([Q])).map((x) => x.id),
        ['every-second'],
      );
      assert.equal(await b.getSchedule(Q, 'nope'), null);
    });

    test('the fire step creates one run marked with the schedule, and moves the next fire time', async () => {
      const b = await open();
      const now = Date.now();
      const F = now + 2 * SEC;
      await b.upsertSchedule(def({ next: F }), now);
      const out = await b.fireSchedule(fire(F, now));
      assert.equal(out.outcome, 'fired');
      assert.ok(out.outcome === 'fired');
      assert.equal(out.runs.length, 1);
      assert.equal(out.runs[0]?.created, true);
      assert.equal(out.runs[0]?.state, 'scheduled');
      const run = await b.getRun(out.runs[0]!.id);
      assert.deepEqual(run?.schedule, { id: 'every-second', at: F, backfilled: false });
      assert.equal(run?.runAt, F);
      const s = await b.getSchedule(Q, 'every-second');
      assert.equal(s?.next, F + SEC);
      assert.equal(s?.fires, 1);
      assert.equal(s?.lastFire, F);
      assert.equal(s?.lastRun, out.runs[0]!.id);
      // The reservation carries the mark too, once the run is due.
      const res = await b.reserve({ workerId: 'w', queues: [Q], max: 5, leaseMs: 30_000, now: F });
      assert.deepEqual(res.runs[0]?.schedule, { id: 'every-second', at: F, backfilled: false });
    });

    test("a fired run is created as an enqueued one: its task's flow-control limits hold for it", async () => {
      const b = await open();
      const now = Date.now();
      const flow = { group: 'conformance.fired', key: 'tenant-a', concurrency: 1, groupConcurrency: 5 };
      const limited = (at: number): NewRun => ({ ...fireRun(at), flow });
      await b.upsertSchedule(def({ next: now - 2 * SEC }), now);
      // Two fires due now (queued at once), one run ahead (scheduled, released by reserve when due).
      for (const at of [now - 2 * SEC, now - SEC, now]) {
        const run = { ...limited(at), runAt: at === now ? now + SEC : at };
        const out = await b.fireSchedule(fire(at, now, { runs: [run] }));
        assert.equal(out.outcome, 'fired');
      }
      const runs = await runsOf(b);
      assert.equal(runs.length, 3);
      for (const r of runs) assert.deepEqual({ group: r.flow?.group, key: r.flow?.key }, { group: flow.group, key: flow.key });
      // The key's limit is 1: one run at a time, whichever way the runs became due.
      const first = await c.reserveAll(b, 'w1', now + 2 * SEC, { max: 10 });
      assert.equal(first.runs.length, 1, 'the key is at its limit of 1 active run');
      assert.equal((await c.reserveAll(b, 'w2', now + 2 * SEC, { max: 10 })).runs.length, 0);
      const r0 = first.runs[0]!;
      await b.settle('w1', [{ id: r0.id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: 60_000 }], now + 2 * SEC);
      const second = await c.reserveAll(b, 'w2', now + 2 * SEC, { max: 10 });
      assert.equal(second.runs.length, 1, 'a freed slot lets the next fired run start');
      assert.deepEqual(second.runs[0]?.schedule?.id, 'every-second');
    });

    test('a stale compare-and-set loses and writes nothing', async () => {
      const b = await open();
      const now = Date.now();
      await b.upsertSchedule(def({ next: now }), now);
      assert.equal((await b.fireSchedule(fire(now, now))).outcome, 'fired');
      const again = await b.fireSchedule(fire(now, now));
      assert.deepEqual(again, { outcome: 'stale', next: now + SEC, hash: 'h1' });
      const wrongHash = await b.fireSchedule(fire(now + SEC, now, { hash: 'h0' }));
      assert.equal(wrongHash.outcome, 'stale');
      assert.equal((await runsOf(b)).length, 1);
      assert.equal((await b.getSchedule(Q, 'every-second'))?.fires, 1);
      assert.deepEqual(await b.fireSchedule({ ...fire(now, now), id: 'missing' }), { outcome: 'not_found' });
    });

    test(
      'two instances firing the same nominal time concurrently create one run',
      async () => {
        const a = await open();
        const b = await share(a);
        const now = Date.now();
        await a.upsertSchedule(def({ next: now }), now);
        let created = 0;
        for (let i = 0; i < 20; i++) {
          const F = now + i * SEC;
          // Each instance builds its own run (its own id), as two workers would.
          const outs = await Promise.all([a.fireSchedule(fire(F, now)), b.fireSchedule(fire(F, now)), a.fireSchedule(fire(F, now))]);
          const fired = outs.filter((o) => o.outcome === 'fired');
          assert.equal(fired.length, 1, `fire ${i}: one winner, got ${JSON.stringify(outs)}`);
          for (const o of outs) if (o.outcome !== 'fired') assert.equal(o.outcome, 'stale');
          created++;
        }
        const runs = await runsOf(a);
        assert.equal(runs.length, created);
        assert.equal(new Set(runs.map((r) => r.schedule?.at)).size, created);
      },
      'sameStorage',
    );

    test('overlap skip: decided in the fire step from the previous run as stored then, not as the caller saw it', async () => {
      const b = await open();
      const now = Date.now();
      await b.upsertSchedule(def({ next: now }), now);
      const first = await b.fireSchedule(fire(now, now));
      assert.ok(first.outcome === 'fired');
      const prev = first.runs[0]!.id;
      // The previous run is queued: skip creates nothing, counts the time as missed, moves on.
      const skipped = await b.fireSchedule(fire(now + SEC, now, { overlap: 'skip' }));
      assert.deepEqual(skipped, { outcome: 'fired', runs: [], missed: 1 });
      let s = await b.getSchedule(Q, 'every-second');
      assert.deepEqual([s?.next, s?.missed, s?.fires, s?.lastRun], [now + 2 * SEC, 1, 1, prev]);
      // Active is an overlap too. The caller's view (read before the run ended) does not matter:
      // the step reads the run's state where it creates the new one.
      const res = await c.reserveAll(b, 'w', now, { max: 1 });
      assert.deepEqual(
        res.runs.map((r) => r.id),
        [prev],
      );
      const again = await b.fireSchedule(fire(now + 2 * SEC, now, { overlap: 'skip' }));
      assert.ok(again.outcome === 'fired' && again.runs.length === 0);
      await b.settle('w', [{ id: prev, attempt: 1, outcome: 'succeeded', result: null, retentionMs: 60_000 }], now);
      const after = await b.fireSchedule(fire(now + 3 * SEC, now, { overlap: 'skip' }));
      assert.ok(after.outcome === 'fired');
      assert.equal(after.runs.length, 1);
      assert.equal(after.missed, 0);
      s = await b.getSchedule(Q, 'every-second');
      assert.deepEqual([s?.missed, s?.fires, s?.lastRun], [2, 2, after.runs[0]!.id]);
    });

    test('overlap buffer: nothing written while the previous run is due; then one run for the latest time', async () => {
      const b = await open();
      const now = Date.now();
      await b.upsertSchedule(def({ next: now }), now);
      const first = await b.fireSchedule(fire(now, now));
      assert.ok(first.outcome === 'fired');
      const prev = first.runs[0]!.id;
      const held = await b.fireSchedule(fire(now + SEC, now, { overlap: 'buffer' }));
      assert.deepEqual(held, { outcome: 'buffered', running: prev });
      let s = await b.getSchedule(Q, 'every-second');
      assert.deepEqual([s?.next, s?.missed, s?.fires], [now + SEC, 0, 1], 'the fire time stays due');
      await c.reserveAll(b, 'w', now, { max: 1 });
      await b.settle('w', [{ id: prev, attempt: 1, outcome: 'succeeded', result: null, retentionMs: 60_000 }], now);
      // Two times passed meanwhile: one run, for the latest; the other counted as missed.
      const runs = [fireRun(now + SEC), fireRun(now + 2 * SEC)];
      const out = await b.fireSchedule(fire(now + SEC, now, { overlap: 'buffer', runs, next: now + 3 * SEC }));
      assert.ok(out.outcome === 'fired');
      assert.equal(out.missed, 1);
      assert.deepEqual(
        out.runs.map((r) => r.id),
        [runs[1]!.id],
      );
      s = await b.getSchedule(Q, 'every-second');
      assert.deepEqual([s?.next, s?.missed, s?.fires, s?.lastFire, s?.lastRun], [now + 3 * SEC, 1, 2, now + 2 * SEC, runs[1]!.id]);
    });

    test('overlap cancel: the new run is created and the previous one still due is named; allow ignores it', async () => {
      const b = await open();
      const now = Date.now();
      await b.upsertSchedule(def({ next: now }), now);
      const first = await b.fireSchedule(fire(now, now));
      assert.ok(first.outcome === 'fired');
      const out = await b.fireSchedule(fire(now + SEC, now, { overlap: 'cancel' }));
      assert.ok(out.outcome === 'fired');
      assert.equal(out.runs.length, 1);
      assert.equal(out.overlapped, first.runs[0]!.id);
      const allowed = await b.fireSchedule(fire(now + 2 * SEC, now, { overlap: 'allow' }));
      assert.ok(allowed.outcome === 'fired');
      assert.equal(allowed.overlapped, undefined);
      assert.equal((await runsOf(b)).length, 3);
    });

    test(
      'overlap skip, callers at once on two instances: one run per time however they interleave',
      async () => {
        const a = await open();
        const b = await share(a);
        const now = Date.now();
        await a.upsertSchedule(def({ next: now }), now);
        for (let i = 0; i < 10; i++) {
          const F = now + i * SEC;
          const outs = await Promise.all([
            a.fireSchedule(fire(F, now, { overlap: 'skip' })),
            b.fireSchedule(fire(F, now, { overlap: 'skip' })),
          ]);
          assert.equal(outs.filter((o) => o.outcome === 'fired').length, 1, JSON.stringify(outs));
        }
        // The first time created a run, which stays queued: every later one overlapped it.
        const runs = await runsOf(a);
        assert.equal(runs.length, 1);
        const s = await a.getSchedule(Q, 'every-second');
        assert.deepEqual([s?.missed, s?.fires], [9, 1]);
      },
      'sameStorage',
    );

    test('a run of a fire time already created (a backfill, a resent fire) is not created again', async () => {
      const b = await open();
      const now = Date.now();
      const F = now - 10 * SEC;
      await b.upsertSchedule(def({ next: F }), now);
      // Backfill the range first, twice: each nominal time once.
      const range = [F - 2 * SEC, F - SEC, F];
      for (let round = 0; round < 2; round++) {
        const res = await b.enqueue(
          range.map((at) => fireRun(at, 'every-second', true)),
          now,
        );
        assert.deepEqual(
          res.map((r) => r.created),
          round === 0 ? [true, true, true] : [false, false, false],
        );
      }
      // The fire of F finds F's run: the fire moves on, no second run.
      const out = await b.fireSchedule(fire(F, now));
      assert.ok(out.outcome === 'fired');
      assert.equal(out.runs[0]?.created, false);
      assert.equal((await runsOf(b)).length, 3);
      assert.equal((await b.getSchedule(Q, 'every-second'))?.next, F + SEC);
    });

    test('missed fires are counted; a fire may create several runs or none', async () => {
      const b = await open();
      const now = Date.now();
      const F = now - 5 * SEC;
      await b.upsertSchedule(def({ next: F }), now);
      // Skip: no run, 5 missed, next moves past now.
      const out = await b.fireSchedule(fire(F, now, { runs: [], missed: 5, next: now + SEC }));
      assert.ok(out.outcome === 'fired');
      assert.deepEqual(out.runs, []);
      const s = await b.getSchedule(Q, 'every-second');
      assert.equal(s?.missed, 5);
      assert.equal(s?.fires, 0);
      assert.equal(s?.next, now + SEC);
      // The schedule ends: next null, no more due.
      const end = await b.fireSchedule(fire(now + SEC, now, { next: null }));
      assert.equal(end.outcome, 'fired');
      assert.equal((await b.getSchedule(Q, 'every-second'))?.next, null);
      const due = await b.dueSchedules([Q], now + 100 * SEC, 10);
      assert.deepEqual(due, { schedules: [], nextAt: null });
    });

    test('pause stops fires and leaves the due list; resume brings it back; delete removes it', async () => {
      const b = await open();
      const now = Date.now();
      await b.upsertSchedule(def({ next: now }), now);
      assert.equal(await b.pauseSchedule(Q, 'every-second', true, now), true);
      assert.deepEqual(await b.fireSchedule(fire(now, now)), { outcome: 'paused' });
      assert.deepEqual((await b.dueSchedules([Q], now, 10)).schedules, []);
      assert.equal((await b.getSchedule(Q, 'every-second'))?.paused, true);
      // An upsert keeps the pause.
      await b.upsertSchedule(def({ next: now, version: 2 }), now);
      assert.equal((await b.getSchedule(Q, 'every-second'))?.paused, true);
      assert.equal(await b.pauseSchedule(Q, 'every-second', false, now), true);
      const due = await b.dueSchedules([Q], now, 10);
      assert.deepEqual(
        due.schedules.map((s) => s.id),
        ['every-second'],
      );
      assert.equal((await b.fireSchedule(fire(now, now))).outcome, 'fired');
      assert.equal(await b.deleteSchedule(Q, 'every-second'), true);
      assert.equal(await b.deleteSchedule(Q, 'every-second'), false);
      assert.equal(await b.pauseSchedule(Q, 'every-second', true, now), false);
      assert.deepEqual(await b.listSchedules([Q]), []);
      assert.equal((await runsOf(b)).length, 1, 'the runs stay');
    });

    test('a newer version wins; an older one never flaps it back; equal versions settle on one', async () => {
      const b = await open();
      const now = Date.now();
      assert.equal(
        (await b.upsertSchedule(def({ version: 5, hash: 'v5', spec: '{"every":5000}', next: now + 5 * SEC }), now)).outcome,
        'created',
      );
      const older = await b.upsertSchedule(def({ version: 4, hash: 'v4', spec: '{"every":4000}', next: now + 4 * SEC }), now);
      assert.equal(older.outcome, 'older');
      assert.equal(older.schedule.hash, 'v5');
      assert.equal((await b.upsertSchedule(def({ version: 5, hash: 'v5', spec: '{"every":5000}' }), now)).outcome, 'unchanged');
      const newer = await b.upsertSchedule(def({ version: 6, hash: 'v6', spec: '{"every":6000}', next: now + 6 * SEC }), now);
      assert.equal(newer.outcome, 'updated');
      assert.equal(newer.schedule.next, now + 6 * SEC, 'a changed spec takes the given next time');
      // Same spec, new input: the next time is kept.
      const kept = await b.upsertSchedule(
        def({ version: 7, hash: 'v7', spec: '{"every":6000}', input: '{"n":2}', next: now + 99 * SEC }),
        now,
      );
      assert.equal(kept.schedule.next, now + 6 * SEC);
      assert.equal(kept.schedule.input, '{"n":2}');
      // Two definitions of one version, in either order, end on the greater hash.
      for (const order of [
        ['x-a', 'x-b'],
        ['x-b', 'x-a'],
      ]) {
        const id = `tie-${order[0]}`;
        for (const h of order) await b.upsertSchedule(def({ id, version: 1, hash: h as string }), now);
        assert.equal((await b.getSchedule(Q, id))?.hash, 'x-b');
      }
    });

    test('a version stored before versions were checked (1.5, 1e300) reads back; a greater one replaces 1.5, any replaces 1e300', async () => {
      // The broker itself takes what the guard refuses: as an earlier Errand stored it.
      const b = await open();
      const now = Date.now();
      await b.upsertSchedule(def({ id: 'frac', version: 1.5, hash: 'a' }), now);
      await b.upsertSchedule(def({ id: 'huge', version: 1e300, hash: 'a' }), now);
      assert.equal((await b.getSchedule(Q, 'frac'))?.version, 1.5);
      assert.equal((await b.getSchedule(Q, 'huge'))?.version, 1e300);
      assert.deepEqual(
        (await b.listSchedules([Q])).map((s) => [s.id, s.version]),
        [
          ['frac', 1.5],
          ['huge', 1e300],
        ],
      );
      assert.equal((await b.upsertSchedule(def({ id: 'frac', version: 1, hash: 'b' }), now)).outcome, 'older');
      const frac = await b.upsertSchedule(def({ id: 'frac', version: 2, hash: 'b' }), now);
      assert.deepEqual([frac.outcome, frac.schedule.version], ['updated', 2]);
      const huge = await b.upsertSchedule(def({ id: 'huge', version: 0, hash: 'b' }), now);
      assert.deepEqual([huge.outcome, huge.schedule.version], ['updated', 0]);
      // And it never comes back over a version, whatever its hash.
      assert.equal((await b.upsertSchedule(def({ id: 'huge', version: 1e300, hash: 'z' }), now)).outcome, 'older');
      assert.equal((await b.upsertSchedule(def({ id: 'huge', version: 2 ** 53, hash: 'z' }), now)).outcome, 'older');
      assert.equal((await b.upsertSchedule(def({ id: 'huge', version: 2 ** 53 - 1, hash: 'z' }), now)).outcome, 'updated');
    });

    test('dueSchedules gives the due ones, earliest first, and the next time of the others', async () => {
      const b = await open();
      const now = Date.now();
      for (let i = 0; i < 5; i++) await b.upsertSchedule(def({ id: `s${i}`, next: now + i * SEC }), now);
      const due = await b.dueSchedules([Q, 'other-q'], now + 2 * SEC, 2);
      assert.deepEqual(
        due.schedules.map((s) => s.id),
        ['s0', 's1'],
      );
      assert.equal(due.nextAt, now + 2 * SEC);
      const later = await b.dueSchedules([Q], now - SEC, 10);
      assert.deepEqual(later, { schedules: [], nextAt: now });
    });
  });
}
