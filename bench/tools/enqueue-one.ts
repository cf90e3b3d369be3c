/**
 * One enqueue at a time, awaited, against a redis-server of its own, through the benchmark's peers
 * (Errand on Redis, or BullMQ): prints runs/s and the process's CPU time per call. For profiling
 * the client side of a single enqueue:
 *
 *   node --cpu-prof --cpu-prof-dir=/tmp/prof bench/tools/enqueue-one.ts [--runs 20000] [--peer bullmq]
 */
import { parseArgs } from 'node:util';
import { bullmqPeer } from '../peers/bullmq.ts';
import { errandPeer } from '../peers/errand.ts';
import { startRedis } from '../lib/redis-server.ts';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '20000' }, peer: { type: 'string', default: 'errand' } } });
const runs = Number(values.runs);
const redis = await startRedis();
const peer = values.peer === 'bullmq' ? bullmqPeer : errandPeer;
const session = await peer.open({ url: redis.url, keep: true });
try {
  for (let i = 0; i < 2000; i++) await session.enqueueOne({ username: `u${i}`, email: `u${i}@example.com` });
  await redis.client.config('RESETSTAT');
  const redisCpu0 = await redis.cpuUs();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < runs; i++) await session.enqueueOne({ username: `u${i}`, email: `u${i}@example.com` });
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const redisCpu = (await redis.cpuUs()) - redisCpu0;
  const stats = Object.entries(await redis.commandStats())
    .filter(([name]) => name !== 'config' && name !== 'info')
    .map(([name, s]) => `${name} ${s.calls} calls, ${(s.usec / s.calls).toFixed(1)} us/call`);
  console.log(`Redis CPU ${(redisCpu / runs).toFixed(1)} us/call; ${stats.join('; ')}`);
  console.log(
    `${Math.round((runs / ms) * 1000)} runs/s, client CPU ${((cpu.user + cpu.system) / runs).toFixed(1)} us/call (user ${(cpu.user / runs).toFixed(1)}, system ${(cpu.system / runs).toFixed(1)})`,
  );
} finally {
  await session.close();
  await redis.stop();
}
