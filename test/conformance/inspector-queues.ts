/**
 * The BrokerInspector conformance suite, section: workers (`heartbeat`, `listWorkers`,
 * `removeWorker`), `pause`/`resume`, `purge`, `retryFailed`. See `inspector.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import type { NewRun } from '../../src/broker/types.ts';
import { newRunId } from '../../src/core/ids.ts';
import { within } from '../helpers.ts';
import { type InspectorContext, NOTIFY_TIMEOUT_MS, MINUTE, HOUR, RETAIN, T1, T2, newRun, ids, errorText } from './inspector-context.ts';

export function queueControlConformance(c: InspectorContext): void {
  const { open, peerOf, share, shares, controller, test, getRun, enqueueOne, reserve, failedRuns, worker } = c;
  describe('workers', () => {
    test(
      'heartbeat -> listWorkers with every field, lastSeen and ttlMs; a second heartbeat updates the entry',
      async () => {
        const b = await open();
        const t0 = Date.now();
        const w1 = worker('w-1', { queues: ['qa', 'qb'], concurrency: 8, active: 3, startedAt: t0 - 5000 });
        const w2 = worker('w-2', { host: 'other-host', pid: 7, queues: ['qa'], concurrency: 1, active: 0, startedAt: t0 - 100 });
        assert.deepStrictEqual(await b.listWorkers(t0), [], 'fresh storage: no worker');
        await b.heartbeat(w1, 15_000, t0);
        await b.heartbeat(w2, 30_000, t0 + 100);
        const byId = (ws: { id: string }[]) => [...ws].sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
        assert.deepStrictEqual(byId(await b.listWorkers(t0 + 200)), [
          { ...w1, lastSeen: t0, ttlMs: 15_000 },
          { ...w2, lastSeen: t0 + 100, ttlMs: 30_000 },
        ]);
        const w1b = { ...w1, active: 8, queues: ['qa'] };
        await b.heartbeat(w1b, 20_000, t0 + 5000);
        const expected = [
          { ...w1b, lastSeen: t0 + 5000, ttlMs: 20_000 },
          { ...w2, lastSeen: t0 + 100, ttlMs: 30_000 },
        ];
        assert.deepStrictEqual(byId(await b.listWorkers(t0 + 5001)), expected, 'one entry per worker id, updated');
        for (const { label, other } of await shares(b))
          assert.deepStrictEqual(byId(await other.listWorkers(t0 + 5001)), expected, `seen from ${label}`);
      },
      'sameStorage',
    );

    test('a lost worker (lastSeen + ttl < now) is still listed; removeWorker removes it; after an hour it is forgotten', async () => {
      const b = await open();
      const t0 = Date.now();
      const w = worker('w-lost');
      const keep = worker('w-keep');
      await b.heartbeat(w, 15_000, t0);
      await b.heartbeat(keep, 15_000, t0);
      for (const now of [t0 + 15_001, t0 + 30 * MINUTE]) {
        const listed = (await b.listWorkers(now)).find((x) => x.id === 'w-lost');
        assert.deepStrictEqual(listed, { ...w, lastSeen: t0, ttlMs: 15_000 }, `lost worker listed at now = t0 + ${now - t0}`);
      }
      await b.removeWorker('w-lost');
      assert.deepStrictEqual(
        (await b.listWorkers(t0 + 15_001)).map((x) => x.id),
        ['w-keep'],
        'removed; the other worker stays',
      );
      await b.removeWorker('w-lost');
      await b.removeWorker('never-seen');
      assert.deepStrictEqual(await b.listWorkers(t0 + 2 * HOUR), [], 'a worker silent for over an hour is not listed');
    });
  });

  // ---------------------------------------------------------------------------------------------
  describe('pause and resume', () => {
    test(
      'a paused queue accepts runs but reserve skips it (runs stay queued) until resumed; other queues are served',
      async () => {
        const b = await open();
        const t0 = Date.now();
        const a1 = await enqueueOne(b, t0, 'pq');
        const busy = await enqueueOne(b, t0, 'pq');
        const { runs: first } = await reserve(b, ['pq'], t0, 1);
        assert.deepStrictEqual(ids(first), [a1]);
        await b.pause('pq');
        await b.pause('pq');
        assert.deepStrictEqual(await b.pausedQueues(), ['pq'], 'listed once, however often paused');
        const a2 = await enqueueOne(b, t0 + 1, 'pq');
        const due = await enqueueOne(b, t0 + 1, 'pq', { runAt: t0 + 100 });
        const free = await enqueueOne(b, t0 + 1, 'free');

        const got = await reserve(b, ['pq', 'free'], t0 + 200);
        assert.deepStrictEqual(ids(got.runs), [free], 'only the run of the queue that is not paused');
        const others = await shares(b);
        for (const { label, other } of others)
          assert.deepStrictEqual((await reserve(other, ['pq'], t0 + 300)).runs, [], `${label} skips the paused queue too`);
        for (const id of [busy, a2]) assert.equal((await getRun(b, id)).state, 'queued', `run ${id} stays queued`);
        assert.ok(['queued', 'scheduled'].includes((await getRun(b, due)).state), 'the due scheduled run is not started');
        const along = await b.reserve({
          workerId: 'w1',
          queues: ['pq'],
          max: 5,
          leaseMs: 30_000,
          now: t0 + 300,
          settle: [{ id: a1, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }],
        });
        assert.deepStrictEqual(along.settled, ['ok'], 'a run active before the pause still settles, also along with a reserve');
        assert.deepStrictEqual(along.runs, [], 'and that reserve leases nothing');
        assert.equal((await getRun(b, a1)).state, 'succeeded');

        await b.resume('pq');
        assert.deepStrictEqual(await b.pausedQueues(), []);
        const after = await reserve(others.at(-1)!.other, ['pq'], t0 + 400);
        assert.deepStrictEqual(ids(after.runs), [busy, a2, due], 'resumed: every waiting run, in order');
        await b.resume('pq');
        await b.resume('never-paused');
        assert.deepStrictEqual(await b.pausedQueues(), [], 'resuming a queue that is not paused changes nothing');
      },
      'sameStorage',
    );

    test(
      'pausedQueues lists every paused queue, also one without runs, from any instance',
      async () => {
        const b = await open();
        await enqueueOne(b, Date.now(), 'q1');
        await b.pause('q1');
        await b.pause('q2');
        await b.pause('q3');
        await b.resume('q2');
        for (const { label, other } of await shares(b))
          assert.deepStrictEqual([...(await other.pausedQueues())].sort(), ['q1', 'q3'], `seen from ${label}`);
        assert.deepStrictEqual([...(await b.pausedQueues())].sort(), ['q1', 'q3']);
      },
      'sameStorage',
    );

    test(
      'resume wakes a worker waiting on the queue (its backlog is work again)',
      async () => {
        const b = await open();
        const t0 = Date.now();
        await enqueueOne(b, t0, 'pw');
        await b.pause('pw');
        assert.deepStrictEqual((await reserve(b, ['pw'], t0)).runs, [], 'paused: nothing reserved');
        const c = controller();
        const waiting = b.waitForWork(['pw'], null, c.signal);
        const other = await share(b);
        await other.resume('pw');
        await within(waiting, NOTIFY_TIMEOUT_MS, 'waitForWork woken by resume');
        assert.equal((await reserve(b, ['pw'], t0 + 1)).runs.length, 1);
      },
      'sameStorage',
    );

    test(
      `resume by a broker in another ${c.options.peerIn ?? 'process'} (a peer) wakes a worker waiting on the queue`,
      async () => {
        const b = await open();
        const t0 = Date.now();
        await enqueueOne(b, t0, 'pw');
        await b.pause('pw');
        assert.deepStrictEqual((await reserve(b, ['pw'], t0)).runs, [], 'paused: nothing reserved');
        const other = await peerOf(b);
        const c = controller();
        const waiting = b.waitForWork(['pw'], null, c.signal);
        await other.resume('pw');
        await within(waiting, NOTIFY_TIMEOUT_MS, 'waitForWork woken by a resume by the peer');
        assert.equal((await reserve(b, ['pw'], t0 + 1)).runs.length, 1);
      },
      'peer',
    );
  });

  // ---------------------------------------------------------------------------------------------
  describe('purge', () => {
    test('deletes the queued and scheduled runs of the queue and returns the count; active, finished and other queues stay', async () => {
      const b = await open();
      const t0 = Date.now();
      const done = [newRun('pu', t0), newRun('pu', t0), newRun('pu', t0), newRun('pu', t0)];
      await b.enqueue(done, t0);
      const { runs: leased } = await reserve(b, ['pu'], t0, 1000, 10 * HOUR);
      assert.equal(leased.length, 4);
      const [ok, ko, cancelled, active] = ids(done) as [string, string, string, string];
      await b.settle(
        'w1',
        [
          { id: ok, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN },
          { id: ko, attempt: 1, outcome: 'failed', error: errorText('x'), retentionMs: RETAIN },
        ],
        t0 + 1,
      );
      await b.cancel(cancelled, t0 + 1);
      const queued = [await enqueueOne(b, t0 + 2, 'pu'), await enqueueOne(b, t0 + 2, 'pu', { priority: 5 })];
      const scheduled = [await enqueueOne(b, t0 + 2, 'pu', { runAt: t0 + HOUR })];
      const elsewhere = [await enqueueOne(b, t0 + 2, 'pu-other'), await enqueueOne(b, t0 + 2, 'pu-other', { runAt: t0 + HOUR })];

      assert.equal(await b.purge('pu', t0 + 3), 3, 'two queued and one scheduled');
      for (const id of [...queued, ...scheduled]) assert.equal(await b.getRun(id), null, `purged run ${id} is gone`);
      const states = await Promise.all([ok, ko, cancelled, active].map(async (id) => (await getRun(b, id)).state));
      assert.deepStrictEqual(states, ['succeeded', 'failed', 'cancelled', 'active'], 'active and finished runs stay');
      for (const id of elsewhere) assert.ok(await b.getRun(id), `run ${id} of another queue stays`);
      assert.deepStrictEqual(
        (await b.counts(['pu'])).pu,
        { waiting: 0, queued: 0, scheduled: 0, active: 1, succeeded: 1, failed: 1, cancelled: 1 },
        'counts after the purge',
      );
      assert.deepStrictEqual(
        ids((await b.listRuns({ queue: 'pu', limit: 100 })).runs),
        [active, cancelled, ko, ok],
        'listed: what is left',
      );
      assert.deepStrictEqual((await reserve(b, ['pu'], t0 + 2 * HOUR)).runs, [], 'nothing purged is reserved later');
      assert.deepStrictEqual(
        await b.settle('w1', [{ id: active, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 4),
        ['ok'],
        'the active run finishes',
      );
      assert.equal(await b.purge('pu', t0 + 5), 0, 'purging again removes nothing');
      assert.equal(await b.purge('no-such-queue', t0 + 5), 0, 'an unknown queue: 0');
    });

    test('releases the idempotency keys of the runs it deletes: the same key then creates a new run', async () => {
      // Issue 20: pause, enqueue with a key, purge, resume; the same enqueue returned the purged id.
      const b = await open();
      const t0 = Date.now();
      const withKey = (k: string, runAt: number): NewRun => ({
        id: newRunId('pk'),
        task: 'inspector.echo',
        queue: 'pk',
        input: '{}',
        priority: 0,
        runAt,
        idempotencyKey: k,
        idempotencyTtl: 10 * HOUR,
      });
      await b.pause('pk');
      const created = await b.enqueue([withKey('purgeme', t0), withKey('purgeme-later', t0 + HOUR)], t0);
      assert.ok(created.every((r) => r.created));
      assert.equal(await b.purge('pk', t0 + 1), 2, 'the queued and the scheduled run of the paused queue');
      await b.resume('pk');
      const kept = withKey('kept', t0 + 1);
      await b.enqueue([kept], t0 + 1);
      assert.deepStrictEqual(ids((await reserve(b, ['pk'], t0 + 1, 1)).runs), [kept.id]);
      assert.equal(await b.purge('pk', t0 + 2), 0, 'the active run stays');
      for (const [k, runAt, state] of [
        ['purgeme', t0 + 3, 'queued'],
        ['purgeme-later', t0 + HOUR, 'scheduled'],
      ] as const) {
        const again = withKey(k, runAt);
        assert.deepStrictEqual(await b.enqueue([again], t0 + 3), [{ id: again.id, created: true, state }], `key ${k}: a new run`);
        assert.ok(await b.getRun(again.id), `the new run for ${k} exists`);
      }
      assert.deepStrictEqual(
        await b.enqueue([withKey('kept', t0 + 3)], t0 + 3),
        [{ id: kept.id, created: false, state: 'active' }],
        'the key of the active run still holds',
      );
    });
  });

  // ---------------------------------------------------------------------------------------------
  describe('retryFailed', () => {
    test('replays the failed runs of a queue, or of one task in it, and returns the count', async () => {
      const b = await open();
      const t0 = Date.now();
      const failedT1 = await failedRuns(b, t0, [newRun('rf', t0), newRun('rf', t0)]);
      const failedT2 = await failedRuns(b, t0, [newRun('rf', t0, { task: T2 })]);
      const failedOther = await failedRuns(b, t0, [newRun('rf-other', t0)]);
      const ok = await enqueueOne(b, t0 + 1, 'rf');
      await reserve(b, ['rf'], t0 + 1);
      await b.settle('w1', [{ id: ok, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 2);
      const queued = await enqueueOne(b, t0 + 3, 'rf');

      assert.equal(await b.retryFailed('rf', 'no.such.task', t0 + 10), 0, 'an unknown task: 0');
      assert.equal(await b.retryFailed('rf', T1, t0 + 10), 2, 'the failed runs of task T1');
      for (const id of failedT1) {
        const rec = await getRun(b, id);
        assert.equal(rec.state, 'queued', `replayed run ${id} is queued`);
        assert.equal(rec.attempts, 0, `replayed run ${id} has its attempts reset`);
        assert.equal(rec.error, undefined, `replayed run ${id} has no error`);
      }
      assert.equal((await getRun(b, failedT2[0]!)).state, 'failed', 'the failed run of task T2 is untouched');
      assert.equal((await getRun(b, failedOther[0]!)).state, 'failed', 'the failed run of another queue is untouched');
      assert.equal((await getRun(b, ok)).state, 'succeeded');

      const c = controller();
      const waiting = b.waitForWork(['rf'], null, c.signal);
      assert.equal(await b.retryFailed('rf', undefined, t0 + 20), 1, 'the rest of the queue: the T2 run');
      await within(waiting, NOTIFY_TIMEOUT_MS, 'waitForWork woken by retryFailed');
      assert.equal((await getRun(b, failedT2[0]!)).state, 'queued');
      assert.equal(await b.retryFailed('rf', undefined, t0 + 30), 0, 'nothing failed any more');
      assert.equal((await getRun(b, failedOther[0]!)).state, 'failed', 'other queues are never touched');

      const { runs } = await reserve(b, ['rf'], t0 + 40);
      assert.deepStrictEqual(new Set(ids(runs)), new Set([...failedT1, ...failedT2, queued]), 'replayed runs are reservable');
      for (const r of runs) assert.equal(r.attempt, 1, `run ${r.id} starts again at attempt 1`);
    });
  });
}
