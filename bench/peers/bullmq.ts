/**
 * BullMQ as a benchmark peer, configured the way its documentation recommends
 * (https://docs.bullmq.io/guide/going-to-production, .../guide/retrying-failing-jobs):
 * - Worker connections with `maxRetriesPerRequest: null`; the Queue fails fast (`enableOfflineQueue: false`);
 * - retries as jobs options: 3 attempts, exponential backoff from 1 s (Errand's default policy);
 * - finished jobs removed by age: completed kept 1 day when results are kept (Errand's default retention),
 *   removed at once (`removeOnComplete: true`) otherwise; failed kept 7 days;
 * - `queue.addBulk` as the batch API; `worker.concurrency` for concurrency.
 * `bullmqAutopipePeer` is the same with ioredis `enableAutoPipelining` on the Queue's connection:
 * concurrent `queue.add` calls then share round trips, as Errand's merged enqueues do.
 */
import { readFileSync } from 'node:fs';
import { FlowProducer, type JobsOptions, Queue, Worker } from 'bullmq';
import type { Payload, Peer, Session, SessionOptions } from './types.ts';

const QUEUE = 'bench';

function version(): string {
  try {
    const url = new URL('../../node_modules/bullmq/package.json', import.meta.url);
    return (JSON.parse(readFileSync(url, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

function connection(url: string, forWorker: boolean, autopipe = false) {
  const u = new URL(url);
  const base = { host: u.hostname, port: Number(u.port) || 6379, db: Number(u.pathname.slice(1) || 0) };
  return forWorker ? { ...base, maxRetriesPerRequest: null } : { ...base, enableOfflineQueue: false, enableAutoPipelining: autopipe };
}

export const bullmqPeer: Peer = makePeer(false);
export const bullmqAutopipePeer: Peer = makePeer(true);

function makePeer(autopipe: boolean): Peer {
  return {
    name: autopipe ? 'bullmq-autopipe' : 'bullmq',
    version: version(),
    async open({ url, keep, limits }: SessionOptions): Promise<Session> {
      if (limits?.kind === 'keys') throw new Error("BullMQ's open-source edition has no per-key limits (groups are BullMQ Pro)");
      // BullMQ's rate limiter: at most `max` jobs per `duration` ms for the queue, across workers.
      const limiter = limits?.kind === 'globalRate' ? { max: limits.perSecond, duration: 1000 } : undefined;
      const jobOpts: JobsOptions = {
        attempts: 3,
        backoff: { type: 'exponential', delay: 1000 },
        removeOnComplete: keep ? { age: 86_400 } : true,
        removeOnFail: { age: 7 * 86_400 },
      };
      const queue = new Queue<Payload>(QUEUE, { connection: connection(url, false, autopipe), defaultJobOptions: jobOpts });
      await queue.waitUntilReady();
      let worker: Worker<Payload> | undefined;
      let running: Promise<void> | undefined;
      let flowProducer: FlowProducer | undefined;
      return {
        enqueueOne: (data) => queue.add('bench_noop', data),
        enqueueMany: (data) => queue.addBulk(data.map((d) => ({ name: 'bench_noop', data: d }))),
        async enqueueFlows(flows, children) {
          flowProducer ??= new FlowProducer({ connection: connection(url, false, autopipe) });
          for (let f = 0; f < flows; f++) {
            await flowProducer.add({
              name: 'bench_collect',
              queueName: QUEUE,
              data: { username: 'flow', email: '' },
              opts: jobOpts,
              children: Array.from({ length: children }, (_, i) => ({
                name: 'bench_noop',
                queueName: QUEUE,
                data: { username: `user${i}`, email: `user${i}@example.com` },
                opts: jobOpts,
              })),
            });
          }
        },
        async startWorker(concurrency, onRun) {
          worker = new Worker<Payload>(
            QUEUE,
            async (job) => {
              onRun(job.data);
              // A flow's parent reads its children's results, as a chord's callback gets them.
              if (job.name === 'bench_collect') return Object.keys(await job.getChildrenValues()).length;
              return true;
            },
            { connection: connection(url, true), concurrency, autorun: false, limiter },
          );
          worker.on('error', (err) => process.stderr.write(`bullmq worker error: ${err.message}\n`));
          await worker.waitUntilReady();
          running = worker.run();
        },
        async stopWorker() {
          await worker?.close();
          await running;
          worker = undefined;
        },
        async pending() {
          const c = await queue.getJobCounts('wait', 'active', 'delayed', 'prioritized', 'waiting-children');
          return Object.values(c).reduce((a, b) => a + b, 0);
        },
        async close() {
          await worker?.close(true);
          await flowProducer?.close();
          await queue.close();
        },
      };
    },
  };
}
