// One measurement of the isolation benchmark (bench/scenarios/isolation.ts), in a process of its
// own: PEER errand or bullmq, MODE none, thread or process, N runs of ITERATIONS of PBKDF2 (0: a
// trivial run) at CONCURRENCY, on REDIS_URL. A warm-up of CONCURRENCY runs first (the isolates or
// sandboxes start); then the N runs are enqueued and timed until the last one has completed.
// Prints `RESULT {"seconds":...,"n":...}` and exits.
import { pbkdf2Sync } from 'node:crypto';
import { Queue, Worker as BullWorker } from 'bullmq';
import pino from 'pino';
import { z } from 'zod';
import { createErrand, type Isolation } from '../../src/index.ts';
import { isoWork } from './iso-work.ts';

const env = (name: string) => {
  const v = process.env[name];
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const PEER = env('PEER');
const MODE = env('MODE') as Isolation;
const N = Number(env('N'));
const CONCURRENCY = Number(env('CONCURRENCY'));
const ITERATIONS = Number(env('ITERATIONS'));
const REDIS_URL = env('REDIS_URL');
const PREFIX = `iso${process.pid}`;

function fatal(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

/** Resolves once `count()` reaches `n`. */
function until(count: () => number, n: number): Promise<void> {
  return new Promise((resolve) => {
    const t = setInterval(() => {
      if (count() >= n) {
        clearInterval(t);
        resolve();
      }
    }, 2);
  });
}

async function errand(): Promise<number> {
  const app = createErrand({ broker: REDIS_URL, prefix: PREFIX, logger: pino({ level: 'warn' }) });
  const task = app.task(
    'iso_work',
    {
      input: z.object({ i: z.number(), iterations: z.number() }),
      ...(MODE === 'none' ? {} : { isolation: MODE, module: new URL('./iso-work.ts', import.meta.url) }),
      retention: 0,
    },
    isoWork,
  );
  const worker = app.worker({ concurrency: CONCURRENCY });
  let done = 0;
  worker.on('run', (e) => {
    if (e.type === 'success') done++;
    else if (e.type !== 'start') fatal(`run ${e.type}: ${String(e.error)}`);
  });
  await worker.start();
  await task.enqueueMany(Array.from({ length: CONCURRENCY }, (_, i) => ({ input: { i, iterations: ITERATIONS } })));
  await until(() => done, CONCURRENCY);
  const t0 = performance.now();
  for (let i = 0; i < N; i += 1000)
    await task.enqueueMany(Array.from({ length: Math.min(1000, N - i) }, (_, j) => ({ input: { i: i + j, iterations: ITERATIONS } })));
  await until(() => done, CONCURRENCY + N);
  const seconds = (performance.now() - t0) / 1000;
  await worker.stop();
  await app.close();
  return seconds;
}

async function bullmq(): Promise<number> {
  const url = new URL(REDIS_URL);
  const connection = { host: url.hostname, port: Number(url.port || 6379), maxRetriesPerRequest: null };
  const queue = new Queue('iso', { connection, prefix: PREFIX });
  const processor =
    MODE === 'none'
      ? async (job: { data: { i: number; iterations: number } }) => isoWork(job.data)
      : new URL('./iso-work-bullmq.mjs', import.meta.url).pathname;
  const worker = new BullWorker('iso', processor, {
    connection,
    prefix: PREFIX,
    concurrency: CONCURRENCY,
    useWorkerThreads: MODE === 'thread',
    removeOnComplete: { count: 0 },
  });
  let done = 0;
  worker.on('completed', () => done++);
  worker.on('failed', (_job, err) => fatal(`job failed: ${String(err)}`));
  await worker.waitUntilReady();
  const job = (i: number) => ({ name: 'w', data: { i, iterations: ITERATIONS }, opts: { removeOnComplete: true } });
  await queue.addBulk(Array.from({ length: CONCURRENCY }, (_, i) => job(i)));
  await until(() => done, CONCURRENCY);
  const t0 = performance.now();
  for (let i = 0; i < N; i += 1000) await queue.addBulk(Array.from({ length: Math.min(1000, N - i) }, (_, j) => job(i + j)));
  await until(() => done, CONCURRENCY + N);
  const seconds = (performance.now() - t0) / 1000;
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  return seconds;
}

// The bare work in this process, for scale: ms per run.
const b0 = performance.now();
for (let i = 0; i < 5; i++) if (ITERATIONS > 0) pbkdf2Sync('password', `salt${i}`, ITERATIONS, 32, 'sha256');
const bareMs = (performance.now() - b0) / 5;
const seconds = PEER === 'bullmq' ? await bullmq() : await errand();
process.stdout.write(`RESULT ${JSON.stringify({ seconds, n: N, bareMs })}\n`);
process.exit(0);
