/**
 * What leases cost in Redis calls: two workers (two apps, as two processes would have) drain `runs`
 * runs whose handler takes `run-ms`, then stay idle for `idle-s` seconds; prints the Redis commands
 * counted by `INFO commandstats` on a redis-server of its own, per run while draining and per
 * worker-minute while idle, and the broker calls the workers made (reserve, settle, renew,
 * waitForWork), so that one lease setting can be compared with another (docs/reliability.md).
 *
 *   node bench/tools/lease-cost.ts [--runs 2000] [--run-ms 5] [--concurrency 10] [--idle-s 20]
 *                                  [--lease-ms 8000] [--renew-every 2000]
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { z } from 'zod';
import type { Broker } from '../../src/broker/types.ts';
import { createErrand, type Errand } from '../../src/index.ts';
import { startRedis } from '../lib/redis-server.ts';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '2000' },
    'run-ms': { type: 'string', default: '5' },
    concurrency: { type: 'string', default: '10' },
    'idle-s': { type: 'string', default: '20' },
    'lease-ms': { type: 'string' },
    'renew-every': { type: 'string' },
  },
});
const runs = Number(values.runs);
const runMs = Number(values['run-ms']);
const concurrency = Number(values.concurrency);
const idleS = Number(values['idle-s']);
const leaseMs = values['lease-ms'] ? Number(values['lease-ms']) : undefined;
const renewEvery = values['renew-every'] ? Number(values['renew-every']) : undefined;

const logger = pino({ level: 'silent' });
const redis = await startRedis();
const calls: Record<string, number> = {};
const counted = ['reserve', 'settle', 'renew', 'waitForWork', 'release', 'progress'] as const;

function app(): Errand {
  const a = createErrand({ broker: redis.url, prefix: 'lease-cost', logger });
  a.task('work', { input: z.object({ n: z.number() }), queue: 'cost' }, async () => {
    if (runMs > 0) await sleep(runMs);
    return null;
  });
  return a;
}

/** Counts the worker's calls of the broker's methods (the broker behind the app's guard). */
async function countCalls(a: Errand): Promise<void> {
  const broker = (await a.broker()) as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const m of counted) {
    const original = broker[m]!.bind(broker);
    broker[m] = (...args: unknown[]) => {
      calls[m] = (calls[m] ?? 0) + 1;
      return original(...args);
    };
  }
}

const sum = (stats: Record<string, { calls: number }>) => Object.values(stats).reduce((s, c) => s + c.calls, 0);
const show = (stats: Record<string, { calls: number }>, per: number) =>
  Object.entries(stats)
    .filter(([name]) => name !== 'info' && name !== 'config')
    .sort((a, b) => b[1].calls - a[1].calls)
    .map(([name, c]) => `${name} ${(c.calls / per).toFixed(3)}`)
    .join(', ');

const producer = app();
const workers = [app(), app()];
try {
  const work = producer.tasks.get('work')!;
  for (let i = 0; i < runs; i += 1000)
    await work.enqueueMany(Array.from({ length: Math.min(1000, runs - i) }, (_, j) => ({ input: { n: i + j } })) as never);
  const broker: Broker = await producer.broker();
  for (const w of workers) await countCalls(w);
  await redis.client.config('RESETSTAT');
  const started = Date.now();
  const ws = await Promise.all(
    workers.map((w) =>
      w.worker({ concurrency, ...(leaseMs ? { leaseMs } : {}), ...(renewEvery ? { renewEvery } : {}), pruneEvery: 3_600_000 }).start(),
    ),
  );
  // Finished runs are counted from the workers' events, not by asking Redis (that would be counted).
  let done = 0;
  for (const w of ws) w.on('run', (e: { type: string }) => void (e.type === 'success' && done++));
  while (done < runs) await sleep(20);
  const drainMs = Date.now() - started;
  // The last outcomes are stored on their own once the workers are idle: let them go out.
  await sleep(500);
  const busy = await redis.commandStats();
  const busyCalls = { ...calls };
  const c = (await broker.counts(['cost'])).cost!;
  if (c.succeeded !== runs) throw new Error(`${c.succeeded} of ${runs} runs stored as succeeded`);
  console.log(
    `lease ${ws[0]!.leaseMs} ms, renew every ${ws[0]!.renewEvery} ms; ${runs} runs of ${runMs} ms, 2 workers x ${concurrency}, drained in ${drainMs} ms`,
  );
  console.log(`  draining: ${(sum(busy) / runs).toFixed(3)} Redis commands per run (${show(busy, runs)})`);
  console.log(`  worker calls per run: ${counted.map((m) => `${m} ${((busyCalls[m] ?? 0) / runs).toFixed(3)}`).join(', ')}`);
  if (idleS > 0) {
    await redis.client.config('RESETSTAT');
    for (const m of counted) calls[m] = 0;
    await sleep(idleS * 1000);
    const idle = await redis.commandStats();
    const perWorkerMinute = (2 * idleS) / 60;
    console.log(
      `  idle ${idleS} s: ${(sum(idle) / perWorkerMinute).toFixed(1)} Redis commands per worker-minute (${show(idle, perWorkerMinute)})`,
    );
    console.log(
      `  worker calls per worker-minute: ${counted.map((m) => `${m} ${((calls[m] ?? 0) / perWorkerMinute).toFixed(1)}`).join(', ')}`,
    );
  }
  await Promise.all(ws.map((w) => w.stop({ graceMs: 0 })));
} finally {
  await Promise.all([producer, ...workers].map((a) => a.close()));
  await redis.stop();
}
