/**
 * Flow control's fairness, measured (docs/flow-control.md): one key holds a backlog of `--backlog`
 * runs (default 100,000) of a task with per-key limits; while workers drain it, one run of a quiet
 * key is enqueued every `--every` ms; prints the time from each quiet run's enqueue to its start
 * (p50, p99, max). Also the backlog key's throughput. On a redis-server of its own, or on a SQLite
 * file (`--broker sqlite`).
 *
 *   node bench/tools/flow-fairness.ts [--broker redis|sqlite] [--backlog 100000] [--quiet 200] [--every 20]
 *     [--workers 2] [--concurrency 50] [--limit 100]
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { createErrand } from '../../src/index.ts';
import { startRedis } from '../lib/redis-server.ts';

const { values } = parseArgs({
  options: {
    broker: { type: 'string', default: 'redis' },
    backlog: { type: 'string', default: '100000' },
    quiet: { type: 'string', default: '200' },
    every: { type: 'string', default: '20' },
    workers: { type: 'string', default: '2' },
    concurrency: { type: 'string', default: '50' },
    limit: { type: 'string', default: '100' },
  },
});
const backlog = Number(values.backlog);
const quietRuns = Number(values.quiet);
const every = Number(values.every);
const limit = Number(values.limit);

process.env.LOG_LEVEL ??= 'warn';
const redis = values.broker === 'redis' ? await startRedis() : undefined;
const url = redis ? redis.url : `sqlite:${join(mkdtempSync(join(tmpdir(), 'errand-fairness-')), 'errand.db')}`;
const input = z.object({ key: z.string(), at: z.number() });
const limits = { key: (i: { key: string }) => i.key, concurrency: limit };
const startedAfter: number[] = [];
let bigDone = 0;
const apps = Array.from({ length: Number(values.workers) }, () => createErrand({ broker: url }));
for (const app of apps) {
  app.task('work', { input, queue: 'fair', limits, retention: { succeeded: 0 } }, ({ key, at }) => {
    if (key === 'quiet') startedAfter.push(Date.now() - at);
    else bigDone++;
    return true;
  });
}
const producer = createErrand({ broker: url });
const task = producer.task('work', { input, queue: 'fair', limits, retention: { succeeded: 0 } }, () => true);
for (let i = 0; i < backlog; i += 1000) {
  await task.enqueueMany(Array.from({ length: Math.min(1000, backlog - i) }, () => ({ input: { key: 'big', at: 0 } })));
}
const workers = apps.map((app) => app.worker({ concurrency: Number(values.concurrency), queues: ['fair'] }));
await Promise.all(workers.map((w) => w.start()));
const t0 = performance.now();
// Quiet runs only while the backlog lasts (each one measured behind it).
let sent = 0;
for (; sent < quietRuns && bigDone < backlog; sent++) {
  await task.enqueue({ key: 'quiet', at: Date.now() });
  await new Promise((r) => setTimeout(r, every));
}
const seconds = (performance.now() - t0) / 1000;
const deadline = performance.now() + 30_000;
while (startedAfter.length < sent && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
await Promise.all(workers.map((w) => w.stop()));
const sorted = [...startedAfter].sort((a, b) => a - b);
const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;
console.log(
  `${values.broker}: backlog ${backlog} runs of one key (limit ${limit}), ${values.workers} workers x ${values.concurrency}; ` +
    `${sorted.length} quiet runs, enqueue to start: p50 ${q(0.5)} ms, p99 ${q(0.99)} ms, max ${sorted.at(-1)} ms; ` +
    `backlog key: ${Math.round(bigDone / seconds)} runs/s while measured`,
);
await Promise.all([...apps, producer].map((a) => a.close()));
await redis?.stop();
process.exit(0);
