/**
 * The BrokerInspector conformance suite, section: `listRuns` (filters, order, pagination, limits)
 * and `listQueues`. See `inspector.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { type NewRun, RUN_STATES, type RunFilter } from '../../src/broker/types.ts';
import { newRunId } from '../../src/core/ids.ts';
import { type InspectorContext, HOUR, RETAIN, T1, T2, newRun, ids, errorText, filterLabel } from './inspector-context.ts';

export function listRunsConformance(c: InspectorContext): void {
  const { open, shares, test, getRun, enqueueOne, reserve, listAll } = c;
  describe('listRuns', () => {
    test('fresh storage: an empty page, next null', async () => {
      const b = await open();
      assert.deepStrictEqual(await b.listRuns({ limit: 100 }), { runs: [], next: null });
    });

    test('newest first by enqueue time across queues (not by the text of the id, which starts with the queue)', async () => {
      const b = await open();
      const t0 = Date.now();
      // Queue names sort against time: ordering by id text would put every `zq` run first.
      const plan = ['zq', 'aq', 'zq', 'mq', 'aq', 'zq', 'aq'];
      const order: string[] = [];
      for (let i = 0; i < plan.length; i++) order.push(await enqueueOne(b, t0 + i, plan[i]!, { task: i % 2 ? T1 : T2 }));
      const page = await b.listRuns({ limit: 100 });
      assert.deepStrictEqual(ids(page.runs), [...order].reverse(), 'newest first');
      assert.equal(page.next, null, 'everything fits on one page: next null');
      const records = await Promise.all(order.map((id) => getRun(b, id)));
      assert.deepStrictEqual(page.runs, [...records].reverse(), 'listed records are what getRun returns');
    });

    test('each filter alone and combined (queue, task, state), paged and unpaged', async () => {
      const b = await open();
      const t0 = Date.now();
      // 36 runs over 2 queues x 2 tasks, enqueued interleaved, then spread over every state.
      const runs: NewRun[] = [];
      for (let i = 0; i < 36; i++) runs.push(newRun(i % 5 < 2 ? 'qb' : 'qa', t0, { task: i % 7 < 3 ? T1 : T2 }));
      await b.enqueue(runs, t0);
      const scheduledLater = [newRun('qa', t0, { runAt: t0 + HOUR, task: T2 }), newRun('qb', t0, { runAt: t0 + HOUR })];
      await b.enqueue(scheduledLater, t0);
      const { runs: leased } = await reserve(b, ['qa', 'qb'], t0 + 1);
      assert.equal(leased.length, 36, 'every due run leased');
      const byId = new Map(leased.map((r) => [r.id, r]));
      for (let i = 0; i < runs.length; i++) {
        const r = byId.get(runs[i]!.id);
        assert.ok(r, `run ${i} leased`);
        const lease = { id: r.id, attempt: r.attempt };
        switch (i % 6) {
          case 0:
            assert.deepStrictEqual(await b.settle('w1', [{ ...lease, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 2), [
              'ok',
            ]);
            break;
          case 1:
            assert.deepStrictEqual(
              await b.settle('w1', [{ ...lease, outcome: 'failed', error: errorText('x'), retentionMs: RETAIN }], t0 + 2),
              ['ok'],
            );
            break;
          case 2:
            assert.equal((await b.cancel(r.id, t0 + 2)).outcome, 'cancelled');
            break;
          case 3:
            await b.release('w1', [lease], t0 + 2);
            break;
          case 4:
            assert.deepStrictEqual(
              await b.settle('w1', [{ ...lease, outcome: 'retry', error: errorText('x'), runAt: t0 + HOUR }], t0 + 2),
              ['ok'],
            );
            break;
          default:
            break; // stays active
        }
      }
      // A run of a workflow waiting for its dependency (and that dependency, queued).
      const root = newRun('qa', t0, { task: T1 });
      const dependent = { ...newRun('qa', t0, { task: T2 }), dependsOn: [{ id: root.id }] };
      await b.createWorkflow({ id: newRunId('qa', t0), runs: [root, dependent] }, t0 + 2);
      const all = [...runs, ...scheduledLater, root, dependent];
      const records = await Promise.all(all.map((r) => getRun(b, r.id)));
      const newestFirst = [...records].reverse();
      const statesSeen = new Set(records.map((r) => r.state));
      assert.deepStrictEqual([...statesSeen].sort(), [...RUN_STATES].sort(), 'the setup covers every state');

      const filters: Omit<RunFilter, 'limit' | 'cursor'>[] = [];
      for (const queue of [undefined, 'qa', 'qb'])
        for (const task of [undefined, T1, T2])
          for (const state of [undefined, ...RUN_STATES]) {
            filters.push({
              ...(queue !== undefined && { queue }),
              ...(task !== undefined && { task }),
              ...(state !== undefined && { state }),
            });
          }
      for (const f of filters) {
        const expected = newestFirst.filter(
          (r) =>
            (f.queue === undefined || r.queue === f.queue) &&
            (f.task === undefined || r.task === f.task) &&
            (f.state === undefined || r.state === f.state),
        );
        const whole = await b.listRuns({ ...f, limit: 500 });
        assert.deepStrictEqual(ids(whole.runs), ids(expected), `listRuns(${filterLabel(f)}, limit 500): the matching runs, newest first`);
        assert.equal(whole.next, null, `listRuns(${filterLabel(f)}, limit 500): one page, next null`);
        assert.deepStrictEqual(whole.runs, expected, `listRuns(${filterLabel(f)}): records as getRun returns them`);
        assert.deepStrictEqual(ids(await listAll(b, f, 4)), ids(expected), `listRuns(${filterLabel(f)}) paged by 4`);
      }
      assert.deepStrictEqual(ids(await listAll(b, {}, 1)), ids(newestFirst), 'listRuns({}) paged by 1');
      assert.deepStrictEqual(
        ids(await listAll(b, { queue: 'qa', task: T2 }, 1)),
        ids(newestFirst.filter((r) => r.queue === 'qa' && r.task === T2)),
      );
    });

    test('pagination through 250 runs with limit 100: no duplicates, no gaps, next null at the end', async () => {
      const b = await open();
      const t0 = Date.now();
      const runs = Array.from({ length: 250 }, (_, i) => newRun('pg', t0, { task: i % 2 ? T1 : T2 }));
      await b.enqueue(runs, t0);
      // 50 leave `queued` (25 active, 25 succeeded), so that exactly 200 stay queued.
      const { runs: leased } = await reserve(b, ['pg'], t0 + 1, 50);
      assert.equal(leased.length, 50);
      await b.settle(
        'w1',
        leased.slice(0, 25).map((r) => ({ id: r.id, attempt: r.attempt, outcome: 'succeeded' as const, result: '1', retentionMs: RETAIN })),
        t0 + 2,
      );
      const expected = ids(runs).reverse();

      const p1 = await b.listRuns({ limit: 100 });
      assert.deepStrictEqual(ids(p1.runs), expected.slice(0, 100), 'page 1: the 100 newest');
      assert.ok(p1.next, 'page 1 has a next cursor');
      // Runs enqueued while paging are newer than the cursor: they do not shift the older pages.
      const newer = Array.from({ length: 5 }, () => newRun('pg', t0 + 10));
      await b.enqueue(newer, t0 + 10);
      const p2 = await b.listRuns({ limit: 100, cursor: p1.next });
      assert.deepStrictEqual(ids(p2.runs), expected.slice(100, 200), 'page 2: the next 100, unaffected by newer runs');
      assert.ok(p2.next, 'page 2 has a next cursor');
      const p3 = await b.listRuns({ limit: 100, cursor: p2.next });
      assert.deepStrictEqual(ids(p3.runs), expected.slice(200), 'page 3: the oldest 50');
      assert.equal(p3.next, null, 'page 3 is the last: next null');

      const withNewer = [...ids(newer).reverse(), ...expected];
      assert.deepStrictEqual(ids(await listAll(b, {}, 100)), withNewer, 'all 255 runs, newest first');
      assert.deepStrictEqual(ids(await listAll(b, { queue: 'pg' }, 100)), withNewer, 'by queue (runs in several states)');
      assert.deepStrictEqual(
        ids(await listAll(b, { task: T1 }, 100)),
        withNewer.filter((id) => runs.find((r) => r.id === id)?.task === T1 || newer.some((r) => r.id === id)),
        'by task',
      );

      // The queued runs (200 of the first batch, and the 5 newer ones) over pages by state.
      const queued = expected.filter((id) => !leased.some((r) => r.id === id));
      assert.equal(queued.length, 200);
      const q1 = await b.listRuns({ queue: 'pg', state: 'queued', limit: 100 });
      assert.deepStrictEqual(ids(q1.runs), [...ids(newer).reverse(), ...queued].slice(0, 100));
      const q2 = await b.listRuns({ queue: 'pg', state: 'queued', limit: 100, cursor: q1.next ?? undefined });
      const q3 = q2.next ? await b.listRuns({ queue: 'pg', state: 'queued', limit: 100, cursor: q2.next }) : null;
      assert.deepStrictEqual(
        [...ids(q1.runs), ...ids(q2.runs), ...(q3 ? ids(q3.runs) : [])],
        [...ids(newer).reverse(), ...queued],
        'all 205 queued runs over three pages',
      );
      assert.equal(q3?.next, null, 'the last queued page: next null');

      // A listing of exactly `limit` runs ends on that page: next null, not a cursor to an empty page.
      const active = await b.listRuns({ state: 'active', limit: 25 });
      assert.equal(active.runs.length, 25);
      assert.equal(active.next, null, 'exactly `limit` matching runs: next null on the first page');
      const exact = await b.listRuns({ queue: 'pg', state: 'succeeded', limit: 5 });
      let cursor = exact.next;
      let pages = 1;
      while (cursor !== null) {
        const p = await b.listRuns({ queue: 'pg', state: 'succeeded', limit: 5, cursor });
        assert.equal(p.runs.length, 5, `succeeded page ${pages + 1}: 25 runs in pages of 5, never an empty page`);
        cursor = p.next;
        pages++;
      }
      assert.equal(pages, 5, '25 succeeded runs in exactly 5 pages of 5');
    });

    test('limit outside 1..500 is clamped: above 500 a page holds 500, below 1 it holds 1, and paging stays exact', async () => {
      // The contract declares `limit` "Page size, 1 to 500" without saying what a broker does with
      // anything else. The bound protects the broker ("cheap for 100,000 runs and more"), so the
      // broker enforces it itself rather than trust every caller, and a read answers rather than
      // throws (as getRun does for malformed ids): a limit is clamped into 1..500.
      const b = await open();
      const t0 = Date.now();
      const runs = Array.from({ length: 502 }, () => newRun('cl', t0));
      await b.enqueue(runs, t0);
      const expected = ids(runs).reverse();

      const big = await b.listRuns({ limit: 1000 });
      assert.equal(big.runs.length, 500, 'limit 1000: 500 runs');
      assert.deepStrictEqual(ids(big.runs), expected.slice(0, 500));
      assert.ok(big.next, 'and a cursor to the rest');
      const rest = await b.listRuns({ limit: 1000, cursor: big.next });
      assert.deepStrictEqual(ids(rest.runs), expected.slice(500), 'the next page: the last 2');
      assert.equal(rest.next, null);

      for (const limit of [0, -5]) {
        const small = await b.listRuns({ limit });
        assert.deepStrictEqual(ids(small.runs), expected.slice(0, 1), `limit ${limit}: clamped to 1, the newest run`);
        assert.ok(small.next, `limit ${limit}: a cursor to the rest`);
        const second = await b.listRuns({ limit, cursor: small.next });
        assert.deepStrictEqual(ids(second.runs), expected.slice(1, 2), `limit ${limit}: the second page is the next run`);
      }
      assert.equal((await b.listRuns({ limit: 500 })).runs.length, 500, 'limit 500 is allowed');
      assert.equal((await b.listRuns({ limit: 1 })).runs.length, 1, 'limit 1 is allowed');
    });

    test('filters naming nothing known (unknown queue, task, ids used as names) give an empty page, never a throw', async () => {
      const b = await open();
      const t0 = Date.now();
      const id = await enqueueOne(b, t0, 'known');
      const empty = { runs: [], next: null };
      const unknownId = newRunId('known');
      for (const f of [
        { queue: 'no-such-queue' },
        { task: 'no.such.task' },
        { queue: 'known', task: 'no.such.task' },
        { queue: 'no-such-queue', state: 'queued' as const },
        { task: 'no.such.task', state: 'queued' as const },
        { queue: 'known', state: 'failed' as const },
        { queue: id },
        { task: id },
        { queue: unknownId, task: unknownId, state: 'queued' as const },
        { queue: '*' },
        { task: '%' },
        { queue: "'; DROP TABLE runs; --" },
      ]) {
        assert.deepStrictEqual(await b.listRuns({ ...f, limit: 10 }), empty, `listRuns(${filterLabel(f)})`);
      }
      assert.deepStrictEqual(ids((await b.listRuns({ queue: 'known', limit: 10 })).runs), [id], 'the known run is still listed');
    });
  });

  // ---------------------------------------------------------------------------------------------
  describe('listQueues', () => {
    test(
      'every queue the broker has seen, once each, still after its runs are gone',
      async () => {
        const b = await open();
        const t0 = Date.now();
        assert.deepStrictEqual(await b.listQueues(), [], 'fresh storage: no queue');
        await b.enqueue([newRun('qa', t0), newRun('qb', t0), newRun('qa', t0, { runAt: t0 + HOUR })], t0);
        await enqueueOne(b, t0, 'qc');
        assert.deepStrictEqual([...(await b.listQueues())].sort(), ['qa', 'qb', 'qc']);
        assert.equal(await b.purge('qc', t0 + 1), 1);
        for (const { label, other } of await shares(b))
          assert.deepStrictEqual([...(await other.listQueues())].sort(), ['qa', 'qb', 'qc'], `seen from ${label}, qc included`);
      },
      'sameStorage',
    );
  });
}
