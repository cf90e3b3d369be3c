// Crash safety with real worker processes: kill -9 one mid-flow; every run still completes.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { setups } from '../fixtures/brokers.ts';
import { waitFor } from '../helpers.ts';

const NODE = process.execPath;
const RUNS = 400;

function startWorker(url: string, prefix: string): ChildProcess {
  return spawn(NODE, ['src/cli/main.ts', 'worker', 'test/fixtures/crash-tasks.ts', '--concurrency', '8', '--lease-ms', '1000'], {
    env: { ...process.env, ERRAND_BROKER_URL: url, ERRAND_PREFIX: prefix, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

for (const make of setups()) {
  describe(`crash recovery on ${make().name}`, () => {
    it('completes every run when a worker is killed with SIGKILL mid-flow', async () => {
      const setup = make();
      const app = setup.app();
      // Same name and schema as in the workers' module; this process only enqueues.
      const work = app.task('work', { input: z.object({ n: z.number() }) }, () => null);
      const broker = await app.broker();
      const handles = await work.enqueueMany(Array.from({ length: RUNS }, (_, n) => ({ input: { n } })));
      const workers = [startWorker(setup.url, setup.prefix), startWorker(setup.url, setup.prefix)];
      try {
        await waitFor(async () => ((await broker.counts(['default'])).default?.succeeded ?? 0) >= RUNS / 4, {
          message: 'a quarter of the runs to finish',
          timeoutMs: 30_000,
        });
        const victim = workers[0]!;
        victim.kill('SIGKILL');
        await new Promise((r) => victim.once('exit', r));
        await waitFor(async () => ((await broker.counts(['default'])).default?.succeeded ?? 0) === RUNS, {
          message: 'every run to succeed',
          timeoutMs: 120_000,
        });
        const infos = await Promise.all(handles.map((h) => h.info()));
        assert.equal(infos.filter((i) => i.state === 'succeeded').length, RUNS);
        for (const info of infos) assert.equal(info.result, (info.input as { n: number }).n * 2);
      } finally {
        for (const w of workers) if (w.exitCode === null) w.kill('SIGKILL');
        await app.close();
      }
    });
  });
}
