/**
 * The broker conformance suite, section: debounce (`NewRun.debounce`, docs/flow-control.md): an
 * enqueue whose key names a scheduled run replaces that run's input and moves its start, within
 * the burst's bound, in the enqueue's atomic step. See `suite.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import type { Broker, BrokerInspector, NewRun } from '../../src/broker/types.ts';
import { type ConformanceContext, newRun, Q, RETAIN } from './context.ts';

const TASK = 'conformance.debounced';

function debounced(now: number, key: string, input: unknown, window: number, maxAt: number | null): NewRun {
  return { ...newRun(Q, now), task: TASK, input: JSON.stringify(input), runAt: now + window, debounce: { key, maxAt } };
}

async function enqueue(b: Broker, now: number, run: NewRun) {
  const [r] = await b.enqueue([run], now);
  assert.ok(r);
  return r;
}

export function debounceConformance(c: ConformanceContext): void {
  const { open, test, getRun, reserveAll, elapse } = c;
  describe('debounce', () => {
    test('enqueues of one key within the window make one run, with the last input, started a window after the last', async () => {
      const b = await open();
      const t0 = Date.now();
      const first = await enqueue(b, t0, debounced(t0, 'k', { v: 1 }, 1_000, null));
      assert.deepStrictEqual([first.created, first.state], [true, 'scheduled']);
      const second = await enqueue(b, t0 + 500, debounced(t0 + 500, 'k', { v: 2 }, 1_000, null));
      assert.deepStrictEqual(second, { id: first.id, created: false, state: 'scheduled' });
      const other = await enqueue(b, t0 + 600, debounced(t0 + 600, 'other', { v: 9 }, 1_000, null));
      assert.equal(other.created, true, 'another key is another run');
      const info = await getRun(b, first.id);
      assert.equal(info.input, '{"v":2}');
      assert.equal(info.runAt, t0 + 1_500);
      assert.deepStrictEqual((await reserveAll(b, 'w1', t0 + 1_499, { max: 10 })).runs, []);
      const r = await reserveAll(b, 'w1', t0 + 1_500, { max: 10 });
      assert.deepStrictEqual(
        r.runs.map((x) => [x.id, x.input]),
        [[first.id, '{"v":2}']],
      );
      assert.equal((await b.counts([Q]))[Q]?.scheduled, 1, "the other key's run still waits");
    });

    test('maxAt bounds the burst: the run starts by then however often the key is enqueued', async () => {
      const b = await open();
      const t0 = Date.now();
      const first = await enqueue(b, t0, debounced(t0, 'k', 1, 1_000, t0 + 2_500));
      for (const dt of [800, 1_600, 2_400]) await enqueue(b, t0 + dt, debounced(t0 + dt, 'k', dt, 1_000, t0 + dt + 2_500));
      const info = await getRun(b, first.id);
      assert.equal(info.runAt, t0 + 2_500, 'the first enqueue set the bound');
      assert.equal(info.input, '2400');
    });

    test('once its run has started, the key makes a new run', async () => {
      const b = await open();
      const t0 = Date.now();
      const first = await enqueue(b, t0, debounced(t0, 'k', 1, 100, null));
      const [r] = (await reserveAll(b, 'w1', t0 + 100, { max: 1 })).runs;
      assert.equal(r?.id, first.id);
      const next = await enqueue(b, t0 + 150, debounced(t0 + 150, 'k', 2, 100, null));
      assert.equal(next.created, true);
      assert.notEqual(next.id, first.id);
      await b.settle('w1', [{ id: first.id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN }], t0 + 160);
      const again = await enqueue(b, t0 + 170, debounced(t0 + 170, 'k', 3, 100, null));
      assert.deepStrictEqual(again, { id: next.id, created: false, state: 'scheduled' });
      assert.equal((await getRun(b, next.id)).input, '3');
    });

    test('property: random enqueues and reserves of 3 keys; every run starts once per burst, with its last input, when the model says', async () => {
      const b = await open();
      let seed = 12345;
      const rand = () => {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        return seed / 2 ** 31;
      };
      let now = Date.now();
      const bursts = new Map<string, { id: string; input: string; runAt: number; maxAt: number }>();
      let started = 0;
      for (let step = 0; step < 120; step++) {
        now += Math.floor(rand() * 250);
        if (rand() < 0.7) {
          const key = `k${Math.floor(rand() * 3)}`;
          const input = JSON.stringify({ key, step });
          const res = await enqueue(b, now, debounced(now, key, JSON.parse(input), 300, now + 1_000));
          const open = bursts.get(key);
          if (open) {
            assert.deepStrictEqual(res, { id: open.id, created: false, state: 'scheduled' }, `step ${step}: into the open burst of ${key}`);
            open.input = input;
            open.runAt = Math.min(now + 300, open.maxAt);
          } else {
            assert.equal(res.created, true, `step ${step}: a new burst of ${key}`);
            bursts.set(key, { id: res.id, input, runAt: now + 300, maxAt: now + 1_000 });
          }
        } else {
          const r = await reserveAll(b, 'w1', now, { max: 100 });
          const due = [...bursts.entries()].filter(([, x]) => x.runAt <= now);
          assert.deepStrictEqual(
            r.runs.map((x) => [x.id, x.input]).sort(),
            due.map(([, x]) => [x.id, x.input]).sort(),
            `step ${step}: the runs due, each with its burst's last input`,
          );
          for (const [key] of due) bursts.delete(key);
          started += r.runs.length;
          if (r.runs.length) {
            await b.settle(
              'w1',
              r.runs.map((x) => ({ id: x.id, attempt: x.attempt, outcome: 'succeeded' as const, result: null, retentionMs: RETAIN })),
              now,
            );
          }
        }
      }
      assert.ok(started > 5, `the sequence started runs (${started})`);
    });

    test('a run waiting for its retry is not debounced into: the next enqueue makes a new run', async () => {
      const b = await open();
      const t0 = Date.now();
      const first = await enqueue(b, t0, debounced(t0, 'k', 1, 100, null));
      const [r] = (await reserveAll(b, 'w1', t0 + 100, { max: 1 })).runs;
      assert.equal(r?.id, first.id);
      await b.settle('w1', [{ id: first.id, attempt: 1, outcome: 'retry', error: '{}', runAt: t0 + 10_000 }], t0 + 110);
      assert.equal((await getRun(b, first.id)).state, 'scheduled');
      const next = await enqueue(b, t0 + 120, debounced(t0 + 120, 'k', 2, 100, null));
      assert.equal(next.created, true);
      assert.equal((await getRun(b, first.id)).input, '1', 'the retrying run keeps its input');
    });

    test('a run held in a paused queue keeps its burst open past its due time, however long: a later enqueue debounces into it', async () => {
      const b = (await open()) as Broker & Partial<BrokerInspector>;
      assert.equal(typeof b.pause, 'function', 'every broker of the suite is an inspector');
      const t0 = Date.now();
      await b.pause?.(Q);
      const first = await enqueue(b, t0, debounced(t0, 'k', 1, 1_000, null));
      const later = t0 + 2 * 3_600_000; // two hours on, the queue still paused and no worker about
      await elapse(b, later - t0);
      assert.deepStrictEqual((await reserveAll(b, 'w1', later, { max: 10 })).runs, [], 'paused: nothing starts');
      await b.prune(later);
      const second = await enqueue(b, later, debounced(later, 'k', 2, 1_000, null));
      assert.deepStrictEqual(second, { id: first.id, created: false, state: 'scheduled' }, 'into the pending run');
      assert.equal((await b.counts([Q]))[Q]?.scheduled, 1, 'one run');
      await b.resume?.(Q);
      assert.deepStrictEqual((await reserveAll(b, 'w1', later + 999, { max: 10 })).runs, [], 'moved a window after the last enqueue');
      assert.deepStrictEqual(
        (await reserveAll(b, 'w1', later + 1_000, { max: 10 })).runs.map((x) => [x.id, x.input]),
        [[first.id, '2']],
      );
      const next = await enqueue(b, later + 1_001, debounced(later + 1_001, 'k', 3, 1_000, null));
      assert.equal(next.created, true, 'once started, the key makes a new run');
    });

    test('a cancelled run no longer takes the key', async () => {
      const b = await open();
      const t0 = Date.now();
      const first = await enqueue(b, t0, debounced(t0, 'k', 1, 1_000, null));
      await b.cancel(first.id, t0 + 1);
      const next = await enqueue(b, t0 + 2, debounced(t0 + 2, 'k', 2, 1_000, null));
      assert.equal(next.created, true);
    });
  });
}
