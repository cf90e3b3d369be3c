/**
 * Scenario: isolated handlers. Two questions, on the benchmark's Redis:
 *
 * 1. What isolation costs per run: trivial runs at concurrency 1, handler in the worker's thread
 *    (`none`), in a worker thread (`thread`) or a child process (`process`), against BullMQ's inline
 *    processor and its sandboxed processors (`useWorkerThreads` true and false). Milliseconds per run.
 * 2. CPU-bound throughput as concurrency grows: each run is PBKDF2-SHA256 (ITERATIONS rounds, about
 *    10 ms of one core in Node); runs per second at concurrency 1, 2 and 4, for Errand's isolates,
 *    BullMQ's sandboxes and Python Celery's prefork pool (`-c` the same concurrency; its hashlib does
 *    the same PBKDF2, through OpenSSL, at its own speed: see the bare figures in the notes).
 *
 * Each measurement is a fresh process (bench/peers/isolation.ts) that warms up (the isolates start),
 * then enqueues the runs and times them to the last completion.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { buildMessage } from '../../src/celery/protocol.ts';
import { Collector, type Ctx, errMessage, type ScenarioResult } from '../lib/context.ts';
import { type Child, FatalError, spawnCmd, waitUntil } from '../lib/proc.ts';

const PYTHON = '/usr/bin/python3';
const ITERATIONS = 50_000;

interface Measure {
  peer: 'errand' | 'bullmq';
  mode: 'none' | 'thread' | 'process';
}

const NODE_PEERS: Record<string, Measure> = {
  'errand-none': { peer: 'errand', mode: 'none' },
  'errand-thread': { peer: 'errand', mode: 'thread' },
  'errand-process': { peer: 'errand', mode: 'process' },
  'bullmq-inline': { peer: 'bullmq', mode: 'none' },
  'bullmq-thread': { peer: 'bullmq', mode: 'thread' },
  'bullmq-process': { peer: 'bullmq', mode: 'process' },
};

/** Runs one measurement in its own process; its result line. */
async function measure(ctx: Ctx, id: string, m: Measure, n: number, concurrency: number, iterations: number) {
  await ctx.redis.flush();
  const child = spawnCmd(`iso-${id}-c${concurrency}`, process.execPath, [join(ctx.root, 'bench/peers/isolation.ts')], {
    env: {
      PEER: m.peer,
      MODE: m.mode,
      N: String(n),
      CONCURRENCY: String(concurrency),
      ITERATIONS: String(iterations),
      REDIS_URL: ctx.redis.url,
    },
    cwd: ctx.root,
  });
  try {
    await child.waitExit(Math.max(120_000, n * 100));
    const line = child.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    if (!line) throw new Error(`${child.name} printed no result (${child.exitInfo()}): ${child.tail()}`);
    return JSON.parse(line.slice('RESULT '.length)) as { seconds: number; n: number; bareMs: number };
  } finally {
    await child.close();
  }
}

function celeryAvailable(): boolean {
  try {
    execFileSync(PYTHON, ['-c', 'import celery'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Python's bare PBKDF2 time per run, in ms (for scale). */
function pythonBareMs(iterations: number): number {
  const out = execFileSync(
    PYTHON,
    [
      '-c',
      `import hashlib,time\nt=time.perf_counter()\nfor i in range(5): hashlib.pbkdf2_hmac('sha256',b'password',b'salt%d'%i,${iterations},32)\nprint((time.perf_counter()-t)/5*1000)`,
    ],
    { encoding: 'utf8' },
  );
  return Number(out.trim());
}

async function celeryRound(ctx: Ctx, n: number, concurrency: number): Promise<number> {
  await ctx.redis.flush();
  const worker: Child = spawnCmd(
    `iso-celery-c${concurrency}`,
    PYTHON,
    ['-m', 'celery', '-A', 'celery_cpu', 'worker', '-c', String(concurrency), '--loglevel=warning', '--without-gossip', '--without-mingle'],
    { env: { REDIS_URL: ctx.redis.url, PYTHONDONTWRITEBYTECODE: '1' }, cwd: join(ctx.root, 'bench/peers') },
  );
  const r = ctx.redis.client;
  const push = async (from: number, count: number) => {
    const pipe = r.pipeline();
    for (let i = from; i < from + count; i++)
      pipe.lpush('celery', JSON.stringify(buildMessage('bench.pbkdf2', { args: [i, ITERATIONS], queue: 'celery' })));
    await pipe.exec();
  };
  const results = async (want: number, timeoutMs: number) =>
    waitUntil(
      async () => {
        if (worker.exited) throw new FatalError(`${worker.name} exited (${worker.exitInfo()}): ${worker.tail()}`);
        return (await r.keys('celery-task-meta-*')).length >= want;
      },
      timeoutMs,
      'the Celery results',
      5,
    );
  try {
    await push(1e9, concurrency);
    await results(concurrency, 120_000);
    const t0 = performance.now();
    await push(0, n);
    await results(concurrency + n, Math.max(120_000, n * 200));
    return (performance.now() - t0) / 1000;
  } finally {
    await worker.close();
  }
}

export async function isolationScenario(ctx: Ctx): Promise<ScenarioResult> {
  const rounds = ctx.quick ? 1 : ctx.sizes.rounds;
  const trivialRuns = ctx.quick ? 300 : 3000;
  const cpuRuns = ctx.quick ? 40 : 400;
  const concurrencies = ctx.quick ? [1, 2] : [1, 2, 4];
  const col = new Collector();
  const notes: string[] = [];
  let nodeBare = 0;

  const overhead = `ms per trivial run at concurrency 1 (${trivialRuns.toLocaleString('en-US')} runs)`;
  for (const [id, m] of Object.entries(NODE_PEERS)) {
    for (let round = 0; round < rounds; round++) {
      try {
        const r = await measure(ctx, id, m, trivialRuns, 1, 0);
        col.add(overhead, id, (r.seconds * 1000) / r.n, 'ms');
      } catch (err) {
        col.fail(overhead, id, errMessage(err), 'ms');
        ctx.log(`  isolation ${id}: ${errMessage(err)}`);
      }
    }
    ctx.log(`  isolation: overhead of ${id} measured`);
  }

  const celery = celeryAvailable();
  if (!celery) notes.push(`Python Celery not measured: ${PYTHON} cannot import celery (apt-get install -y python3-celery python3-redis).`);
  for (const c of concurrencies) {
    const metric = `PBKDF2 runs/s at concurrency ${c} (${cpuRuns} runs)`;
    for (const [id, m] of Object.entries(NODE_PEERS)) {
      for (let round = 0; round < rounds; round++) {
        try {
          const r = await measure(ctx, id, m, cpuRuns, c, ITERATIONS);
          nodeBare = r.bareMs;
          col.add(metric, id, r.n / r.seconds, 'runs/s');
        } catch (err) {
          col.fail(metric, id, errMessage(err), 'runs/s');
          ctx.log(`  isolation ${id}: ${errMessage(err)}`);
        }
      }
    }
    if (celery) {
      for (let round = 0; round < rounds; round++) {
        try {
          col.add(metric, 'celery-prefork', cpuRuns / (await celeryRound(ctx, cpuRuns, c)), 'runs/s');
        } catch (err) {
          col.fail(metric, 'celery-prefork', errMessage(err), 'runs/s');
          ctx.log(`  isolation celery: ${errMessage(err)}`);
        }
      }
    }
    ctx.log(`  isolation: concurrency ${c} measured`);
  }
  const pyBare = celery ? pythonBareMs(ITERATIONS) : undefined;
  notes.push(
    `Overhead: the same trivial handler in the worker's thread (errand-none, bullmq-inline), in an isolate (errand-thread, errand-process: a pool of worker threads or child processes, reused) and in BullMQ's sandboxed processors (useWorkerThreads true or false); each after a warm-up that starts the isolates. ` +
      `CPU-bound: each run is PBKDF2-SHA256 with ${ITERATIONS.toLocaleString('en-US')} iterations; bare, one run takes ${nodeBare.toFixed(1)} ms in Node` +
      (pyBare !== undefined ? ` and ${pyBare.toFixed(1)} ms in Python (Celery's prefork -c N, prefetch 4, early ack: its defaults)` : '') +
      `. Inline (errand-none, bullmq-inline) cannot use a second core: it is the line isolation must beat. ${ctx.quick ? 'Quick mode: one round each.' : ''}`,
  );
  return {
    title: 'Isolated handlers: overhead per run, and CPU-bound throughput against BullMQ sandboxes and Celery prefork',
    metrics: col.figures(),
    notes,
  };
}
