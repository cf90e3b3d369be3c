/**
 * Soak: a million runs through four `errand worker` processes on a Redis of the soak's own; the
 * counts must reconcile exactly and the workers' memory must stay flat.
 *
 *   npm run soak                                   1,000,000 runs, 4 workers
 *   node bench/soak.ts --runs 200000 --workers 2   smaller
 *
 * The producer enqueues in batches of 1000 while the workers drain (the backlog is kept under
 * `maxBacklog`, as a real producer would be throttled). In every thousand runs, one fails for good
 * (the handler throws, no retries) and one is enqueued an hour ahead and cancelled, so that the
 * three finished states all occur. At the end:
 *
 *   enqueued = succeeded + failed + cancelled, nothing queued, scheduled or active,
 *   failed = the planned failures, cancelled = the planned cancels,
 *
 * and every run but the cancelled ones executed exactly once: the handler records each execution
 * (the run's number, in the worker process; written to a file when the worker exits), so a run
 * executed twice is seen even though the broker's counters count it once. Each worker's resident memory (VmRSS, sampled every second from /proc) over the last 40% of
 * the runs is compared with the middle (20% to 60%; the first 20% are warm-up). The process exits 1 if
 * the counts do not reconcile (executions included) or a worker's memory grew by more than
 * `--rss-growth-mb` (default 64). The soak gives up when no run finished for `stallMs` (default 60 s),
 * however long it takes while runs go on finishing.
 *
 * This file is also the workers' task module: `errand worker bench/soak.ts` imports it and finds
 * the `errand` export; the soak itself only runs when the file is the entry point. The scaled-down
 * version runs in the test suite (`test/faults/soak.test.ts`, 20,000 runs).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import pino from 'pino';
import { z } from 'zod';
import { createErrand } from '../src/index.ts';

// ---- the workers' side ---------------------------------------------------------------------------

export const errand = createErrand();

const SoakInput = z.object({ n: z.number().int() });
const FAIL_EVERY = 1000;
const isPlannedFailure = (n: number) => n % FAIL_EVERY === FAIL_EVERY - 1;
const isPlannedCancel = (n: number) => n % FAIL_EVERY === FAIL_EVERY / 2;

/** Set by the soak for its workers: where each worker writes the runs it executed, when it exits. */
const EXECUTIONS_DIR = process.env.ERRAND_SOAK_EXECUTIONS_DIR;
const executed: number[] = [];
if (EXECUTIONS_DIR) {
  process.once('exit', () => {
    writeFileSync(join(EXECUTIONS_DIR, `${process.pid}.u32`), new Uint32Array(executed));
  });
}

errand.task('soak', { input: SoakInput, queue: 'soak', retries: { maxAttempts: 1 } }, async ({ n }) => {
  if (EXECUTIONS_DIR) executed.push(n);
  if (isPlannedFailure(n)) throw new Error(`planned failure of run ${n}`);
  return null;
});

// ---- the soak ------------------------------------------------------------------------------------

const ROOT = new URL('../', import.meta.url).pathname;
const SELF = new URL(import.meta.url).pathname;

export interface SoakOptions {
  runs: number;
  workers: number;
  /** Per worker. Default 50. */
  concurrency?: number;
  /** A Redis to use (the soak uses its own key prefix); default: start a redis-server of the soak's own. */
  redisUrl?: string;
  /** Most runs queued at once; the producer waits below it. Default 50000. */
  maxBacklog?: number;
  /** The soak gives up when no run finished (and none was enqueued) for this long, in ms. Default 60000. */
  stallMs?: number;
  /** How often each worker's RSS is sampled, in ms. Default 1000. */
  sampleEveryMs?: number;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

export interface RssSeries {
  pid: number;
  /** [ms since start, runs finished, RSS in bytes] */
  samples: [number, number, number][];
}

export interface SoakResult {
  runs: number;
  workers: number;
  concurrency: number;
  enqueued: number;
  succeeded: number;
  failed: number;
  cancelled: number;
  leftover: { queued: number; scheduled: number; active: number };
  plannedFailures: number;
  plannedCancels: number;
  /**
   * Executions counted in the handler (every worker's record, read after the workers exited):
   * `total` of them, `duplicates` (executions beyond the first of a run), `missing` (runs neither
   * cancelled nor executed), `workers` (how many workers left a record).
   */
  executions: { total: number; duplicates: number; missing: number; workers: number };
  reconciled: boolean;
  durationMs: number;
  runsPerSecond: number;
  rss: RssSeries[];
  /** Per worker: RSS (MB) at the end of warm-up (20% of runs finished), max over the middle (20-60%), max over the last 40%, growth. */
  memory: { pid: number; warmMb: number; middleMaxMb: number; lastMaxMb: number; growthMb: number; samples: number }[];
  redisUsedMemoryMb: number | null;
}

function rssOf(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function redisUsedMemory(url: string): Promise<number | null> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  client.on('error', () => {});
  try {
    await client.connect();
    const m = /used_memory:(\d+)/.exec(await client.info('memory'));
    return m ? Math.round(Number(m[1]) / 1048576) : null;
  } catch {
    return null;
  } finally {
    client.disconnect();
  }
}

/** Waits for `promise`, at most `ms`, leaving no timer behind. */
async function atMost(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise.catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

async function until<T>(check: () => T | Promise<T>, limitMs: number, what: string, everyMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + limitMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`soak: gave up after ${limitMs} ms waiting for ${what}${last ? ` (${String(last)})` : ''}`);
    await sleep(everyMs);
  }
}

interface Proc {
  child: ChildProcess;
  exited: Promise<unknown>;
  tail: () => string;
}

function start(cmd: string, args: string[], env: NodeJS.ProcessEnv): Proc {
  const child = spawn(cmd, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (c: Buffer) => {
    out = (out + c.toString()).slice(-4096);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  return { child, exited: once(child, 'exit'), tail: () => out };
}

async function stop(p: Proc, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill(signal);
  await atMost(p.exited, 10_000);
  if (p.child.exitCode === null && p.child.signalCode === null) {
    p.child.kill('SIGKILL');
    await atMost(p.exited, 5000);
  }
}

export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const { runs, workers: workerCount } = options;
  const concurrency = options.concurrency ?? 50;
  const maxBacklog = options.maxBacklog ?? 50_000;
  const stallMs = options.stallMs ?? 60_000;
  const log = options.log ?? (() => {});
  // Progress, not a deadline: the soak gives up only when nothing moved for stallMs.
  let progress = -1;
  let progressAt = Date.now();
  const checkProgress = (moved: number, what: string) => {
    if (moved !== progress) {
      progress = moved;
      progressAt = Date.now();
    } else if (Date.now() - progressAt > stallMs) {
      throw new Error(`soak: no progress for ${stallMs} ms ${what}`);
    }
  };

  const procs: Proc[] = [];
  let dir: string | undefined;
  let redisUrl = options.redisUrl;
  let redisProc: Proc | undefined;
  const prefix = `soak-${process.pid}-${Date.now().toString(36)}`;
  let producer: ReturnType<typeof createErrand> | undefined;
  const executionsDir = mkdtempSync(join(tmpdir(), 'errand-soak-executions-'));
  try {
    if (!redisUrl) {
      dir = mkdtempSync(join(tmpdir(), 'errand-soak-'));
      const port = await freePort();
      redisProc = start(
        'redis-server',
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--save',
          '',
          '--appendonly',
          'no',
          '--dir',
          dir,
          '--maxmemory-policy',
          'noeviction',
        ],
        process.env,
      );
      redisUrl = `redis://127.0.0.1:${port}`;
    }
    producer = createErrand({ broker: redisUrl, prefix, logger: pino({ level: 'silent' }) });
    const app = producer;
    const soak = app.task('soak', { input: SoakInput, queue: 'soak', retries: { maxAttempts: 1 } }, () => null);
    const broker = await until(
      async () => {
        const b = await app.broker();
        await b.ping();
        return b;
      },
      20_000,
      `Redis at ${redisUrl}`,
    );
    const counts = async () => (await broker.counts(['soak'])).soak!;

    const env: NodeJS.ProcessEnv = {
      ...process.env,
      ERRAND_BROKER_URL: redisUrl,
      ERRAND_PREFIX: prefix,
      LOG_LEVEL: 'warn',
      ERRAND_SOAK_EXECUTIONS_DIR: executionsDir,
    };
    delete env.REDIS_URL;
    for (let i = 0; i < workerCount; i++) {
      procs.push(
        start(
          process.execPath,
          [join(ROOT, 'src/cli/main.ts'), 'worker', SELF, '--concurrency', String(concurrency), '--queues', 'soak'],
          env,
        ),
      );
    }

    const started = Date.now();
    let finished = 0;
    const rss: RssSeries[] = procs.map((p) => ({ pid: p.child.pid ?? -1, samples: [] }));
    const sampler = setInterval(() => {
      const t = Date.now() - started;
      for (const s of rss) {
        const v = rssOf(s.pid);
        if (v !== null) s.samples.push([t, finished, v]);
      }
    }, options.sampleEveryMs ?? 1000);

    let enqueued = 0;
    let plannedFailures = 0;
    let plannedCancels = 0;
    let lastLog = 0;
    try {
      for (let n = 0; n < runs; ) {
        const size = Math.min(1000, runs - n);
        const items: { input: { n: number }; options?: { delay: number } }[] = [];
        const cancelAt: number[] = [];
        for (let i = 0; i < size; i++, n++) {
          if (isPlannedCancel(n)) {
            cancelAt.push(i);
            items.push({ input: { n }, options: { delay: 3_600_000 } });
          } else {
            if (isPlannedFailure(n)) plannedFailures++;
            items.push({ input: { n } });
          }
        }
        const handles = await soak.enqueueMany(items);
        enqueued += handles.filter((h) => h.created).length;
        for (const i of cancelAt) {
          const r = await broker.cancel(handles[i]!.id, Date.now());
          if (r.outcome !== 'cancelled') throw new Error(`soak: the planned cancel of ${handles[i]!.id} answered ${JSON.stringify(r)}`);
          plannedCancels++;
        }
        // Throttle: keep the backlog bounded, as a real producer would be.
        for (;;) {
          const c = await counts();
          finished = c.succeeded + c.failed + c.cancelled;
          if (Date.now() - lastLog > 5000) {
            lastLog = Date.now();
            log(
              `enqueued ${enqueued}, finished ${finished}, queued ${c.queued}, ${Math.round(finished / ((Date.now() - started) / 1000))}/s`,
            );
          }
          if (c.queued < maxBacklog) break;
          checkProgress(finished, `while the backlog drained (${finished} finished, ${c.queued} queued)`);
          for (const p of procs) if (p.child.exitCode !== null) throw new Error(`soak: a worker exited:\n${p.tail()}`);
          await sleep(50);
        }
      }
      for (;;) {
        for (const p of procs) if (p.child.exitCode !== null) throw new Error(`soak: a worker exited:\n${p.tail()}`);
        const c = await counts();
        finished = c.succeeded + c.failed + c.cancelled;
        if (Date.now() - lastLog > 5000) {
          lastLog = Date.now();
          log(`draining: finished ${finished} of ${enqueued}, queued ${c.queued}, active ${c.active}`);
        }
        if (finished >= enqueued && c.active === 0 && c.queued === 0) break;
        checkProgress(finished, `while waiting for all ${enqueued} runs to finish (${finished} finished)`);
        await sleep(100);
      }
    } finally {
      clearInterval(sampler);
    }
    const durationMs = Date.now() - started;
    const c = await counts();
    const redisUsedMemoryMb = await redisUsedMemory(redisUrl);
    // Phases by progress: warm-up (start-up, JIT, pools filling) until 20% of the runs finished,
    // then the middle (20% to 60%) against the last (60% on).
    const memory = rss.map((s) => {
      const mb = (b: number) => Math.round((b / 1048576) * 10) / 10;
      const phase = (from: number, to: number) =>
        s.samples.filter(([, done]) => done >= from * runs && done < to * runs).map(([, , bytes]) => bytes);
      const warm = phase(0, 0.2);
      const middle = phase(0.2, 0.6);
      const last = phase(0.6, 1.01);
      const middleMax = middle.length ? Math.max(...middle) : 0;
      const lastMax = last.length ? Math.max(...last) : 0;
      return {
        pid: s.pid,
        warmMb: mb(warm.at(-1) ?? 0),
        middleMaxMb: mb(middleMax),
        lastMaxMb: mb(lastMax),
        growthMb: mb(lastMax - middleMax),
        samples: s.samples.length,
      };
    });
    // The workers write their record of executions as they exit.
    await Promise.all(procs.map((p) => stop(p, 'SIGTERM')));
    const timesRun = new Uint8Array(runs);
    let total = 0;
    const records = readdirSync(executionsDir).filter((f) => f.endsWith('.u32'));
    for (const f of records) {
      const buf = readFileSync(join(executionsDir, f));
      for (const n of new Uint32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4)) {
        total++;
        if (n < runs && timesRun[n]! < 255) timesRun[n]!++;
      }
    }
    let duplicates = 0;
    let missing = 0;
    for (let n = 0; n < runs; n++) {
      if (timesRun[n]! > 1) duplicates += timesRun[n]! - 1;
      if (timesRun[n] === 0 && !isPlannedCancel(n)) missing++;
    }
    const executions = { total, duplicates, missing, workers: records.length };
    const reconciled =
      records.length === workerCount &&
      total === enqueued - plannedCancels &&
      duplicates === 0 &&
      missing === 0 &&
      c.succeeded + c.failed + c.cancelled === enqueued &&
      c.queued === 0 &&
      c.scheduled === 0 &&
      c.active === 0 &&
      c.failed === plannedFailures &&
      c.cancelled === plannedCancels &&
      enqueued === runs;
    return {
      runs,
      workers: workerCount,
      concurrency,
      enqueued,
      succeeded: c.succeeded,
      failed: c.failed,
      cancelled: c.cancelled,
      leftover: { queued: c.queued, scheduled: c.scheduled, active: c.active },
      plannedFailures,
      plannedCancels,
      executions,
      reconciled,
      durationMs,
      runsPerSecond: Math.round(runs / (durationMs / 1000)),
      rss,
      memory,
      redisUsedMemoryMb,
    };
  } finally {
    await Promise.all(procs.map((p) => stop(p, 'SIGTERM')));
    await producer?.close();
    if (redisProc) await stop(redisProc, 'SIGTERM');
    if (dir) rmSync(dir, { recursive: true, force: true });
    rmSync(executionsDir, { recursive: true, force: true });
  }
}

// ---- command line ----------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '1000000' },
      workers: { type: 'string', default: '4' },
      concurrency: { type: 'string', default: '50' },
      'rss-growth-mb': { type: 'string', default: '64' },
      redis: { type: 'string' },
    },
  });
  const int = (name: string, v: string) => {
    if (!/^\d+$/.test(v) || Number(v) < 1) {
      process.stderr.write(`soak: --${name} must be a positive integer, got ${JSON.stringify(v)}\n`);
      process.exit(2);
    }
    return Number(v);
  };
  const runs = int('runs', values.runs);
  const workers = int('workers', values.workers);
  const concurrency = int('concurrency', values.concurrency);
  const maxGrowth = int('rss-growth-mb', values['rss-growth-mb']);
  const log = (line: string) => process.stdout.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
  log(`${runs} runs, ${workers} workers x ${concurrency}`);
  const r = await runSoak({ runs, workers, concurrency, ...(values.redis ? { redisUrl: values.redis } : {}), log });
  const { rss: _rss, ...summary } = r;
  process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  const grew = r.memory.filter((m) => m.growthMb > maxGrowth);
  if (!r.reconciled) log('FAILED: the counts do not reconcile');
  if (grew.length) log(`FAILED: worker memory grew by more than ${maxGrowth} MB: ${JSON.stringify(grew)}`);
  if (r.reconciled && !grew.length)
    log(
      `OK: ${r.enqueued} = ${r.succeeded} succeeded + ${r.failed} failed + ${r.cancelled} cancelled; ${r.executions.total} executions, none twice; memory flat`,
    );
  process.exit(r.reconciled && !grew.length ? 0 : 1);
}

if (import.meta.main) {
  main().catch((err) => {
    process.stderr.write(`soak: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
