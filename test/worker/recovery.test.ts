// Recovery of a dead worker's runs, and what must not be recovered, on every broker:
// - an idle worker takes a run whose lease expired although nothing wakes it (the wake-up of the
//   enqueue went to the worker that then died): it looks again at least once per lease;
// - a worker whose event loop stalls for less than the bound documented in docs/reliability.md
//   (5 s with the default lease) keeps its lease: the run is executed once, attempt 1, while
//   another worker is ready to take it; a stall longer than the lease does lose it (the check above
//   would see a recovery).
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import { z } from 'zod';
import type { Broker } from '../../src/broker/types.ts';
import { sleepUntilWoken } from '../../src/broker/shared/wait.ts';
import { setups } from '../fixtures/brokers.ts';
import { waitFor } from '../helpers.ts';

const NODE = process.execPath;

/** A worker process serving test/fixtures/stall-tasks.ts (default lease unless `leaseMs`). */
function stallWorker(url: string, prefix: string, leaseMs?: number): ChildProcess {
  const args = ['src/cli/main.ts', 'worker', 'test/fixtures/stall-tasks.ts', '--concurrency', '2'];
  if (leaseMs) args.push('--lease-ms', String(leaseMs));
  return spawn(NODE, args, {
    env: { ...process.env, ERRAND_BROKER_URL: url, ERRAND_PREFIX: prefix, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

for (const make of setups('errand-recovery')) {
  const name = make().name;
  describe(`recovery on ${name}`, () => {
    it('an idle worker that is never woken still takes a dead worker’s run once its lease expires', async () => {
      const setup = make();
      const driver = setup.app();
      const idle = setup.app();
      const job = driver.task('job', { input: z.object({ n: z.number() }), queue: 'rq' }, () => null);
      const executions: number[] = [];
      idle.task('job', { input: z.object({ n: z.number() }), queue: 'rq' }, (_input, ctx) => {
        executions.push(ctx.attempt);
        return 'done';
      });
      // The idle worker's wake-ups go elsewhere (to the worker that then dies): it waits on its
      // timer alone, as a worker does whose queue's wake-up another idle worker consumed.
      const broker = await idle.broker();
      let waits = 0;
      (broker as { waitForWork: Broker['waitForWork'] }).waitForWork = (_queues, until, signal) => {
        waits++;
        return sleepUntilWoken(until === null ? null : until - Date.now(), signal, () => () => {});
      };
      const worker = idle.worker({ concurrency: 2, leaseMs: 1000 });
      try {
        await worker.start();
        await waitFor(() => waits > 0, { message: 'the idle worker to wait for work', timeoutMs: 10_000 });
        // After its look: the run is enqueued and leased by a worker that dies at once.
        const handle = await job.enqueue({ n: 1 });
        const inner = await driver.broker();
        const taken = await inner.reserve({ workerId: 'dead-worker', queues: ['rq'], max: 1, leaseMs: 300, now: Date.now() });
        assert.deepEqual(
          taken.runs.map((r) => r.id),
          [handle.id],
          'the dying worker took the run',
        );
        const info = await waitFor(
          async () => {
            const i = await handle.info();
            return i.state === 'succeeded' ? i : null;
          },
          { message: 'the dead worker’s run to be taken by the idle worker', timeoutMs: 20_000 },
        );
        assert.equal(info.attempts, 2, 'the second attempt, by the idle worker');
        assert.deepEqual(executions, [2], 'executed once, by the idle worker');
      } finally {
        await worker.stop({ graceMs: 0 });
        await idle.close();
        await driver.close();
        await setup.cleanup();
      }
    });

    it('a stall of the event loop shorter than the bound (4.5 s, default lease) loses no lease: executed once, attempt 1', async () => {
      const setup = make();
      const app = setup.app();
      const duplicates: number[] = [];
      const stall = app.task('stall', { input: z.object({ waitMs: z.number(), stallMs: z.number() }), queue: 'stall' }, (_input, ctx) => {
        duplicates.push(ctx.attempt);
        return null;
      });
      const child = stallWorker(setup.url, setup.prefix);
      const other = app.worker({ concurrency: 2 });
      try {
        // A first stall starts with the run; a second one later, at another point of the renewal
        // cycle, once the loop has run in between (two stalls back to back would be one of 9 s).
        const handles = await Promise.all([stall.enqueue({ waitMs: 0, stallMs: 4500 }), stall.enqueue({ waitMs: 5700, stallMs: 4500 })]);
        await waitFor(async () => (await Promise.all(handles.map((h) => h.info()))).every((i) => i.state === 'active'), {
          message: 'the stalling worker to hold both runs',
          timeoutMs: 30_000,
        });
        // Another worker, with the default lease too, ready to take the runs should their leases expire.
        await other.start();
        const infos = await waitFor(
          async () => {
            const all = await Promise.all(handles.map((h) => h.info()));
            return all.every((i) => i.state === 'succeeded') ? all : null;
          },
          { message: 'both runs to succeed', timeoutMs: 60_000, intervalMs: 50 },
        );
        for (const info of infos) {
          assert.equal(info.attempts, 1, 'one attempt: the lease was never lost');
          assert.equal(info.leaseLosses, 0);
          assert.equal((info.result as unknown as { attempt: number }).attempt, 1);
        }
        assert.deepEqual(duplicates, [], 'the other worker never executed them');
      } finally {
        await other.stop({ graceMs: 0 });
        await stopChild(child);
        await app.close();
        await setup.cleanup();
      }
    });

    it('a stall longer than the lease loses it: the other worker takes the run (what the test above would see)', async () => {
      const setup = make();
      const app = setup.app();
      const taken: number[] = [];
      const stall = app.task('stall', { input: z.object({ waitMs: z.number(), stallMs: z.number() }), queue: 'stall' }, (_input, ctx) => {
        taken.push(ctx.attempt);
        return null;
      });
      const child = stallWorker(setup.url, setup.prefix, 600);
      const other = app.worker({ concurrency: 2, leaseMs: 600 });
      try {
        const handle = await stall.enqueue({ waitMs: 0, stallMs: 2500 });
        await waitFor(async () => (await handle.info()).state === 'active', {
          message: 'the stalling worker to hold the run',
          timeoutMs: 30_000,
        });
        await other.start();
        const info = await waitFor(
          async () => {
            const i = await handle.info();
            return i.state === 'succeeded' ? i : null;
          },
          { message: 'the run to succeed', timeoutMs: 60_000, intervalMs: 50 },
        );
        assert.deepEqual(taken, [2], 'recovered by the other worker, attempt 2');
        assert.equal(info.attempts, 2);
        assert.equal(info.leaseLosses, 1);
      } finally {
        await other.stop({ graceMs: 0 });
        await stopChild(child);
        await app.close();
        await setup.cleanup();
      }
    });
  });
}
