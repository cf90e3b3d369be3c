// Fault: a process isolate whose worker is killed with SIGKILL while its handler is CPU-bound (the
// case isolation is for) exits too: its event loop never runs, so the IPC channel's 'disconnect'
// cannot end it; the isolate's watchdog thread sees its parent gone and kills it. Without that the
// orphan spun on forever, alongside the retry of its run once the lease expired.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { createErrand } from '../../src/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { tempDir, waitFor } from '../helpers.ts';
import { ensureDir, Procs, ROOT } from './harness.ts';

const MODULE = join(ROOT, 'test/faults/fixtures/isolate-tasks.ts');

/** Whether process `pid` runs (a zombie, waiting for a parent to reap it, does not). */
function running(pid: number): boolean {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return !/^State:\s+Z/m.test(status);
  } catch {
    return false;
  }
}

describe('fault: the worker of a CPU-bound process isolate killed with SIGKILL', () => {
  it('takes the isolate with it', { timeout: 180_000 }, async () => {
    const procs = new Procs();
    const dir = tempDir('errand-fault-orphan');
    const logDir = ensureDir(join(dir, 'log'));
    const url = `sqlite:${join(dir, 'errand.db')}`;
    const app = createErrand({ broker: url, logger: quietLogger });
    const spin = app.task('spin_pid', { input: z.object({}), queue: 'orphans' }, () => undefined);
    let isolate: number | undefined;
    try {
      const worker = procs.worker('worker', { ERRAND_BROKER_URL: url, FAULT_LOG_DIR: logDir }, ['--queues', 'orphans'], MODULE);
      await spin.enqueue({});
      const pidFile = join(logDir, 'isolate.pid');
      isolate = await waitFor(() => (existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8')) || undefined : undefined), {
        timeoutMs: 120_000,
        message: `the isolate to start:\n${worker.tail()}`,
      });
      assert.notEqual(isolate, worker.pid);
      assert.ok(running(isolate), 'the isolate spins');
      await procs.kill(worker, 'SIGKILL');
      const pid = isolate;
      await waitFor(() => !running(pid) || undefined, { timeoutMs: 30_000, message: `the orphaned isolate ${pid} to exit` });
    } finally {
      if (isolate !== undefined && running(isolate)) process.kill(isolate, 'SIGKILL');
      await procs.killAll();
      await app.close();
    }
  });
});
