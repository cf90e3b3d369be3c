/**
 * What flow control costs the broker, without a worker: `runs` runs enqueued (batches of 1,000),
 * then leased `batch` at a time by `reserve` calls that carry the outcomes of an earlier batch (as
 * the worker sends them, `depth` batches in flight), with and without limits, alternated round by
 * round on the same broker kind. Limits: `keys` keys, each limited far above what binds (1,000
 * active, 1,000,000 starts/s), each of weight `--weight` (default 1: plain round robin; w: served up
 * to w runs in a row per turn); `--mode global` a global rate that never binds instead. `--layout`:
 * the keys' runs enqueued `interleaved` (run j of key j % keys, the default) or in `blocks` (each
 * key's runs one after the other): on SQLite, which runs share pages depends on it.
 * Redis: server CPU per run (INFO cpu), EVALSHA time per run, and the Redis commands the scripts
 * called per run (INFO commandstats), on a redis-server of its own. SQLite: this process's CPU per
 * run (in process, a file in /tmp). Medians over the rounds.
 *
 * `--before DIR`: a third column, limits on with the broker code of another checkout (e.g. a
 * `git archive` of an earlier commit with this checkout's node_modules linked in), alternated with
 * the others in the same rounds, so that before and after are measured under the same load.
 *
 *   node bench/tools/flow-cost.ts [--broker redis|sqlite] [--runs 20000] [--keys 1000] [--mode keys|global]
 *                                 [--batch 25] [--depth 2] [--rounds 5] [--commands true] [--before DIR]
 *                                 [--weight 1] [--layout interleaved|blocks]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { connectBroker } from '../../src/broker/connect.ts';
import type { Broker, FlowSpec } from '../../src/broker/types.ts';
import { enqueueRuns, leaseAll } from '../lib/hot-path.ts';
import { startRedis } from '../lib/redis-server.ts';

const { values } = parseArgs({
  options: {
    broker: { type: 'string', default: 'redis' },
    runs: { type: 'string', default: '20000' },
    keys: { type: 'string', default: '1000' },
    mode: { type: 'string', default: 'keys' },
    batch: { type: 'string', default: '25' },
    depth: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '5' },
    commands: { type: 'string', default: 'true' },
    before: { type: 'string' },
    weight: { type: 'string', default: '1' },
    layout: { type: 'string', default: 'interleaved' },
  },
});
const runs = Number(values.runs);
const keys = Number(values.keys);
const batch = Number(values.batch);
const depth = Number(values.depth);
const rounds = Number(values.rounds);
const weight = Number(values.weight);
if (!Number.isSafeInteger(weight) || weight < 1) throw new Error(`--weight must be a positive integer, got ${values.weight}`);
if (values.layout !== 'interleaved' && values.layout !== 'blocks')
  throw new Error(`--layout must be interleaved or blocks, got ${values.layout}`);
const keyOf = (j: number) => String(values.layout === 'blocks' ? Math.floor((j * keys) / runs) : j % keys);
const onRedis = values.broker === 'redis';
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const cpuNow = () => {
  const c = process.cpuUsage();
  return c.user + c.system;
};

function flowOf(j: number): FlowSpec {
  if (values.mode === 'global') return { group: 'bench_noop', key: '', groupRate: { interval: 0.001, burst: 1_000_000 } };
  const spec: FlowSpec = { group: 'bench_noop', key: keyOf(j), concurrency: 1_000, rate: { interval: 0.001, burst: 1_000_000 } };
  return weight > 1 ? { ...spec, weight } : spec;
}

const redis = onRedis ? await startRedis() : undefined;
const dir = mkdtempSync('/tmp/errand-flow-cost-');
let seq = 0;
type Mode = 'off' | 'on' | 'before';
const figures: Record<Mode, { cpu: number[]; script: number[]; commands: Record<string, number>[] }> = {
  off: { cpu: [], script: [], commands: [] },
  on: { cpu: [], script: [], commands: [] },
  before: { cpu: [], script: [], commands: [] },
};
const connectBefore = values.before
  ? ((await import(join(values.before, 'src/broker/connect.ts'))) as { connectBroker: typeof connectBroker }).connectBroker
  : undefined;
const modes: Mode[] = connectBefore ? ['off', 'before', 'on'] : ['off', 'on'];
try {
  for (let r = 0; r < rounds; r++) {
    for (const mode of r % 2 ? [...modes].reverse() : modes) {
      const connect = mode === 'before' ? connectBefore! : connectBroker;
      let broker: Broker;
      if (redis) {
        await redis.flush();
        broker = await connect(redis.url);
      } else broker = await connect(`sqlite:${join(dir, `f${++seq}.db`)}`);
      try {
        await enqueueRuns(broker, runs, mode !== 'off' ? (j) => ({ flow: flowOf(j) }) : undefined);
        if (redis) await redis.client.config('RESETSTAT');
        const cpu0 = redis ? await redis.cpuUs() : cpuNow();
        const done = await leaseAll(broker, { batch, depth, result: null, retentionMs: 0 });
        if (done !== runs) throw new Error(`${done} runs settled of ${runs}`);
        const cpuUs = (redis ? await redis.cpuUs() : cpuNow()) - cpu0;
        figures[mode]!.cpu.push(cpuUs / done);
        if (redis) {
          const stats = await redis.commandStats();
          figures[mode]!.script.push((stats.evalsha?.usec ?? 0) / done);
          const calls: Record<string, number> = {};
          for (const [c, v] of Object.entries(stats)) if (c !== 'evalsha' && c !== 'info' && c !== 'config') calls[c] = v.calls / done;
          figures[mode]!.commands.push(calls);
        }
        console.log(
          `round ${r + 1} ${mode}: ${redis ? 'Redis' : 'process'} CPU ${(cpuUs / done).toFixed(2)} us/run${redis ? `, EVALSHA ${figures[mode]!.script.at(-1)!.toFixed(2)} us/run` : ''}`,
        );
      } finally {
        await broker.close();
      }
    }
  }
  for (const mode of modes) {
    const f = figures[mode]!;
    const range = `${Math.min(...f.cpu).toFixed(1)} to ${Math.max(...f.cpu).toFixed(1)}`;
    console.log(
      `${mode !== 'off' ? `limits (${values.mode === 'global' ? 'global rate' : `${keys} keys${weight > 1 ? `, weight ${weight}` : ''}${values.layout === 'blocks' ? ', in blocks' : ''}`})${mode === 'before' ? ', before' : ''}` : 'no limits'}: ${redis ? 'Redis' : 'process'} CPU median ${median(f.cpu).toFixed(2)} us/run (${range})${redis ? `, EVALSHA ${median(f.script).toFixed(2)} us/run` : ''}`,
    );
    if (redis && values.commands === 'true') {
      const last = f.commands.at(-1) ?? {};
      console.log(
        `  commands per run: ${Object.entries(last)
          .filter(([, v]) => v >= 0.01)
          .sort((a, b) => b[1] - a[1])
          .map(([c, v]) => `${c} ${v.toFixed(2)}`)
          .join(', ')}`,
      );
    }
  }
} finally {
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
}
