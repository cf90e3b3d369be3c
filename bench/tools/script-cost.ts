/**
 * Redis time per run of the worker's hot path alone, without a worker: runs are enqueued, then
 * leased `batch` at a time by `reserve` calls that carry the outcomes of an earlier batch (as the
 * worker sends them), with `depth` batches leased at a time (a worker at concurrency 50 keeps two
 * reservations of 25 in flight). Prints the median over rounds of Redis CPU time (INFO cpu) and EVALSHA time
 * (INFO commandstats) per run, on a redis-server of its own.
 *
 *   node bench/tools/script-cost.ts [--runs 50000] [--batch 25] [--depth 2] [--rounds 5] [--keep 1] [--result true]
 */
import { parseArgs } from 'node:util';
import { connectBroker } from '../../src/broker/connect.ts';
import { enqueueRuns, leaseAll } from '../lib/hot-path.ts';
import { startRedis } from '../lib/redis-server.ts';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '50000' },
    batch: { type: 'string', default: '25' },
    depth: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '5' },
    keep: { type: 'string', default: '1' },
    result: { type: 'string', default: 'true' },
  },
});
const runs = Number(values.runs);
const batch = Number(values.batch);
const depth = Number(values.depth);
const rounds = Number(values.rounds);
const retentionMs = values.keep === '1' ? 86_400_000 : 0;
const result = values.result === 'null' ? null : values.result!;

const redis = await startRedis();
const broker = await connectBroker(redis.url);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const cpu: number[] = [];
const script: number[] = [];
try {
  for (let r = 0; r < rounds; r++) {
    await redis.flush();
    await enqueueRuns(broker, runs);
    await redis.client.config('RESETSTAT');
    const cpu0 = await redis.cpuUs();
    const done = await leaseAll(broker, { batch, depth, result, retentionMs });
    const cpuUs = (await redis.cpuUs()) - cpu0;
    const stats = await redis.commandStats();
    const evalsha = stats.evalsha?.usec ?? 0;
    cpu.push(cpuUs / done);
    script.push(evalsha / done);
    console.log(
      `round ${r + 1}: ${done} runs, Redis CPU ${(cpuUs / done).toFixed(2)} us/run, EVALSHA ${(evalsha / done).toFixed(2)} us/run`,
    );
  }
  console.log(
    `median: Redis CPU ${median(cpu).toFixed(2)} us/run, EVALSHA ${median(script).toFixed(2)} us/run (batch ${batch}, depth ${depth}, keep ${retentionMs > 0})`,
  );
} finally {
  await broker.close();
  await redis.stop();
}
