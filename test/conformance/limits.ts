/**
 * The broker conformance suite, section: flow control (`NewRun.flow`, docs/flow-control.md):
 * concurrency limits per key and per group enforced by `reserve`, slots freed by every path,
 * round-robin fairness between keys, wake-ups when a slot frees. See `suite.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import type { Broker, BrokerInspector, FlowSpec, Reservation } from '../../src/broker/types.ts';
import { type ConformanceContext, errorText, LEASE, NOTIFY_TIMEOUT_MS, newRun, Q, RETAIN } from './context.ts';

const GROUP = 'conformance.limited';

function flow(key: string, concurrency = 0, groupConcurrency = 0): FlowSpec {
  return { group: GROUP, key, concurrency, groupConcurrency };
}

/** Runs reserved, counted by key (the key is in the input: see `enqueueKeyed`). */
function byKey(runs: readonly Reservation[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of runs) {
    const k = (JSON.parse(r.input) as { key: string }).key;
    m.set(k, (m.get(k) ?? 0) + 1);
  }
  return m;
}

async function enqueueKeyed(b: Broker, now: number, key: string, n: number, spec: FlowSpec, over: { runAt?: number } = {}) {
  const runs = Array.from({ length: n }, (_, i) => ({ ...newRun(Q, now, over), input: JSON.stringify({ key, i }), flow: spec }));
  const res = await b.enqueue(runs, now);
  return res.map((r) => r.id);
}

export function limitsConformance(c: ConformanceContext): void {
  const { open, share, test, getRun, reserveAll } = c;
  describe('flow control: concurrency limits', () => {
    test('a key never has more active runs than its limit; other keys are not held back', async () => {
      const b = await open();
      const t0 = Date.now();
      await enqueueKeyed(b, t0, 'a', 5, flow('a', 2));
      await enqueueKeyed(b, t0, 'b', 1, flow('b', 2));
      const r1 = await reserveAll(b, 'w1', t0, { max: 10 });
      assert.deepStrictEqual(Object.fromEntries(byKey(r1.runs)), { a: 2, b: 1 });
      assert.deepStrictEqual((await reserveAll(b, 'w2', t0, { max: 10 })).runs, [], 'key a is at its limit');
      const counts = (await b.counts([Q]))[Q];
      assert.equal(counts?.queued, 3, 'the waiting runs are queued');
      assert.equal(counts?.active, 3);
    });

    test('a group limit caps the runs of all its keys together', async () => {
      const b = await open();
      const t0 = Date.now();
      for (const k of ['a', 'b', 'c', 'd', 'e']) await enqueueKeyed(b, t0, k, 2, flow(k, 2, 3));
      const r1 = await reserveAll(b, 'w1', t0, { max: 10 });
      assert.equal(r1.runs.length, 3);
      assert.deepStrictEqual((await reserveAll(b, 'w1', t0, { max: 10 })).runs, []);
      await b.settle(
        'w1',
        [{ id: (r1.runs[0] as Reservation).id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN }],
        t0 + 1,
      );
      assert.equal((await reserveAll(b, 'w1', t0 + 2, { max: 10 })).runs.length, 1, 'one slot freed, one run more');
    });

    test('the key alone (no group limit) and the group alone (key "") both hold', async () => {
      const b = await open();
      const t0 = Date.now();
      await enqueueKeyed(b, t0, '', 4, { group: GROUP, key: '', groupConcurrency: 2 });
      await enqueueKeyed(b, t0, 'x', 4, { group: 'conformance.other', key: 'x', concurrency: 1 });
      const r = await reserveAll(b, 'w1', t0, { max: 10 });
      assert.deepStrictEqual(Object.fromEntries(byKey(r.runs)), { '': 2, x: 1 });
    });

    test('keys are served round robin: a quiet key is not behind a large backlog', async () => {
      const b = await open();
      const t0 = Date.now();
      const spec = flow('big', 0);
      for (let i = 0; i < 4; i++) await enqueueKeyed(b, t0, 'big', 500, spec);
      const [quiet] = await enqueueKeyed(b, t0 + 1, 'quiet', 1, flow('quiet', 0));
      const first = await reserveAll(b, 'w1', t0 + 2, { max: 2 });
      assert.ok(
        first.runs.some((r) => r.id === quiet),
        `the quiet key's run is among the first two reserved (got ${JSON.stringify(Object.fromEntries(byKey(first.runs)))})`,
      );
      const order: string[] = [];
      await enqueueKeyed(b, t0 + 3, 'k1', 3, flow('k1'));
      await enqueueKeyed(b, t0 + 3, 'k2', 3, flow('k2'));
      for (let i = 0; i < 9; i++) {
        const r = await reserveAll(b, 'w1', t0 + 4, { max: 1 });
        for (const run of r.runs) order.push((JSON.parse(run.input) as { key: string }).key);
      }
      assert.deepStrictEqual(order, ['big', 'k1', 'k2', 'big', 'k1', 'k2', 'big', 'k1', 'k2'], 'one run per key in turn');
    });

    test("a key's limit is its latest queued run's: lowered, it holds at once", async () => {
      const b = await open();
      const t0 = Date.now();
      await enqueueKeyed(b, t0, 'a', 3, flow('a', 3));
      assert.equal((await reserveAll(b, 'w1', t0, { max: 1 })).runs.length, 1);
      await enqueueKeyed(b, t0 + 1, 'a', 3, flow('a', 1));
      assert.deepStrictEqual((await reserveAll(b, 'w1', t0 + 2, { max: 10 })).runs, [], 'one active, limit now 1');
      await enqueueKeyed(b, t0 + 3, 'a', 1, flow('a', 4));
      assert.equal((await reserveAll(b, 'w1', t0 + 4, { max: 10 })).runs.length, 3, 'raised to 4: three more');
    });

    test('within a key, runs are served in the order they were queued', async () => {
      const b = await open();
      const t0 = Date.now();
      const idsA = await enqueueKeyed(b, t0, 'a', 5, flow('a', 1));
      const got: string[] = [];
      for (let i = 0; i < 5; i++) {
        const r = await reserveAll(b, 'w1', t0 + i, { max: 5 });
        assert.equal(r.runs.length, 1);
        const run = r.runs[0] as Reservation;
        got.push(run.id);
        await b.settle('w1', [{ id: run.id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN }], t0 + i);
      }
      assert.deepStrictEqual(got, idsA);
    });

    const frees: [string, (b: Broker, run: Reservation, now: number) => Promise<number>][] = [
      [
        'settle succeeded',
        async (b, r, now) => {
          await b.settle('w1', [{ id: r.id, attempt: r.attempt, outcome: 'succeeded', result: null, retentionMs: RETAIN }], now);
          return now;
        },
      ],
      [
        'settle failed',
        async (b, r, now) => {
          await b.settle('w1', [{ id: r.id, attempt: r.attempt, outcome: 'failed', error: errorText('x'), retentionMs: RETAIN }], now);
          return now;
        },
      ],
      [
        'settle with retention 0',
        async (b, r, now) => {
          await b.settle('w1', [{ id: r.id, attempt: r.attempt, outcome: 'succeeded', result: null, retentionMs: 0 }], now);
          return now;
        },
      ],
      [
        'settle retry (later)',
        async (b, r, now) => {
          await b.settle('w1', [{ id: r.id, attempt: r.attempt, outcome: 'retry', error: errorText('x'), runAt: now + 60_000 }], now);
          return now;
        },
      ],
      [
        'cancel',
        async (b, r, now) => {
          assert.equal((await b.cancel(r.id, now)).outcome, 'cancelled');
          return now;
        },
      ],
      [
        'lease expiry (a crashed worker)',
        async (_b, _r, now) => now + LEASE, // the next reserve recovers the lease
      ],
    ];
    for (const [how, free] of frees) {
      test(`a slot is freed by ${how}, exactly once`, async () => {
        const b = await open();
        const t0 = Date.now();
        const ids = await enqueueKeyed(b, t0, 'a', 3, flow('a', 1));
        const r1 = await reserveAll(b, 'w1', t0, { max: 5 });
        assert.deepStrictEqual(
          r1.runs.map((r) => r.id),
          [ids[0]],
        );
        const t1 = await free(b, r1.runs[0] as Reservation, t0 + 1);
        const r2 = await reserveAll(b, 'w2', t1, { max: 5 });
        assert.equal(r2.runs.length, 1, 'one slot freed: one run');
        // A lease recovered requeues its run at the head of its key: it is the one reserved again.
        if (how.startsWith('lease')) assert.equal(r2.runs[0]?.id, ids[0]);
        else assert.equal(r2.runs[0]?.id, ids[1]);
        assert.deepStrictEqual((await reserveAll(b, 'w3', t1 + 1, { max: 5 })).runs, [], 'the key is at its limit again');
        const counts = (await b.counts([Q]))[Q];
        assert.equal(counts?.active, 1);
      });
    }

    test('a slot is freed by release; the released run is served again first', async () => {
      const b = await open();
      const t0 = Date.now();
      const ids = await enqueueKeyed(b, t0, 'a', 2, flow('a', 1));
      const r1 = await reserveAll(b, 'w1', t0, { max: 5 });
      await b.release('w1', [{ id: ids[0] as string, attempt: 1 }], t0 + 1);
      const r2 = await reserveAll(b, 'w2', t0 + 2, { max: 5 });
      assert.deepStrictEqual(
        r2.runs.map((r) => r.id),
        r1.runs.map((r) => r.id),
      );
    });

    test('scheduled, retried and replayed runs come back under their limits', async () => {
      const b = await open();
      const t0 = Date.now();
      await enqueueKeyed(b, t0, 'a', 3, flow('a', 1), { runAt: t0 + 1000 });
      assert.deepStrictEqual((await reserveAll(b, 'w1', t0, { max: 5 })).runs, [], 'not due yet');
      const r1 = await reserveAll(b, 'w1', t0 + 1000, { max: 5 });
      assert.equal(r1.runs.length, 1, 'promoted, but one at a time');
      const run = r1.runs[0] as Reservation;
      await b.settle('w1', [{ id: run.id, attempt: 1, outcome: 'failed', error: errorText('x'), retentionMs: RETAIN }], t0 + 1001);
      const r2 = await reserveAll(b, 'w1', t0 + 1002, { max: 5 });
      assert.equal(r2.runs.length, 1);
      assert.deepStrictEqual(await b.retry(run.id, t0 + 1003), { outcome: 'queued' });
      assert.deepStrictEqual((await reserveAll(b, 'w1', t0 + 1004, { max: 5 })).runs, [], 'the replayed run waits for the slot');
      const counts = (await b.counts([Q]))[Q];
      assert.equal(counts?.queued, 2);
      assert.equal(counts?.active, 1);
    });

    test('cancel and purge of waiting runs leave the counts exact', async () => {
      const b = await open();
      const t0 = Date.now();
      const ids = await enqueueKeyed(b, t0, 'a', 4, flow('a', 1));
      await reserveAll(b, 'w1', t0, { max: 5 });
      assert.equal((await b.cancel(ids[2] as string, t0 + 1)).outcome, 'cancelled');
      assert.equal((await b.counts([Q]))[Q]?.queued, 2);
      const inspector = b as Broker & { purge?: (q: string, now: number) => Promise<number> };
      if (inspector.purge) {
        assert.equal(await inspector.purge(Q, t0 + 2), 2);
        assert.equal((await b.counts([Q]))[Q]?.queued, 0);
      }
      await b.settle('w1', [{ id: ids[0] as string, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN }], t0 + 3);
      const left = inspector.purge ? [] : [ids[1], ids[3]];
      const after = await reserveAll(b, 'w1', t0 + 4, { max: 5 });
      assert.deepStrictEqual(
        after.runs.map((r) => r.id),
        left.slice(0, 1),
      );
      // The key's slot and its list are still right: a new run is served at once (or after those left).
      const [fresh] = await enqueueKeyed(b, t0 + 5, 'a', 1, flow('a', 1));
      if (!inspector.purge) {
        await b.settle('w1', [{ id: ids[1] as string, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN }], t0 + 6);
        assert.deepStrictEqual(
          (await reserveAll(b, 'w1', t0 + 7, { max: 5 })).runs.map((r) => r.id),
          [ids[3]],
        );
        return;
      }
      assert.deepStrictEqual(
        (await reserveAll(b, 'w1', t0 + 7, { max: 5 })).runs.map((r) => r.id),
        [fresh],
      );
      assert.equal((await getRun(b, fresh as string)).state, 'active');
    });

    test(
      'concurrent reservers on two instances never exceed a limit',
      async () => {
        const a = await open();
        const b2 = await share(a);
        const t0 = Date.now();
        const keys = Array.from({ length: 10 }, (_, i) => `k${i}`);
        for (const k of keys) await enqueueKeyed(a, t0, k, 20, flow(k, 2, 15));
        const active = new Map<string, Reservation>();
        let now = t0;
        for (let round = 0; round < 12; round++) {
          now++;
          const got = await Promise.all(
            [a, b2, a, b2].map((x, i) => reserveAll(x, `w${i}`, now, { max: 7 }).then((r) => r.runs.map((run) => ({ run, w: `w${i}` })))),
          );
          for (const { run, w } of got.flat()) active.set(run.id, { ...run, queue: w });
          const per = byKey([...active.values()]);
          for (const [k, n] of per) assert.ok(n <= 2, `key ${k} has ${n} active runs (limit 2)`);
          assert.ok(active.size <= 15, `${active.size} active runs in the group (limit 15)`);
          // Settle about half of them.
          const done = [...active.values()].filter((_, i) => i % 2 === 0);
          for (const r of done) {
            await (r.queue.endsWith('1') || r.queue.endsWith('3') ? b2 : a).settle(
              r.queue,
              [{ id: r.id, attempt: r.attempt, outcome: 'succeeded', result: null, retentionMs: RETAIN }],
              now,
            );
            active.delete(r.id);
          }
        }
      },
      'sameStorage',
    );

    test("a run's record names its key and, while queued, the limit that holds it back", async () => {
      const b = await open();
      const t0 = Date.now();
      const ids = await enqueueKeyed(b, t0, 'a', 2, flow('a', 1));
      const [other] = await enqueueKeyed(b, t0, 'b', 1, flow('b', 1));
      assert.deepStrictEqual((await getRun(b, ids[1] as string)).flow, { group: GROUP, key: 'a' }, 'nothing holds it yet');
      await reserveAll(b, 'w1', t0, { max: 1 });
      const held = await getRun(b, ids[1] as string);
      assert.deepStrictEqual(held.flow, { group: GROUP, key: 'a', waiting: { reason: 'key_concurrency', active: 1, limit: 1 } });
      assert.deepStrictEqual((await getRun(b, other as string)).flow, { group: GROUP, key: 'b' }, 'its turn has not come');
      const active = await getRun(b, ids[0] as string);
      assert.deepStrictEqual(active.flow, { group: GROUP, key: 'a' }, 'an active run: no waiting');

      const g = await open();
      await enqueueKeyed(g, t0, 'x', 2, { group: GROUP, key: 'x', groupConcurrency: 1 });
      const [gid] = await enqueueKeyed(g, t0, 'y', 1, { group: GROUP, key: 'y', groupConcurrency: 1 });
      await reserveAll(g, 'w1', t0, { max: 5 });
      assert.deepStrictEqual((await getRun(g, gid as string)).flow?.waiting, { reason: 'group_concurrency', active: 1, limit: 1 });
    });

    test('an idle worker is woken when a slot frees', async () => {
      const b = await open();
      const t0 = Date.now();
      const ids = await enqueueKeyed(b, t0, 'a', 2, flow('a', 1));
      await reserveAll(b, 'w1', t0, { max: 5 });
      const idle = await reserveAll(b, 'w2', t0, { max: 5 });
      assert.deepStrictEqual(idle.runs, []);
      const ac = c.controller();
      const timer = setTimeout(() => ac.abort(), NOTIFY_TIMEOUT_MS);
      const woken = b.waitForWork([Q], null, ac.signal).then(() => !ac.signal.aborted);
      await b.settle('w1', [{ id: ids[0] as string, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN }], t0 + 1);
      assert.equal(await woken, true, 'woken by the settlement, not by the safety timeout');
      clearTimeout(timer);
      assert.equal((await reserveAll(b, 'w2', t0 + 2, { max: 5 })).runs.length, 1);
    });
  });

  describe('flow control: rate limits', () => {
    const rated = (key: string, interval: number, burst: number, over: Partial<FlowSpec> = {}): FlowSpec => ({
      group: GROUP,
      key,
      rate: { interval, burst },
      ...over,
    });
    const count = async (b: Broker, now: number, max = 50) => (await reserveAll(b, 'w1', now, { max })).runs.length;

    test('a key admits its burst at once, then one start per interval; nextAt is when it may start again', async () => {
      const b = await open();
      const t0 = Date.now();
      // 3 starts per 1000 ms, burst 3: interval 333.33 ms.
      await enqueueKeyed(b, t0, 'a', 20, rated('a', 1000 / 3, 3));
      const first = await reserveAll(b, 'w1', t0, { max: 50 });
      assert.equal(first.runs.length, 3, 'the burst');
      const held = await reserveAll(b, 'w1', t0 + 333, { max: 50 });
      assert.deepStrictEqual(held.runs, [], 'not before the interval');
      assert.equal(held.nextAt, t0 + 334, 'nextAt: when the key may start again (whole ms, rounded up)');
      assert.equal(await count(b, t0 + 334), 1);
      assert.equal(await count(b, t0 + 1000), 2, 'two intervals passed since');
      assert.equal(await count(b, t0 + 1000), 0);
    });

    test('burst 1: exactly one start per interval, whatever the number of reservers', async () => {
      const b = await open();
      const t0 = Date.now();
      await enqueueKeyed(b, t0, 'a', 30, rated('a', 100, 1));
      let started = 0;
      for (let t = t0; t < t0 + 1000; t += 25) started += await count(b, t);
      assert.equal(started, 10, 'ten starts in 1000 ms at one per 100 ms');
    });

    test('a group rate holds every key of the group; a rate-limited key holds no other key', async () => {
      const b = await open();
      const t0 = Date.now();
      for (const k of ['a', 'b', 'c', 'd', 'e'])
        await enqueueKeyed(b, t0, k, 2, { group: GROUP, key: k, groupRate: { interval: 500, burst: 2 } });
      assert.equal(await count(b, t0), 2);
      assert.equal(await count(b, t0 + 499), 0);
      assert.equal(await count(b, t0 + 500), 1);

      const b2 = await open();
      await enqueueKeyed(b2, t0, 'slow', 3, { group: 'conformance.other', key: 'slow', rate: { interval: 1000, burst: 1 } });
      await enqueueKeyed(b2, t0, 'free', 3, { group: 'conformance.other', key: 'free' });
      const r = await reserveAll(b2, 'w1', t0, { max: 50 });
      assert.deepStrictEqual(Object.fromEntries(byKey(r.runs)), { slow: 1, free: 3 });
    });

    test('a task limited in total only (its runs under one key): its cap, its burst, then one start per interval', async () => {
      const b = await open();
      const t0 = Date.now();
      await enqueueKeyed(b, t0, '', 10, { group: 'conformance.capped', key: '', groupConcurrency: 3 });
      assert.equal(await count(b, t0), 3, 'the cap');
      assert.equal(await count(b, t0), 0);
      const r = await open();
      await enqueueKeyed(r, t0, '', 10, { group: 'conformance.paced', key: '', groupRate: { interval: 100, burst: 4 } });
      assert.equal(await count(r, t0), 4, 'the burst');
      const held = await reserveAll(r, 'w1', t0 + 99, { max: 50 });
      assert.deepStrictEqual(held.runs, []);
      assert.equal(held.nextAt, t0 + 100);
      assert.equal(await count(r, t0 + 100), 1);
      assert.equal(await count(r, t0 + 350), 2, 'at 200 and 300');
      const k = await open();
      await enqueueKeyed(k, t0, 'solo', 10, rated('solo', 100, 3, { concurrency: 2 }));
      assert.equal(await count(k, t0), 2, 'its concurrency before its burst');
    });

    test('a key whose runs all finished keeps its rate: its next run waits for its interval', async () => {
      const b = await open();
      const t0 = Date.now();
      const spec = rated('a', 1000, 1);
      await enqueueKeyed(b, t0, 'a', 1, spec);
      const [run] = (await reserveAll(b, 'w1', t0, { max: 5 })).runs;
      assert.ok(run);
      // Nothing queued or active: the key is forgotten, but not its rate.
      await b.settle('w1', [{ id: run.id, attempt: run.attempt, outcome: 'succeeded', result: null, retentionMs: RETAIN }], t0 + 10);
      await enqueueKeyed(b, t0 + 20, 'a', 2, spec);
      const held = await reserveAll(b, 'w1', t0 + 20, { max: 5 });
      assert.deepStrictEqual(held.runs, [], 'not before its interval');
      assert.equal(held.nextAt, t0 + 1000);
      assert.equal(await count(b, t0 + 1000), 1);
      assert.equal(await count(b, t0 + 1999), 0);
      assert.equal(await count(b, t0 + 2000), 1);
    });

    test('keys served in ring order when the call has more slots than ready keys, and no key twice before the others', async () => {
      const b = await open();
      const t0 = Date.now();
      for (const k of ['a', 'b', 'c']) await enqueueKeyed(b, t0, k, 4, { group: GROUP, key: k, concurrency: 10 });
      const r = await reserveAll(b, 'w1', t0, { max: 7 });
      const keys = r.runs.map((x) => (JSON.parse(x.input) as { key: string }).key);
      assert.deepStrictEqual(keys, ['a', 'b', 'c', 'a', 'b', 'c', 'a']);
      const next = await reserveAll(b, 'w1', t0, { max: 3 });
      assert.deepStrictEqual(
        next.runs.map((x) => (JSON.parse(x.input) as { key: string }).key),
        ['b', 'c', 'a'],
      );
    });

    test('a key whose freed slot makes it ready again joins the ring at the back, after the keys freed before it', async () => {
      const b = await open();
      const t0 = Date.now();
      for (const k of ['a', 'b', 'c']) await enqueueKeyed(b, t0, k, 3, flow(k, 1));
      const one = await reserveAll(b, 'w1', t0, { max: 3 });
      const keyOf = (x: Reservation) => (JSON.parse(x.input) as { key: string }).key;
      assert.deepStrictEqual(one.runs.map(keyOf), ['a', 'b', 'c']);
      // Every key at its limit (out of the ring); their slots freed c, b, a, one settle each: each
      // key joins the ring at the back when its slot frees, so a (served first) comes last.
      for (const k of ['c', 'b', 'a']) {
        const run = one.runs.find((x) => keyOf(x) === k) as Reservation;
        await b.settle('w1', [{ id: run.id, attempt: run.attempt, outcome: 'succeeded', result: null, retentionMs: RETAIN }], t0 + 1);
      }
      const two = await reserveAll(b, 'w1', t0 + 2, { max: 3 });
      assert.deepStrictEqual(two.runs.map(keyOf), ['c', 'b', 'a']);
    });

    test("a queued run's record says until when its key's or group's rate holds it", async () => {
      const b = await open();
      const t0 = Date.now();
      const ids = await enqueueKeyed(b, t0, 'a', 2, rated('a', 1000, 1));
      await reserveAll(b, 'w1', t0, { max: 5 });
      assert.deepStrictEqual((await getRun(b, ids[1] as string)).flow?.waiting, { reason: 'key_rate', until: t0 + 1000 });
      const g = await open();
      const gids = await enqueueKeyed(g, t0, 'a', 2, { group: GROUP, key: 'a', groupRate: { interval: 500, burst: 1 } });
      await reserveAll(g, 'w1', t0, { max: 5 });
      assert.deepStrictEqual((await getRun(g, gids[1] as string)).flow?.waiting, { reason: 'group_rate', until: t0 + 500 });
    });

    test('flowCounts: runs waiting under flow control, keys, keys and groups held by their rate, runs held by each limit', async () => {
      const b = (await open()) as Broker & Partial<BrokerInspector>;
      if (typeof b.flowCounts !== 'function') return;
      const t0 = Date.now();
      const none = { group_rate: 0, group_concurrency: 0, key_rate: 0, key_concurrency: 0 };
      assert.deepStrictEqual(await b.flowCounts([Q]), {
        [Q]: { queued: 0, keys: 0, rateLimitedKeys: 0, rateLimitedGroups: 0, heldRuns: none },
      });
      await enqueueKeyed(b, t0, 'a', 3, rated('a', 1000, 1));
      await enqueueKeyed(b, t0, 'b', 2, rated('b', 1000, 1));
      await enqueueKeyed(b, t0, 'c', 2, { group: 'conformance.other', key: 'c', groupRate: { interval: 1000, burst: 1 } });
      await enqueueKeyed(b, t0, 'd', 3, { group: GROUP, key: 'd', concurrency: 1 });
      await enqueueKeyed(b, t0, 'e', 2, { group: 'conformance.third', key: 'e', groupConcurrency: 1 });
      assert.deepStrictEqual((await b.flowCounts([Q]))[Q], {
        queued: 12,
        keys: 5,
        rateLimitedKeys: 0,
        rateLimitedGroups: 0,
        heldRuns: none,
      });
      await reserveAll(b, 'w1', t0, { max: 50 });
      assert.deepStrictEqual((await b.flowCounts([Q]))[Q], {
        queued: 7,
        keys: 5,
        rateLimitedKeys: 2,
        rateLimitedGroups: 1,
        heldRuns: { group_rate: 1, group_concurrency: 1, key_rate: 3, key_concurrency: 2 },
      });
    });

    test('a rate and a concurrency limit together: both hold', async () => {
      const b = await open();
      const t0 = Date.now();
      await enqueueKeyed(b, t0, 'a', 10, rated('a', 100, 5, { concurrency: 2 }));
      const r1 = await reserveAll(b, 'w1', t0, { max: 50 });
      assert.equal(r1.runs.length, 2, 'the concurrency limit, within the burst');
      for (const run of r1.runs) {
        await b.settle('w1', [{ id: run.id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN }], t0 + 1);
      }
      assert.equal(await count(b, t0 + 2), 2, 'slots free, burst left: 2 more');
      const r3 = await reserveAll(b, 'w2', t0 + 3, { max: 50 });
      assert.equal(r3.runs.length, 0, 'at the concurrency limit again');
    });
  });
}
