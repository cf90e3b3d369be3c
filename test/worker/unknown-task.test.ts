// A run of a task the worker does not define (a rolling deploy: the API already enqueues a task
// that this worker's code does not have yet) is handed back, its attempt not counted, for a worker
// that defines it; only once the worker has met it for `unknownTaskWaitMs` does it fail with reason
// `unknown_task`. On both brokers, for a run without and with flow control (a key's limit: the
// hand-back holds the key, not the queue).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { ConfigError, type Errand, type RunEvent, type RunFailedError } from '../../src/index.ts';
import { setups } from '../fixtures/brokers.ts';
import { waitFor } from '../helpers.ts';

const Q = 'images';

/** The old code: `resize` only. */
function oldApp(app: Errand): Errand {
  app.task('resize', { input: z.object({ n: z.number() }), queue: Q }, ({ n }) => n);
  return app;
}

/** The new code: `resize`, and `thumb` (with a per-key limit) and `crop` (without). */
function newApp(app: Errand) {
  oldApp(app);
  const thumb = app.task(
    'thumb',
    { input: z.object({ n: z.number(), tenant: z.string() }), queue: Q, limits: { key: (i) => i.tenant, concurrency: 2 } },
    ({ n }) => n * 10,
  );
  const crop = app.task('crop', { input: z.object({ n: z.number() }), queue: Q }, ({ n }) => n * 100);
  return { thumb, crop };
}

for (const make of setups('errand-unknown-task')) {
  const setup = make();
  describe(`a run of a task the worker does not define, on ${setup.name}`, () => {
    it('is handed back (no attempt used) and runs on a worker that defines it', async () => {
      const api = setup.app();
      const { thumb, crop } = newApp(api);
      const old = oldApp(setup.app());
      const a = await crop.enqueue({ n: 1 });
      const b = await thumb.enqueue({ n: 2, tenant: 't1' });
      const oldWorker = old.worker({ queues: [Q], unknownTaskWaitMs: 600_000 });
      const backoffs = new Set<string>();
      oldWorker.on('run', (e: RunEvent) => {
        if (e.type === 'backoff') backoffs.add(e.run.id);
      });
      await oldWorker.start();
      let newWorker: ReturnType<Errand['worker']> | undefined;
      try {
        await waitFor(() => backoffs.has(a.id) && backoffs.has(b.id), { timeoutMs: 20_000, message: 'the old worker to hand both back' });
        await oldWorker.stop({ graceMs: 0 });
        for (const h of [a, b]) {
          const info = await h.info();
          assert.ok(['queued', 'scheduled'].includes(info.state), `${h.id} waits for a worker: ${info.state}`);
          assert.ok(
            info.history.some((x) => x.outcome === 'backoff'),
            `${h.id} handed back`,
          );
        }
        newWorker = api.worker({ queues: [Q] });
        await newWorker.start();
        assert.equal(await a.result({ timeout: 20_000 }), 100);
        assert.equal(await b.result({ timeout: 20_000 }), 20);
        for (const h of [a, b]) {
          const info = await h.info();
          assert.equal(info.state, 'succeeded');
          assert.equal(info.attempts, 1, `${h.id}: being handed back used no attempt`);
        }
      } finally {
        await oldWorker.stop({ graceMs: 0 });
        await newWorker?.stop({ graceMs: 0 });
        await api.close();
        await old.close();
        await setup.cleanup();
      }
    });

    it('fails with reason unknown_task once no worker that defines it has taken it within unknownTaskWaitMs', async () => {
      const s = make();
      const api = s.app();
      const { crop } = newApp(api);
      const old = oldApp(s.app());
      const a = await crop.enqueue({ n: 1 });
      const oldWorker = old.worker({ queues: [Q], unknownTaskWaitMs: 1500 });
      await oldWorker.start();
      try {
        await assert.rejects(
          () => a.result({ timeout: 30_000 }),
          (err: RunFailedError) => err.runError.reason === 'unknown_task',
        );
        const info = await a.info();
        assert.match(
          info.error?.message ?? '',
          /No task named "crop" is registered in this worker \(registered: resize\); no worker that defines it took the run within 1500ms \(unknownTaskWaitMs\)/,
        );
        assert.ok(
          info.history.some((x) => x.outcome === 'backoff'),
          'handed back first',
        );
      } finally {
        await oldWorker.stop({ graceMs: 0 });
        await api.close();
        await old.close();
        await s.cleanup();
      }
    });
  });
}

describe('worker option unknownTaskWaitMs', () => {
  it('is an integer of ms from 0 to 2147483647', () => {
    const app = oldApp(setups('errand-unknown-task')[0]!().app());
    for (const bad of [-1, 1.5, '1000', Number.NaN, 2 ** 31]) {
      assert.throws(
        () => app.worker({ unknownTaskWaitMs: bad as number }),
        (err: Error) => err instanceof ConfigError && /unknownTaskWaitMs must be an integer from 0 to 2147483647/.test(err.message),
      );
    }
  });
});
