// The worker takes a WorkerHost (broker, tasks, logger, redaction paths), not the app: a host that is
// no Errand runs runs as `app.worker()` does, and what it says is what the worker uses.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';
import { z } from 'zod';
import { ConfigError, PermanentError, RunFailedError, Worker, type WorkerHost } from '../../src/index.ts';
import { createTesting } from '../../src/testing/index.ts';

const logger = pino({ level: 'silent' });

describe('worker host', () => {
  it('runs runs with a host made of the broker, the tasks, a logger and the redaction paths alone', async () => {
    const t = createTesting();
    const app = t.errand;
    const add = app.task(
      'host.add',
      { input: z.object({ a: z.number(), b: z.number() }), retention: { succeeded: 60_000 } },
      ({ a, b }) => a + b,
    );
    const leak = app.task(
      'host.leak',
      { input: z.object({ token: z.string() }), retries: { maxAttempts: 1 }, retention: { failed: 60_000 } },
      ({ token }) => {
        throw new PermanentError(`refused ${token}`);
      },
    );
    const paths: string[] = [];
    const host: WorkerHost = {
      broker: async () => t.broker,
      tasks: app.tasks,
      logger,
      redactPaths: (task) => {
        paths.push(task);
        return task === 'host.leak' ? ['token'] : [];
      },
    };
    const worker = new Worker(host, { concurrency: 2, id: 'host-worker' });
    assert.equal(worker.logger.bindings().worker, 'host-worker');
    await worker.start();
    try {
      assert.equal(await (await add.enqueue({ a: 2, b: 3 })).result({ timeout: 10_000 }), 5);
      const failed = await leak.enqueue({ token: 's3cret-value' });
      const err = await failed.result({ timeout: 10_000 }).catch((e: unknown) => e);
      assert.ok(err instanceof RunFailedError, String(err));
      const stored = await t.broker.getRun(failed.id);
      assert.equal(stored?.state, 'failed');
      // The host's redaction paths scrub the error as stored.
      assert.match(String(stored?.error), /refused/);
      assert.doesNotMatch(String(stored?.error), /s3cret-value/);
      assert.ok(paths.includes('host.leak'));
    } finally {
      await worker.stop();
    }
    assert.equal(worker.state, 'stopped');
  });

  it('refuses a host without tasks when no queue is given, with a clear error', () => {
    const host: WorkerHost = { broker: () => Promise.reject(new Error('unused')), tasks: new Map(), logger, redactPaths: () => [] };
    assert.throws(
      () => new Worker(host),
      (e: unknown) => e instanceof ConfigError && /no queue/.test(e.message),
    );
    // Given a queue, it is none of its tasks' (it has none): refused as well.
    assert.throws(
      () => new Worker(host, { queues: ['q'] }),
      (e: unknown) => e instanceof ConfigError && /unknown queue "q": the app's tasks use no queue/.test(e.message),
    );
  });

  it('app.worker() still makes a worker of the app, listed in app.workers', () => {
    const { errand } = createTesting();
    errand.task('host.noop', { input: z.object({}) }, () => null);
    const worker = errand.worker({ concurrency: 1 });
    assert.ok(errand.workers.has(worker));
    assert.deepEqual(worker.queues, ['default']);
  });
});
