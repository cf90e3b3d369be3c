// Celery tasks in Errand's dashboard: a Celery worker given an Errand broker (`errand: { broker }`)
// records each task that ends on it as a finished run (queue `celery-<queue>`) and announces itself
// as a worker, so the dashboard's JSON API and `/metrics` show what Python's `.delay()` sent.
// Runs Debian's real Celery as the producer, like interop.test.ts.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { z } from 'zod';
import { type CeleryWorker, createCeleryWorker, recordQueueName } from '../../src/celery/index.ts';
import { dashboardPlugin } from '../../src/dashboard/plugin.ts';
import { createErrand, type Errand } from '../../src/index.ts';
import { metricsPlugin } from '../../src/dashboard/metrics-route.ts';
import type { OwnRedis } from '../fixtures/redis-servers.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { tempDir, waitFor } from '../helpers.ts';
import { celerySkip, ownRedis, py } from './support.ts';

const skip = celerySkip();
const QUEUE = 'celery-celery';

describe("Celery tasks in Errand's dashboard", { skip }, () => {
  let server: OwnRedis;
  let url: string;
  let errand: Errand;
  let worker: CeleryWorker;
  let app: FastifyInstance;

  before(async () => {
    ({ server, url } = await ownRedis('errand-celery-dashboard'));
    errand = createErrand({ broker: `sqlite:${join(tempDir('errand-celery-dash'), 'e.db')}`, logger: quietLogger });
    worker = createCeleryWorker({ url, queues: ['celery'], concurrency: 2, errand: { broker: await errand.broker() } });
    worker.register('ts.add', { args: z.tuple([z.number(), z.number()]) }, ([a, b]) => (a as number) + (b as number));
    worker.register('ts.fail', {}, ([message]) => {
      throw new TypeError(String(message));
    });
    worker.register('ts.flaky', { maxRetries: 3 }, (_args, _kwargs, ctx) => {
      if (ctx.retries < 2) ctx.retry({ countdown: 0.05 });
      return 'done';
    });
    await worker.start();
    app = Fastify();
    await app.register(dashboardPlugin, { errand });
    await app.register(metricsPlugin, { errand });
  });

  after(async () => {
    await app?.close();
    await worker?.stop();
    await errand?.close();
    await server?.stop();
  });

  const api = async <T>(path: string): Promise<T> => {
    const res = await app.inject({ method: 'GET', url: `/dashboard/api${path}` });
    assert.equal(res.statusCode, 200, `${path}: ${res.body}`);
    return res.json() as T;
  };
  type Run = {
    id: string;
    task: string;
    queue: string;
    state: string;
    attempts: number;
    input: unknown;
    result?: unknown;
    idempotencyKey?: string;
    runError?: { name: string; message: string; reason?: string };
  };
  /** The recorded run of a Celery task, found in the dashboard's run list by its idempotency key. */
  const runOf = async (celeryId: string): Promise<Run> => {
    let found: Run | undefined;
    await waitFor(
      async () => {
        const { runs } = await api<{ runs: { id: string }[] }>(`/runs?queue=${QUEUE}&limit=100`);
        for (const r of runs) {
          const detail = await api<Run>(`/runs/${encodeURIComponent(r.id)}`);
          if (detail.idempotencyKey === `celery:${celeryId}`) found = detail;
        }
        return found !== undefined;
      },
      { timeoutMs: 20_000, message: `the run of Celery task ${celeryId} in the dashboard` },
    );
    return found as Run;
  };

  test('a Celery queue shows as celery-<queue>', () => {
    assert.equal(recordQueueName('celery'), QUEUE);
    assert.equal(recordQueueName('emails.high'), 'celery-emails_high');
  });

  test('a task sent by Python with delay() shows as a succeeded run with its args and result', async () => {
    const r = await py(url, 'call', { task: 'ts.add', args: [2, 3] });
    assert.equal(r.ok, 5);
    const run = await runOf(r.id);
    assert.equal(run.task, 'ts.add');
    assert.equal(run.queue, QUEUE);
    assert.equal(run.state, 'succeeded');
    assert.equal(run.attempts, 1);
    assert.deepEqual(run.input, { args: [2, 3], kwargs: {}, id: r.id });
    assert.equal(run.result, 5);
  });

  test('a failure shows its exception type and message; args that fail validation say invalid_input', async () => {
    const f = await py(url, 'call', { task: 'ts.fail', args: ['bad input'] });
    assert.equal(f.exc_type, 'TypeError');
    const failed = await runOf(f.id);
    assert.equal(failed.state, 'failed');
    assert.equal(failed.runError?.name, 'TypeError');
    assert.equal(failed.runError?.message, 'bad input');
    const v = await py(url, 'call', { task: 'ts.add', args: ['two', 3] });
    const invalid = await runOf(v.id);
    assert.equal(invalid.state, 'failed');
    assert.equal(invalid.runError?.reason, 'invalid_input');
    assert.match(invalid.runError?.message ?? '', /args\[0\]/);
    // A record is retried where it ran: the dashboard refuses, saying so.
    const retry = await app.inject({
      method: 'POST',
      url: `/dashboard/api/runs/${encodeURIComponent(failed.id)}/retry`,
      payload: '{}',
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(retry.statusCode, 409, retry.body);
    assert.match(retry.body, /ran in celery/);
    assert.equal((await runOf(f.id)).state, 'failed', 'left as it was');
  });

  test('retries are one run, with the attempts made', async () => {
    const r = await py(url, 'call', { task: 'ts.flaky' });
    assert.equal(r.ok, 'done');
    const run = await runOf(r.id);
    assert.equal(run.state, 'succeeded');
    assert.equal(run.attempts, 3);
  });

  test('the worker is listed with its queue; the overview and /metrics count the recorded runs', async () => {
    const { workers } = await api<{ workers: { queues: string[]; concurrency: number }[] }>('/workers');
    assert.ok(
      workers.some((w) => w.queues.includes(QUEUE) && w.concurrency === 2),
      `the Celery worker among ${JSON.stringify(workers)}`,
    );
    const overview = await api<{ queues: { name: string; counts: Record<string, number> }[] }>('/overview');
    const q = overview.queues.find((x) => x.name === QUEUE);
    assert.ok(q, `queue ${QUEUE} in the overview`);
    assert.ok((q.counts.succeeded ?? 0) >= 2 && (q.counts.failed ?? 0) >= 2, JSON.stringify(q.counts));
    const metrics = await app.inject({ method: 'GET', url: '/metrics' });
    assert.match(metrics.body, new RegExp(`errand_queue_runs\\{queue="${QUEUE}",state="succeeded"\\} [1-9]`));
  });
});
