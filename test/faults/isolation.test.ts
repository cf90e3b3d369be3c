// Fault: CPU-bound and crashing handlers in isolates (`isolation: 'thread' | 'process'`), on SQLite
// and Redis.
// - A handler spinning in `while (true) {}` with a 5 s timeout is stopped for real and its attempt
//   fails with reason `timeout` (retried once, per its policy, and stopped again), while the same
//   worker completes other runs meanwhile; its leases (2.5 s: an attempt outlives two of them) stay
//   renewed, so no run of the worker is redelivered: every other run has exactly one attempt, and the
//   spinning run exactly two.
// On a loaded machine (2 cores, load 20) the test's own event loop can stall for most of a second,
// and it shares the CPU with the spinning isolate: the lease (renewed every 625 ms, so a stall under
// about 1.8 s loses nothing), the timeout and a slot for every run (the 20 other runs are taken in
// one reservation and stored in one batch, well within the first attempt) leave room for that. The
// order "every other run before the first timeout" is still a race against the timeout's clock,
// with seconds of margin where it had a fraction of one (2 s, 3 slots, 20 runs one by one).
// - An isolate killed with kill -9 (process) or ending its thread fails only its own attempt, with
//   reason `crashed`; the run is retried and succeeds; a run in another isolate meanwhile goes on
//   untouched (one attempt).
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { z } from 'zod';
import type { Isolation, RunEvent, RunInfo } from '../../src/index.ts';
import { availableSetups } from '../fixtures/brokers.ts';
import * as handlers from '../fixtures/isolated-tasks.ts';
import { tempDir, waitFor } from '../helpers.ts';

const MODULE = new URL('../fixtures/isolated-tasks.ts', import.meta.url).href;
const QUICK_RUNS = 20;
/** The spinning handler's timeout, and the worker's lease: shorter than an attempt, so renewals must go on. */
const TIMEOUT_MS = 5000;
const LEASE_MS = 2500;

const { setups, skipped } = await availableSetups('errand-fault-iso');
const readError = (text: string | undefined) =>
  text ? (JSON.parse(text) as { name?: string; reason?: string; message?: string }) : undefined;
const settled = (info: RunInfo) => ['succeeded', 'failed', 'cancelled'].includes(info.state);
const final = async (h: { info(): Promise<RunInfo> }) =>
  waitFor(async () => ((i) => (settled(i) ? i : undefined))(await h.info()), { timeoutMs: 120_000, message: 'the run to settle' });

for (const why of skipped) it(`Redis: skipped (${why})`, { skip: why }, () => {});

for (const setup of setups) {
  for (const kind of ['thread', 'process'] as const satisfies Isolation[]) {
    describe(`fault: isolated handlers (${kind}) on ${setup.name}`, () => {
      after(() => setup.cleanup());

      it('stops a handler spinning past its 5 s timeout while the worker serves other runs; nothing is redelivered', async () => {
        const app = setup.app();
        const queue = `spin_${kind}`;
        const spin = app.task(
          `spin_${kind}`,
          {
            input: z.object({}),
            queue,
            isolation: kind,
            module: MODULE,
            timeout: TIMEOUT_MS,
            retries: { maxAttempts: 2, base: 1, jitter: 0 },
          },
          handlers.spin,
        );
        const quick = app.task(`quick_${kind}`, { input: z.object({ n: z.number() }), queue }, ({ n }) => n + 1);
        // A slot for each run: the quick runs are taken in one reservation and stored in one batch,
        // the least work the worker's event loop has to do beside the spinning isolate.
        const worker = app.worker({ concurrency: QUICK_RUNS + 1, leaseMs: LEASE_MS, queues: [queue] });
        const events: RunEvent[] = [];
        worker.on('run', (e: RunEvent) => events.push(e));
        await worker.start();
        try {
          const spinning = await spin.enqueue({});
          await waitFor(() => events.some((e) => e.type === 'start' && e.run.id === spinning.id), { timeoutMs: 60_000 });
          const quicks = await quick.enqueueMany(Array.from({ length: QUICK_RUNS }, (_, n) => ({ input: { n } })));
          const spun = await final(spinning);
          const infos = await Promise.all(quicks.map((h) => final(h)));

          assert.equal(spun.state, 'failed');
          assert.equal(spun.attempts, 2, 'two attempts (one retry per the policy), none redelivered');
          assert.equal(spun.leaseLosses, 0);
          assert.equal(spun.error?.name, 'TaskTimeoutError');
          assert.equal(spun.error?.reason, 'timeout');
          assert.match(spun.error?.message ?? '', new RegExp(`timed out after ${TIMEOUT_MS} ms`));
          assert.deepEqual(
            spun.history.map((h) => readError(h.error)?.reason),
            ['timeout', 'timeout'],
          );
          for (const info of infos) {
            assert.equal(info.state, 'succeeded');
            assert.equal(info.attempts, 1);
            assert.equal(info.leaseLosses, 0);
          }
          // The quick runs finished while the spinning handler was still running its first attempt.
          const firstTimeout = events.findIndex((e) => e.type === 'retry' && e.run.id === spinning.id);
          const quickDone = events.filter((e) => e.type === 'success' && e.run.task === quick.name).map((e) => events.indexOf(e));
          assert.equal(quickDone.length, QUICK_RUNS);
          assert.ok(
            quickDone.every((i) => i < firstTimeout),
            `every quick run succeeded before the first timeout (${quickDone.filter((i) => i < firstTimeout).length} of ${QUICK_RUNS} did)`,
          );
          assert.equal(events.filter((e) => e.type === 'lost').length, 0);
        } finally {
          await worker.stop({ graceMs: 0 });
          await app.close();
        }
      });

      it(`an isolate ${kind === 'process' ? 'killed with kill -9' : 'whose thread exits'} fails only its run, which is retried`, async () => {
        const app = setup.app();
        const queue = `crash_${kind}`;
        const opts = { queue, isolation: kind, module: MODULE, retries: { maxAttempts: 3, base: 1, jitter: 0 } } as const;
        const victimTask =
          kind === 'process'
            ? app.task(`victim_${kind}`, { input: z.object({}), ...opts }, handlers.waitOnFirst)
            : app.task(`victim_${kind}`, { input: z.object({}), ...opts }, handlers.exitOnFirst);
        const bystanderTask = app.task(`bystander_${kind}`, { input: z.object({ path: z.string() }), ...opts }, handlers.untilFile);
        const worker = app.worker({ concurrency: 3, leaseMs: LEASE_MS, queues: [queue] });
        await worker.start();
        try {
          const marker = join(tempDir('errand-fault-iso'), 'go');
          const bystander = await bystanderTask.enqueue({ path: marker });
          await waitFor(async () => (await bystander.info()).progress !== undefined, {
            timeoutMs: 60_000,
            message: 'the bystander to start',
          });
          const victim = await victimTask.enqueue({});
          if (kind === 'process') {
            const progress = await waitFor(async () => (await victim.info()).progress as { pid: number } | undefined, {
              timeoutMs: 60_000,
              message: 'the victim to report its pid',
            });
            assert.notEqual(progress.pid, process.pid);
            process.kill(progress.pid, 'SIGKILL');
          }
          const v = await final(victim);
          assert.equal(v.state, 'succeeded');
          assert.equal(v.attempts, 2);
          assert.equal(v.leaseLosses, 0);
          assert.deepEqual(v.result, { attempt: 2 });
          const first = readError(v.history[0]?.error);
          assert.equal(first?.name, 'IsolateCrashedError');
          assert.equal(first?.reason, 'crashed');
          assert.match(first?.message ?? '', kind === 'process' ? /was killed by SIGKILL/ : /exited with code 7/);
          // The run in the other isolate was not touched.
          assert.equal((await bystander.info()).state, 'active');
          writeFileSync(marker, '');
          const b = await final(bystander);
          assert.equal(b.state, 'succeeded');
          assert.equal(b.attempts, 1);
          assert.equal(b.leaseLosses, 0);
        } finally {
          await worker.stop({ graceMs: 0 });
          await app.close();
        }
      });
    });
  }
}
