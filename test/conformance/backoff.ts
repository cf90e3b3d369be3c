/**
 * The broker conformance suite, section: back-off (the `backoff` settlement, docs/flow-control.md):
 * a handler that asked to back off puts its run back without using an attempt, and its key (or its
 * group) starts nothing until the time given. See `suite.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import type { Broker, FlowSpec, Reservation, Settlement } from '../../src/broker/types.ts';
import { type ConformanceContext, LEASE, newRun, Q, RETAIN } from './context.ts';

const GROUP = 'conformance.backoff';

function spec(key: string, concurrency = 0): FlowSpec {
  return { group: GROUP, key, concurrency };
}

async function enqueueKeyed(b: Broker, now: number, key: string, n: number, flow?: FlowSpec): Promise<string[]> {
  const runs = Array.from({ length: n }, (_, i) => ({ ...newRun(Q, now), input: JSON.stringify({ key, i }), ...(flow && { flow }) }));
  return (await b.enqueue(runs, now)).map((r) => r.id);
}

const keyOf = (r: Reservation) => (JSON.parse(r.input) as { key: string }).key;

function backOff(r: Reservation, until: number, scope: 'key' | 'group' = 'key'): Settlement {
  return { id: r.id, attempt: r.attempt, outcome: 'backoff', until, scope };
}

export function backoffConformance(c: ConformanceContext): void {
  const { open, test, getRun, reserveAll } = c;
  describe('flow control: back-off', () => {
    test("a backed-off key starts nothing until then; its run waits at the key's head, its attempt not counted", async () => {
      const b = await open();
      const t0 = Date.now();
      const [a1, a2] = await enqueueKeyed(b, t0, 'a', 2, spec('a', 1));
      await enqueueKeyed(b, t0, 'b', 2, spec('b', 1));
      const r1 = await reserveAll(b, 'w1', t0, { max: 10 });
      assert.deepStrictEqual(r1.runs.map(keyOf).sort(), ['a', 'b']);
      const ra = r1.runs.find((r) => keyOf(r) === 'a') as Reservation;
      const rb = r1.runs.find((r) => keyOf(r) === 'b') as Reservation;
      assert.equal(ra.id, a1);
      assert.deepStrictEqual(await b.settle('w1', [backOff(ra, t0 + 5_000)], t0 + 1), ['ok']);

      const info = await getRun(b, a1 as string);
      assert.equal(info.state, 'queued');
      assert.equal(info.attempts, 0, 'the attempt is not counted');
      assert.equal(info.history.at(-1)?.outcome, 'backoff');
      assert.deepStrictEqual(info.flow?.waiting, { reason: 'key_backoff', until: t0 + 5_000 });
      assert.deepStrictEqual((await getRun(b, a2 as string)).flow?.waiting, { reason: 'key_backoff', until: t0 + 5_000 });

      // Key b goes on; key a does not, although its slot is free.
      await b.settle('w1', [{ id: rb.id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN }], t0 + 2);
      const r2 = await reserveAll(b, 'w1', t0 + 3, { max: 10 });
      assert.deepStrictEqual(r2.runs.map(keyOf), ['b']);
      assert.equal(r2.nextAt, t0 + 5_000, 'nextAt: when the key may start again');
      await b.settle(
        'w1',
        [{ id: (r2.runs[0] as Reservation).id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN }],
        t0 + 4,
      );
      assert.deepStrictEqual((await reserveAll(b, 'w1', t0 + 4_999, { max: 10 })).runs, []);

      const r3 = await reserveAll(b, 'w1', t0 + 5_000, { max: 10 });
      assert.deepStrictEqual(
        r3.runs.map((r) => [r.id, r.attempt]),
        [[a1, 1]],
        'the backed-off run first (the key at its limit of 1), as attempt 1 again',
      );
      assert.equal((await getRun(b, a2 as string)).flow?.waiting?.reason, 'key_concurrency');
    });

    test('a back-off with scope group holds every key of the group; other groups go on', async () => {
      const b = await open();
      const t0 = Date.now();
      const [a1] = await enqueueKeyed(b, t0, 'a', 1, spec('a', 1));
      const [, b2] = await enqueueKeyed(b, t0, 'b', 2, spec('b', 1));
      const [, x2] = await enqueueKeyed(b, t0, 'x', 2, { group: 'conformance.other', key: 'x', concurrency: 1 });
      const r1 = await reserveAll(b, 'w1', t0, { max: 10 });
      assert.deepStrictEqual(r1.runs.map(keyOf).sort(), ['a', 'b', 'x']);
      const ra = r1.runs.find((r) => r.id === a1) as Reservation;
      const done = r1.runs
        .filter((r) => r !== ra)
        .map((r): Settlement => ({ id: r.id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN }));
      assert.deepStrictEqual(await b.settle('w1', [backOff(ra, t0 + 1_000, 'group'), ...done], t0 + 1), ['ok', 'ok', 'ok']);
      assert.deepStrictEqual((await getRun(b, a1 as string)).flow?.waiting, { reason: 'group_backoff', until: t0 + 1_000 });
      assert.deepStrictEqual((await getRun(b, b2 as string)).flow?.waiting, { reason: 'group_backoff', until: t0 + 1_000 });
      const r2 = await reserveAll(b, 'w1', t0 + 2, { max: 10 });
      assert.deepStrictEqual(
        r2.runs.map((r) => r.id),
        [x2],
        'only the other group starts',
      );
      assert.equal(r2.nextAt, t0 + 1_000);
      const r3 = await reserveAll(b, 'w1', t0 + 1_000, { max: 10 });
      assert.deepStrictEqual(r3.runs.map((r) => r.id).sort(), [a1, b2].sort(), 'the group starts again when the back-off ends');
    });

    test("a run whose key is '' backs off its group", async () => {
      const b = await open();
      const t0 = Date.now();
      await enqueueKeyed(b, t0, '', 2, { group: GROUP, key: '', groupConcurrency: 5 });
      await enqueueKeyed(b, t0, 'k', 1, spec('k'));
      const r1 = await reserveAll(b, 'w1', t0, { max: 10 });
      const blank = r1.runs.find((r) => keyOf(r) === '') as Reservation;
      const others = r1.runs.filter((r) => r !== blank);
      await b.settle(
        'w1',
        [
          backOff(blank, t0 + 1_000),
          ...others.map((r): Settlement => ({ id: r.id, attempt: 1, outcome: 'failed', error: '{}', retentionMs: RETAIN })),
        ],
        t0 + 1,
      );
      assert.equal((await getRun(b, blank.id)).flow?.waiting?.reason, 'group_backoff');
    });

    test('a later back-off does not shorten a longer one already set', async () => {
      const b = await open();
      const t0 = Date.now();
      await enqueueKeyed(b, t0, 'a', 2, spec('a'));
      const [x, y] = (await reserveAll(b, 'w1', t0, { max: 10 })).runs as [Reservation, Reservation];
      await b.settle('w1', [backOff(x, t0 + 10_000)], t0 + 1);
      await b.settle('w1', [backOff(y, t0 + 2_000)], t0 + 2);
      assert.deepStrictEqual((await getRun(b, y.id)).flow?.waiting, { reason: 'key_backoff', until: t0 + 10_000 });
      assert.deepStrictEqual((await reserveAll(b, 'w1', t0 + 5_000, { max: 10 })).runs, []);
      const back = await reserveAll(b, 'w1', t0 + 10_000, { max: 10 });
      assert.deepStrictEqual(back.runs.map((r) => r.id).sort(), [x.id, y.id].sort());
    });

    test('a run without flow control is put back alone: scheduled until then, the attempt not counted', async () => {
      const b = await open();
      const t0 = Date.now();
      const [id] = await enqueueKeyed(b, t0, 'n', 1);
      const r = (await reserveAll(b, 'w1', t0, { max: 1 })).runs[0] as Reservation;
      assert.deepStrictEqual(await b.settle('w1', [backOff(r, t0 + 3_000)], t0 + 1), ['ok']);
      const info = await getRun(b, id as string);
      assert.equal(info.state, 'scheduled');
      assert.equal(info.runAt, t0 + 3_000);
      assert.equal(info.attempts, 0);
      assert.equal(info.history.at(-1)?.outcome, 'backoff');
      assert.deepStrictEqual((await reserveAll(b, 'w1', t0 + 2_999, { max: 1 })).runs, []);
      const again = await reserveAll(b, 'w1', t0 + 3_000, { max: 1 });
      assert.deepStrictEqual(
        again.runs.map((x) => [x.id, x.attempt]),
        [[id, 1]],
      );
    });

    test('a back-off sent along with the next reserve applies before it leases; a stale one is lost', async () => {
      const b = await open();
      const t0 = Date.now();
      await enqueueKeyed(b, t0, 'a', 2, spec('a', 1));
      const r = (await reserveAll(b, 'w1', t0, { max: 10 })).runs[0] as Reservation;
      const res = await b.reserve({ workerId: 'w1', queues: [Q], max: 10, leaseMs: LEASE, now: t0 + 1, settle: [backOff(r, t0 + 1_000)] });
      assert.deepStrictEqual(res.settled, ['ok']);
      assert.deepStrictEqual(res.runs, [], 'the key is backed off');
      assert.deepStrictEqual(await b.settle('w1', [backOff(r, t0 + 1_000)], t0 + 2), ['lost'], 'no longer held');
      assert.deepStrictEqual(await b.settle('w2', [{ ...backOff(r, t0 + 1_000), attempt: 7 }], t0 + 2), ['lost']);
    });

    test('property: random back-offs, successes and reserves over 4 keys; a key never starts a run before its back-off ends, no back-off uses an attempt, every run ends', async () => {
      const b = await open();
      let seed = 777;
      const rand = () => {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        return seed / 2 ** 31;
      };
      const keys = ['a', 'b', 'c', ''];
      const t0 = Date.now();
      let now = t0;
      for (const k of keys) await enqueueKeyed(b, now, k, 6, { group: GROUP, key: k, concurrency: 2 });
      const heldKey = new Map<string, number>(); // key -> until
      let heldGroup = 0;
      const backOffs = new Map<string, number>(); // run -> back-offs
      let done = 0;
      for (let step = 0; step < 400 && done < 24; step++) {
        now += Math.floor(rand() * 120);
        const r = await reserveAll(b, 'w1', now, { max: 3 });
        // `now` is this test's simulated clock, given to the broker: whether a held key or group is
        // served at a step is an order of events in the model, not a measure of elapsed time.
        const groupHeld = heldGroup > now;
        for (const run of r.runs) {
          const k = keyOf(run);
          const keyHeld = (heldKey.get(k) ?? 0) > now;
          assert.equal(groupHeld, false, `step ${step}: a run of the group started while the group was backed off`);
          assert.equal(keyHeld, false, `step ${step}: key ${k} started a run while backed off`);
          assert.equal(run.attempt, 1, `step ${step}: run ${run.id} starts as attempt 1 (back-offs used none)`);
        }
        const outcomes: Settlement[] = r.runs.map((run) => {
          const k = keyOf(run);
          const x = rand();
          if (x < 0.4) {
            const until = now + 1 + Math.floor(rand() * 400);
            const scope = x < 0.08 ? 'group' : 'key';
            backOffs.set(run.id, (backOffs.get(run.id) ?? 0) + 1);
            if (scope === 'group' || k === '') heldGroup = Math.max(heldGroup, until);
            else heldKey.set(k, Math.max(heldKey.get(k) ?? 0, until));
            return backOff(run, until, scope);
          }
          done++;
          return { id: run.id, attempt: run.attempt, outcome: 'succeeded', result: null, retentionMs: RETAIN };
        });
        if (outcomes.length)
          assert.deepStrictEqual(
            await b.settle('w1', outcomes, now),
            outcomes.map(() => 'ok'),
          );
        if (r.runs.length === 0 && r.nextAt !== null && r.nextAt > now) now = r.nextAt - 1;
      }
      assert.equal(done, 24, 'every run succeeded in the end');
      assert.ok([...backOffs.values()].reduce((x, y) => x + y, 0) > 5, 'the sequence backed off');
      assert.equal((await b.counts([Q]))[Q]?.succeeded, 24);
    });

    test('counts: a backed-off run is queued; cancelling it frees its key', async () => {
      const b = await open();
      const t0 = Date.now();
      const [id] = await enqueueKeyed(b, t0, 'a', 1, spec('a', 1));
      const r = (await reserveAll(b, 'w1', t0, { max: 10 })).runs[0] as Reservation;
      await b.settle('w1', [backOff(r, t0 + 60_000)], t0 + 1);
      assert.equal((await b.counts([Q]))[Q]?.queued, 1);
      assert.equal((await b.counts([Q]))[Q]?.active, 0);
      assert.deepStrictEqual(await b.cancel(id as string, t0 + 2), { outcome: 'cancelled', previous: 'queued' });
      assert.equal((await b.counts([Q]))[Q]?.queued, 0);
    });
  });
}
