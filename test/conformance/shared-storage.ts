/**
 * The broker conformance suite, section: several brokers on one storage (another instance, another
 * process): reads, reserves, wake-ups, watch and onCancel across them. See `suite.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import type { Broker } from '../../src/broker/types.ts';
import { settledFlag, settleTurns, waitFor, within } from '../helpers.ts';
import {
  type ConformanceContext,
  NOTIFY_TIMEOUT_MS,
  Q,
  LEASE,
  RETAIN,
  newRun,
  ids,
  assertFields,
  errorText,
  type Need,
  type PeerBroker,
  ZERO_COUNTS,
} from './context.ts';

export function sharedStorageConformance(c: ConformanceContext): void {
  const { open, share, peerOf, controller, test, getRun, reserveAll, reserveOne, enqueueOne } = c;
  // Several brokers on one storage: another instance in this process (which may share in-process
  // machinery with the first), and a peer: a broker in another process, or in a worker thread for
  // storage only this process can open (`peerIn`), which shares nothing with the first but storage.
  const modes: { label: string; other: (b: Broker) => Promise<PeerBroker>; needs: Need }[] = [
    { label: 'another instance in this process', other: (b) => share(b), needs: 'sameStorage' },
    { label: `another ${c.options.peerIn ?? 'process'}`, other: (b) => peerOf(b), needs: 'peer' },
  ];
  for (const mode of modes) {
    describe(`several brokers on the same storage: ${mode.label}`, () => {
      const t = (title: string, fn: () => Promise<void>) => test(title, fn, mode.needs);

      t('both read the same run', async () => {
        const a = await open();
        const other = await mode.other(a);
        const t0 = Date.now();
        const id = await enqueueOne(other, t0, { input: '{"from":"other"}', priority: 4 });
        assert.deepStrictEqual(await a.getRun(id), await other.getRun(id));
        assertFields(await getRun(a, id), { state: 'queued', input: '{"from":"other"}', priority: 4 }, 'run seen by the first broker');
      });

      t('concurrent reserves never hand out a run twice and together hand out every run', async () => {
        const a = await open();
        const other = await mode.other(a);
        const t0 = Date.now();
        const runs = Array.from({ length: 60 }, (_, i) => newRun(Q, t0, { priority: i % 3 }));
        for (let i = 0; i < runs.length; i += 20) await a.enqueue(runs.slice(i, i + 20), t0);
        const calls = Array.from({ length: 24 }, (_, i) =>
          (i % 2 ? a : other).reserve({ workerId: `w${i % 4}`, queues: [Q], max: 5, leaseMs: LEASE, now: t0 + 1 }),
        );
        const results = await Promise.all(calls);
        const got = results.flatMap((r) => ids(r.runs));
        assert.equal(new Set(got).size, got.length, 'no run handed out twice');
        assert.deepStrictEqual(new Set(got), new Set(ids(runs)), 'every run handed out');
        assert.ok(
          results.every((r) => r.runs.every((x) => x.attempt === 1)),
          'every reservation is a first attempt',
        );
        assert.deepStrictEqual((await a.counts([Q]))[Q], { ...ZERO_COUNTS, active: 60 });
      });

      t('concurrent settles and cancels: each run ends in exactly one state', async () => {
        const a = await open();
        const other = await mode.other(a);
        const t0 = Date.now();
        const runs = Array.from({ length: 30 }, () => newRun(Q, t0));
        await a.enqueue(runs, t0);
        assert.equal((await reserveAll(a, 'w1', t0)).runs.length, 30);
        const [settles, cancels] = await Promise.all([
          Promise.all(
            runs.map((r) => a.settle('w1', [{ id: r.id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 1)),
          ),
          Promise.all(runs.map((r) => other.cancel(r.id, t0 + 1))),
        ]);
        for (const [i, r] of runs.entries()) {
          const settled = settles[i]![0] === 'ok';
          const cancel = cancels[i]!;
          const rec = await getRun(a, r.id);
          if (settled) {
            assert.deepStrictEqual(
              cancel,
              { outcome: 'finished', state: 'succeeded' },
              `${r.id}: settled, so the cancel found it finished`,
            );
            assert.equal(rec.state, 'succeeded');
          } else {
            assert.deepStrictEqual(cancel, { outcome: 'cancelled', previous: 'active' }, `${r.id}: settle lost, so the cancel won`);
            assert.equal(rec.state, 'cancelled');
          }
        }
      });

      t('waitForWork blocks until the other broker enqueues, then resolves', async () => {
        const waiter = await open();
        const producer = await mode.other(waiter);
        await reserveAll(waiter, 'w1', Date.now());
        const c = controller();
        const waiting = waiter.waitForWork([Q], null, c.signal);
        const woken = settledFlag(waiting);
        await producer.counts([Q]);
        await settleTurns(200);
        assert.equal(woken.settled, false, 'no work yet: still waiting');
        await enqueueOne(producer, Date.now());
        await within(waiting, NOTIFY_TIMEOUT_MS, 'waitForWork woken by an enqueue from the other broker');
      });

      t('an enqueue by the other broker between the last reserve and waitForWork is not lost', async () => {
        const waiter = await open();
        const producer = await mode.other(waiter);
        await reserveAll(waiter, 'w1', Date.now());
        await enqueueOne(producer, Date.now());
        await settleTurns(200); // the notification comes and goes with nobody waiting
        const c = controller();
        await within(waiter.waitForWork([Q], null, c.signal), NOTIFY_TIMEOUT_MS, 'waitForWork after an enqueue it did not see happen');
        assert.equal((await reserveAll(waiter, 'w1', Date.now())).runs.length, 1, 'and the run is there');
      });

      t('transitions are atomic as seen by a concurrent reader on the other broker', async () => {
        const a = await open();
        const reader = await mode.other(a);
        const t0 = Date.now();
        const runs = Array.from({ length: 40 }, () => newRun(Q, t0));
        await a.enqueue(runs, t0);
        assert.equal((await reserveAll(a, 'w1', t0)).runs.length, runs.length);
        const total = runs.length;
        let writing = true;
        const seen: string[] = [];
        const read = async () => {
          let observations = 0;
          while (writing || observations < 2) {
            const [counts, rec] = await Promise.all([reader.counts([Q]), reader.getRun(runs[observations % total]!.id)]);
            const c = counts[Q]!;
            const sum = c.queued + c.scheduled + c.active + c.succeeded + c.failed + c.cancelled;
            if (sum !== total) seen.push(`counts ${JSON.stringify(c)} sum to ${sum}, not ${total}`);
            if (rec) {
              const done = rec.state === 'succeeded' || rec.state === 'failed' || rec.state === 'cancelled';
              if (done !== (rec.finishedAt !== undefined)) seen.push(`${rec.id} ${rec.state} with finishedAt ${rec.finishedAt}`);
              if (rec.state === 'succeeded' && (rec.result !== '1' || rec.history.at(-1)?.outcome !== 'succeeded'))
                seen.push(`${rec.id} succeeded with result ${rec.result} and history ${JSON.stringify(rec.history)}`);
              if (rec.state === 'active' && rec.history.at(-1)?.outcome !== undefined)
                seen.push(`${rec.id} active with a finished attempt ${JSON.stringify(rec.history)}`);
              if (rec.state === 'cancelled' && rec.history.at(-1)?.outcome !== 'cancelled')
                seen.push(`${rec.id} cancelled, its attempt ${JSON.stringify(rec.history.at(-1))}`);
            } else seen.push(`${runs[observations % total]!.id} not found`);
            observations++;
          }
          return observations;
        };
        const write = async () => {
          try {
            for (let i = 0; i < total; i += 4) {
              const batch = runs.slice(i, i + 4);
              // Half settled, half cancelled, each in one call of its own kind.
              if ((i / 4) % 2) await Promise.all(batch.map((r) => a.cancel(r.id, t0 + 1 + i)));
              else
                await a.settle(
                  'w1',
                  batch.map((r) => ({ id: r.id, attempt: 1, outcome: 'succeeded' as const, result: '1', retentionMs: RETAIN })),
                  t0 + 1 + i,
                );
            }
          } finally {
            writing = false;
          }
        };
        const [observations] = await Promise.all([read(), write()]);
        assert.deepStrictEqual(seen.slice(0, 5), [], `${seen.length} half-done transitions seen in ${observations} reads`);
        assert.deepStrictEqual((await a.counts([Q]))[Q], { ...ZERO_COUNTS, succeeded: 20, cancelled: 20 });
      });

      t('waitForWork resolves on a replay (retry) made by the other broker', async () => {
        const waiter = await open();
        const api = await mode.other(waiter);
        const t0 = Date.now();
        const id = await enqueueOne(api, t0);
        await reserveOne(api, 'w1', t0);
        await api.settle('w1', [{ id, attempt: 1, outcome: 'failed', error: errorText('x'), retentionMs: RETAIN }], t0);
        // The enqueue's wake-up (a worker takes it, finds nothing to reserve, and waits again).
        await within(waiter.waitForWork([Q], Date.now() + 1000, controller().signal), NOTIFY_TIMEOUT_MS, 'the enqueue wake-up');
        assert.deepStrictEqual((await reserveAll(waiter, 'w2', Date.now())).runs, [], 'nothing queued: the run failed');
        const c = controller();
        const waiting = waiter.waitForWork([Q], null, c.signal);
        const woken = settledFlag(waiting);
        await settleTurns(200);
        assert.equal(woken.settled, false, 'no work before the retry: still waiting');
        assert.deepStrictEqual(await api.retry(id, Date.now()), { outcome: 'queued' });
        await within(waiting, NOTIFY_TIMEOUT_MS, 'waitForWork woken by a retry from the other broker');
      });

      t('watch: the listener is called after the run is settled or cancelled by the other broker', async () => {
        const watcher = await open();
        const other = await mode.other(watcher);
        const t0 = Date.now();
        const settled = await enqueueOne(other, t0);
        const cancelled = await enqueueOne(other, t0);
        let settledCalls = 0;
        let cancelledCalls = 0;
        const stop1 = await watcher.watch(settled, () => settledCalls++);
        const stop2 = await watcher.watch(cancelled, () => cancelledCalls++);
        try {
          await reserveAll(other, 'w1', t0, { max: 1 });
          const base = settledCalls;
          assert.deepStrictEqual(
            await other.settle('w1', [{ id: settled, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 1),
            ['ok'],
          );
          await waitFor(() => settledCalls > base, { timeoutMs: NOTIFY_TIMEOUT_MS, message: 'watch listener called after settle' });
          assert.equal((await getRun(watcher, settled)).state, 'succeeded', 'the watcher reads the new state');

          const base2 = cancelledCalls;
          await other.cancel(cancelled, t0 + 2);
          await waitFor(() => cancelledCalls > base2, { timeoutMs: NOTIFY_TIMEOUT_MS, message: 'watch listener called after cancel' });
          assert.equal((await getRun(watcher, cancelled)).state, 'cancelled');
        } finally {
          stop1();
          stop2();
        }
      });

      t("onCancel fires on the worker's broker when the other broker cancels its active run", async () => {
        const worker = await open();
        const api = await mode.other(worker);
        const t0 = Date.now();
        const seen: string[] = [];
        const stop = worker.onCancel((cancelled) => seen.push(...cancelled));
        try {
          const id = await enqueueOne(api, t0);
          const keep = await enqueueOne(api, t0);
          await reserveAll(worker, 'w1', t0);
          assert.deepStrictEqual(await api.cancel(id, t0 + 5), { outcome: 'cancelled', previous: 'active' });
          await waitFor(() => seen.includes(id), {
            timeoutMs: NOTIFY_TIMEOUT_MS,
            message: `onCancel on the worker's broker called with ${id}`,
          });
          assert.ok(!seen.includes(keep), 'only the cancelled run is reported');
          assert.deepStrictEqual(await worker.renew('w1', [{ id, attempt: 1 }], LEASE, t0 + 10), [id]);
        } finally {
          stop();
        }
      });
    });
  }
}
