// Fault 4 (workers): SIGTERM to worker processes under load. Each one stops taking runs, finishes
// the runs it holds within its grace period, stores their outcomes and exits 0: nothing is lost and
// nothing runs twice.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { createErrand } from '../../src/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { tempDir, waitFor } from '../helpers.ts';
import { connected, ensureDir, executions, figure, type Proc, Procs, START_LIMIT_MS, startRedis } from './harness.ts';

const TOTAL = 3000;
const WORKERS = 3;
const TERMS = 4;

describe('fault: SIGTERM to workers under load', () => {
  it('drains gracefully: every run succeeds exactly once, every stopped worker exits 0', { timeout: 900_000 }, async () => {
    const procs = new Procs();
    const dir = tempDir('errand-fault-term');
    const logDir = ensureDir(join(dir, 'log'));
    const redis = await startRedis(procs, join(dir, 'redis'), { persistent: false });
    const prefix = 'fault-term';
    const env = { ERRAND_BROKER_URL: redis.url, ERRAND_PREFIX: prefix, FAULT_LOG_DIR: logDir };
    // Handlers of 20 to 200 ms, a grace period far longer: every run held at SIGTERM can finish.
    const flags = ['--concurrency', '16', '--lease-ms', '5000', '--grace-ms', '20000', '--queues', 'faults'];
    const app = createErrand({ broker: redis.url, prefix, logger: quietLogger });
    const record = app.task(
      'record',
      { input: z.object({ n: z.number().int(), ms: z.number().int().optional() }), queue: 'faults', retries: { maxAttempts: 1 } },
      () => 0,
    );
    const broker = await app.broker();
    await connected(broker);
    const counts = async () => (await broker.counts(['faults'])).faults!;
    const workers: Proc[] = [];
    const drains: { pid: number; ms: number; code: number | null; queueActiveAtSignal: number }[] = [];
    try {
      for (let i = 0; i < WORKERS; i++) workers.push(procs.worker(`worker-${i}`, env, flags));
      const handles = [];
      for (let n = 0; n < TOTAL; n += 500) {
        handles.push(
          ...(await record.enqueueMany(Array.from({ length: 500 }, (_, i) => ({ input: { n: n + i, ms: 20 + ((n + i) % 10) * 20 } })))),
        );
      }
      for (let t = 0; t < TERMS; t++) {
        const i = t % WORKERS;
        // Terminate a worker while it is busy.
        await waitFor(async () => (await counts()).active >= 8, { timeoutMs: START_LIMIT_MS, message: 'runs in flight' });
        const proc = workers[i]!;
        const queueActiveAtSignal = (await broker.counts(['faults'])).faults!.active;
        const at = Date.now();
        const exit = await procs.kill(proc, 'SIGTERM', 40_000);
        drains.push({ pid: proc.pid, ms: Date.now() - at, code: exit.code, queueActiveAtSignal });
        workers[i] = procs.worker(`worker-${i}-after-term-${t + 1}`, env, flags);
        await sleep(300);
      }
      await waitFor(async () => (await counts()).succeeded === TOTAL, {
        timeoutMs: START_LIMIT_MS,
        intervalMs: 50,
        message: `all ${TOTAL} runs succeeded`,
      });

      for (const d of drains) assert.equal(d.code, 0, `worker ${d.pid} exited 0 after SIGTERM`);
      assert.deepEqual(await counts(), { waiting: 0, queued: 0, scheduled: 0, active: 0, succeeded: TOTAL, failed: 0, cancelled: 0 });
      const runs = executions(logDir);
      const twice = [...runs].filter(([, list]) => list.length > 1);
      assert.deepEqual(twice.slice(0, 3), [], `${twice.length} run(s) executed more than once`);
      const missing = handles.filter((h) => !runs.has(h.id));
      assert.equal(missing.length, 0, 'every run executed');
      figure('sigterm-workers', { runs: TOTAL, terminations: drains.length, duplicates: 0, lost: 0, drains });
    } finally {
      await app.close();
      await procs.killAll();
      await redis.stop();
    }
  });
});
