/**
 * Errand as a benchmark peer: one app per session (a Redis URL or a SQLite file), one no-op task with
 * the seed's input schema, default retries (3 attempts, exponential backoff), default worker options
 * apart from concurrency. Logging: the app's default logger at `LOG_LEVEL` (the harness sets `warn`,
 * like the anchors: Celery runs at `--loglevel=warning`, BullMQ logs nothing).
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { chord, createErrand, type Errand, group, type Worker } from '../../src/index.ts';
import { type BenchLimits, benchKey, type Payload, type Peer, type Session, type SessionOptions } from './types.ts';

const QUEUE = 'bench';

const input = z.object({
  username: z.string(),
  email: z.string(),
  t: z.number().optional(),
  m: z.number().optional(),
});

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    return pkg.version;
  } catch {
    return 'unknown';
  }
}

/** The task's `limits` for the limits scenario (see `BenchLimits`). */
function taskLimits(limits: BenchLimits | undefined) {
  if (!limits) return undefined;
  if (limits.kind === 'keys') {
    const keys = limits.keys;
    // Never binding: a key's concurrency above the worker's, a rate no drain reaches.
    return {
      key: (d: z.output<typeof input>) => benchKey(d.username, keys),
      concurrency: 1_000,
      rate: { limit: 1_000_000, period: 1_000 },
    };
  }
  return { globalRate: { limit: limits.perSecond, period: 1_000, burst: limits.burst } };
}

export const errandPeer: Peer = {
  name: 'errand',
  version: version(),
  async open({ url, keep, limits }: SessionOptions): Promise<Session> {
    const app: Errand = createErrand({ broker: url });
    let onRun: (data: Payload) => void = () => {};
    const retention = keep ? undefined : { succeeded: 0 };
    const task = app.task('bench_noop', { input, queue: QUEUE, retention, limits: taskLimits(limits) }, (data) => {
      onRun(data as Payload);
      return true;
    });
    // The parent of a flow: gets the list of its children's results (a chord's callback).
    const collect = app.task(
      'bench_collect',
      { input: z.array(z.unknown()), queue: QUEUE, retention: keep ? undefined : { succeeded: 0 } },
      (values) => {
        onRun({ username: 'flow', email: '' });
        return values.length;
      },
    );
    const broker = await app.broker();
    let worker: Worker | undefined;
    return {
      enqueueOne: (data) => task.enqueue(data),
      enqueueMany: (data) => task.enqueueMany(data.map((d) => ({ input: d }))),
      async enqueueFlows(flows, children) {
        for (let f = 0; f < flows; f++) {
          const steps = Array.from({ length: children }, (_, i) => task.step({ username: `user${i}`, email: `user${i}@example.com` }));
          await app.workflow(chord(group(...steps), collect.next()));
        }
      },
      async startWorker(concurrency, cb) {
        onRun = cb;
        worker = app.worker({ concurrency, queues: [QUEUE] });
        await worker.start();
      },
      async stopWorker() {
        await worker?.stop({ graceMs: 5000 });
        worker = undefined;
      },
      async pending() {
        const c = (await broker.counts([QUEUE]))[QUEUE];
        return c ? c.waiting + c.queued + c.scheduled + c.active : 0;
      },
      async close() {
        await worker?.stop({ graceMs: 0 });
        await app.close();
      },
    };
  },
};
