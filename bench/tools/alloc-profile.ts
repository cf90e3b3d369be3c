/**
 * Where a worker and a producer allocate, per run, at a steady low rate (the latency scenario's
 * setting), on a redis-server of its own: V8's sampling heap profiler with the objects that minor
 * and major GCs collected included (which `node --heap-prof` leaves out), summed by function.
 * Writes the profile (for Chrome DevTools) and prints the top allocators.
 *
 *   node bench/tools/alloc-profile.ts [--rate 1000] [--seconds 6] [--out /tmp/errand-alloc.heapprofile]
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { createErrand } from '../../src/index.ts';
import { startRedis } from '../lib/redis-server.ts';

const { values } = parseArgs({
  options: {
    rate: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '6' },
    out: { type: 'string', default: '/tmp/errand-alloc.heapprofile' },
  },
});
const rate = Number(values.rate);
const seconds = Number(values.seconds);

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
}

const redis = await startRedis();
process.env.LOG_LEVEL ??= 'warn'; // as in the benchmark: no line per run
const workerApp = createErrand({ broker: redis.url });
const producerApp = createErrand({ broker: redis.url });
const input = z.object({ username: z.string(), email: z.string() });
let handled = 0;
workerApp.task('noop', { input, queue: 'bench', retention: { succeeded: 0 } }, () => {
  handled++;
  return true;
});
const task = producerApp.task('noop', { input, queue: 'bench', retention: { succeeded: 0 } }, () => true);
const worker = workerApp.worker({ concurrency: 50, queues: ['bench'] });
await worker.start();

const session = new Session();
session.connect();
await session.post('HeapProfiler.enable');
await session.post('HeapProfiler.startSampling', {
  samplingInterval: 1024,
  includeObjectsCollectedByMajorGC: true,
  includeObjectsCollectedByMinorGC: true,
} as never);
let sent = 0;
const t0 = performance.now();
while (performance.now() - t0 < seconds * 1000) {
  const due = Math.floor(((performance.now() - t0) / 1000) * rate);
  for (; sent < due; sent++) void task.enqueue({ username: 'u', email: 'u@example.com' });
  await new Promise((r) => setTimeout(r, 1));
}
while (handled < sent) await new Promise((r) => setTimeout(r, 10));
const { profile } = (await session.post('HeapProfiler.stopSampling')) as { profile: { head: ProfileNode } };
session.disconnect();
writeFileSync(values.out!, JSON.stringify(profile));

const bySite = new Map<string, number>();
let total = 0;
const walk = (n: ProfileNode) => {
  const f = n.callFrame;
  const url = f.url.replace(/.*node_modules\//, 'npm:').replace(/^.*?\/(src|bench)\//, '$1/');
  const site = `${f.functionName || '(anonymous)'} ${url}:${f.lineNumber + 1}`;
  total += n.selfSize;
  bySite.set(site, (bySite.get(site) ?? 0) + n.selfSize);
  for (const c of n.children) walk(c);
};
walk(profile.head);
const commands = await redis.commandStats();
console.log(
  `${sent} runs at ${rate}/s: ${(total / sent / 1024).toFixed(1)} KB allocated per run (worker and producer); ` +
    `Redis calls per run: ${Object.entries(commands)
      .filter(([name]) => ['evalsha', 'blpop'].includes(name))
      .map(([name, s]) => `${name} ${(s.calls / sent).toFixed(2)}`)
      .join(', ')}; profile: ${values.out}`,
);
for (const [site, bytes] of [...bySite].sort((a, b) => b[1] - a[1]).slice(0, 25)) {
  console.log(`${(bytes / sent / 1024).toFixed(2).padStart(7)} KB/run  ${site}`);
}
await worker.stop();
await workerApp.close();
await producerApp.close();
await redis.stop();
