// Flow control across processes (docs/flow-control.md): 4 `errand worker` processes of 50 slots
// each serve 8,000 runs over 1,000 keys (one key holds a quarter of them, 49 keys 60 each) with a limit of 2 active
// runs per key (5 for two chosen keys), and one worker is killed with SIGKILL half way and
// replaced. Every execution logs its start and end on the machine's monotonic clock; replaying
// the logs, the number of runs of a key active at once never exceeds its limit, every run
// succeeds, and only runs the killed process held run twice. The runs of the killed process that
// never ended count as active until the test saw it exit (later than its death: the replay can
// only overcount). On both brokers: the shared Redis (its own prefix) and a SQLite file
// (FLOW_ONLY=redis or sqlite runs one). Leases are 4 s: long enough that a worker slowed by a busy
// machine renews in time (a lease that expires under a live worker is a redelivery by design, and
// would be counted here as a second execution), short enough that the killed worker's runs are
// recovered soon.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { createErrand } from '../../src/index.ts';
import { dropRedisPrefix, quietLogger, REDIS_URL } from '../fixtures/brokers.ts';
import { tempDir, uniquePrefix, waitFor } from '../helpers.ts';
import { ensureDir, figure, type Proc, Procs, ROOT } from './harness.ts';

const RUNS = 8000;
const KEYS = 1000;
const HOT = 2000; // runs of key k0
const MEDIUM = 49; // keys k1..k49: 60 runs each; k50..k999: about 3 each
/** Key k0 holds a quarter of the runs; 49 keys many each (their limits bind once the small keys are done); the rest a few. */
function keyOf(n: number): string {
  if (n < HOT) return 'k0';
  if (n < HOT + MEDIUM * 60) return `k${1 + ((n - HOT) % MEDIUM)}`;
  return `k${1 + MEDIUM + ((n - HOT - MEDIUM * 60) % (KEYS - 1 - MEDIUM))}`;
}
const WORKERS = 4;
const CONCURRENCY = 50;
const LIMIT = 2;
const BIG_KEYS = ['k0', 'k1'];
const BIG_LIMIT = 5;
const MODULE = join(ROOT, 'test/fixtures/limited-tasks.ts');

interface Exec {
  key: string;
  id: string;
  attempt: number;
  pid: number;
  start: bigint;
  end?: bigint;
}

function readLogs(dir: string): Exec[] {
  const byRun = new Map<string, Exec>();
  for (const f of readdirSync(dir)) {
    for (const line of readFileSync(join(dir, f), 'utf8').split('\n')) {
      if (!line) continue;
      const [kind, key, id, attempt, pid, ns] = line.split(' ');
      const tag = `${id} ${attempt} ${pid}`;
      if (kind === 's') {
        byRun.set(tag, { key: key!, id: id!, attempt: Number(attempt), pid: Number(pid), start: BigInt(ns!) });
      } else {
        const e = byRun.get(tag);
        assert.ok(e, `an end without a start: ${line}`);
        e.end = BigInt(ns!);
      }
    }
  }
  return [...byRun.values()];
}

/** The most runs of each key active at once (a start and an end at the same instant: the start first). */
function peaks(execs: readonly Exec[]): Map<string, number> {
  const events: { key: string; t: bigint; d: number }[] = [];
  for (const e of execs) {
    events.push({ key: e.key, t: e.start, d: 1 });
    events.push({ key: e.key, t: e.end as bigint, d: -1 });
  }
  events.sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : b.d - a.d));
  const now = new Map<string, number>();
  const peak = new Map<string, number>();
  for (const ev of events) {
    const n = (now.get(ev.key) ?? 0) + ev.d;
    now.set(ev.key, n);
    if (n > (peak.get(ev.key) ?? 0)) peak.set(ev.key, n);
  }
  return peak;
}

for (const kind of (process.env.FLOW_ONLY ? [process.env.FLOW_ONLY] : ['redis', 'sqlite']) as ('redis' | 'sqlite')[]) {
  describe(`flow control with ${WORKERS} worker processes on ${kind}`, () => {
    it(`never more active runs of a key than its limit, through a SIGKILL (${RUNS} runs, ${KEYS} keys)`, { timeout: 300_000 }, async () => {
      const dir = tempDir('errand-flow-procs');
      const logDir = ensureDir(join(dir, 'log'));
      const prefix = uniquePrefix('errand-flow-procs');
      const url = kind === 'redis' ? REDIS_URL : `sqlite:${join(dir, 'errand.db')}`;
      const env = {
        ERRAND_BROKER_URL: url,
        ERRAND_PREFIX: prefix,
        FLOW_LOG_DIR: logDir,
        FLOW_KEY_LIMIT: String(LIMIT),
        FLOW_BIG_KEYS: BIG_KEYS.join(','),
        FLOW_BIG_LIMIT: String(BIG_LIMIT),
        FLOW_HOT_SLOW_FROM: String(HOT - 200),
      };
      const flags = ['--concurrency', String(CONCURRENCY), '--lease-ms', '4000', '--queues', 'flow'];
      const app = createErrand({ broker: url, prefix, logger: quietLogger });
      const limited = app.task(
        'limited',
        {
          input: z.object({ key: z.string(), n: z.number().int() }),
          queue: 'flow',
          limits: { key: (i) => i.key, concurrency: LIMIT, overrides: Object.fromEntries(BIG_KEYS.map((k) => [k, BIG_LIMIT])) },
        },
        () => 0,
      );
      const procs = new Procs();
      try {
        // The backlog first: every worker starts against it at once.
        const items = Array.from({ length: RUNS }, (_, n) => ({ input: { key: keyOf(n), n } }));
        for (let i = 0; i < items.length; i += 1000) await limited.enqueueMany(items.slice(i, i + 1000));
        const broker = await app.broker();
        const counts = async () => (await broker.counts(['flow'])).flow!;
        const workers: Proc[] = [];
        for (let i = 0; i < WORKERS; i++) workers.push(procs.worker(`worker-${i}`, env, flags, MODULE));

        await waitFor(async () => (await counts()).succeeded >= RUNS / 4, { timeoutMs: 120_000, message: 'a quarter of the runs' });
        const victim = workers[0]!;
        await procs.kill(victim, 'SIGKILL');
        const seenDead = process.hrtime.bigint();
        workers.push(procs.worker('worker-replacement', env, flags, MODULE));

        await waitFor(async () => (await counts()).succeeded === RUNS, {
          timeoutMs: 240_000,
          message: `all ${RUNS} runs to succeed`,
        });
        const final = await counts();
        assert.equal(final.failed, 0);
        assert.equal(final.queued + final.scheduled + final.active, 0);

        const execs = readLogs(logDir);
        for (const e of execs) {
          if (e.end !== undefined) continue;
          assert.equal(e.pid, victim.pid, `run ${e.id} (attempt ${e.attempt}) never ended, on a process that was not killed`);
          e.end = seenDead;
        }
        const peak = peaks(execs);
        for (const [key, n] of peak) {
          const limit = BIG_KEYS.includes(key) ? BIG_LIMIT : LIMIT;
          assert.ok(n <= limit, `key ${key} had ${n} runs active at once (limit ${limit})`);
        }
        assert.equal(peak.size, KEYS, 'every key ran');
        assert.equal(peak.get('k0'), BIG_LIMIT, 'the hot key reached its limit (the test exercised it)');
        const atLimit = [...peak].filter(([k, n]) => !BIG_KEYS.includes(k) && n === LIMIT).length;
        assert.ok(atLimit >= 10, `keys of limit ${LIMIT} that reached it: ${atLimit} (the test exercised the per-key limit)`);
        // Runs executed twice: only those the killed process held.
        const perRun = new Map<string, Exec[]>();
        for (const e of execs) perRun.set(e.id, [...(perRun.get(e.id) ?? []), e]);
        assert.equal(perRun.size, RUNS, 'every run executed');
        let again = 0;
        for (const [id, list] of perRun) {
          if (list.length === 1) continue;
          again++;
          assert.ok(
            list.some((e) => e.pid === victim.pid),
            `run ${id} executed ${list.length} times, none on the killed process: ${JSON.stringify(list, (_k, v) => (typeof v === 'bigint' ? String(v) : v))}`,
          );
        }
        figure(`flow control, ${kind}`, {
          runs: RUNS,
          keys: KEYS,
          processes: `${WORKERS} x ${CONCURRENCY} slots`,
          'executed twice (held by the killed worker)': again,
          'peak of k0 (limit 5)': peak.get('k0'),
          'keys that reached their limit': [...peak].filter(([k, n]) => n === (BIG_KEYS.includes(k) ? BIG_LIMIT : LIMIT)).length,
          'runs the killed worker held': execs.filter((e) => e.pid === victim.pid && e.end === seenDead).length,
        });
      } finally {
        await procs.killAll();
        await app.close();
        if (kind === 'redis') await dropRedisPrefix(prefix);
      }
    });
  });
}

// A global rate limit across processes: 4 workers of 50 slots start 1,500 runs of a task limited
// to RATE starts per second (burst BURST). The starts the broker recorded (each run's startedAt, the
// `now` its reserve was given) are never more than BURST + RATE in any window of one second; the
// rate over the whole drain is printed (not asserted: it depends on the machine's load).
const RATE = 100;
const BURST = 10;
const PACED = 1500;

for (const kind of (process.env.FLOW_ONLY ? [process.env.FLOW_ONLY] : ['redis', 'sqlite']) as ('redis' | 'sqlite')[]) {
  describe(`a global rate limit with ${WORKERS} worker processes on ${kind}`, () => {
    it(`never more than ${BURST} + ${RATE} starts in any second (${PACED} runs)`, { timeout: 300_000 }, async () => {
      const dir = tempDir('errand-flow-rate');
      const prefix = uniquePrefix('errand-flow-rate');
      const url = kind === 'redis' ? REDIS_URL : `sqlite:${join(dir, 'errand.db')}`;
      const env = { ERRAND_BROKER_URL: url, ERRAND_PREFIX: prefix, FLOW_RATE: String(RATE), FLOW_BURST: String(BURST) };
      const flags = ['--concurrency', String(CONCURRENCY), '--lease-ms', '4000', '--queues', 'paced'];
      const app = createErrand({ broker: url, prefix, logger: quietLogger });
      const paced = app.task(
        'paced',
        { input: z.object({ n: z.number().int() }), queue: 'paced', limits: { globalRate: { limit: RATE, period: 1000, burst: BURST } } },
        () => 0,
      );
      const procs = new Procs();
      try {
        await paced.enqueueMany(Array.from({ length: PACED }, (_, n) => ({ input: { n } })));
        const broker = await app.broker();
        for (let i = 0; i < WORKERS; i++) procs.worker(`worker-${i}`, env, flags, MODULE);
        await waitFor(async () => (await broker.counts(['paced'])).paced?.succeeded === PACED, {
          timeoutMs: 240_000,
          message: `all ${PACED} runs to succeed`,
        });
        const inspector = broker as typeof broker & {
          listRuns(f: { queue: string; state: 'succeeded'; limit: number; cursor?: string }): Promise<{
            runs: { startedAt?: number }[];
            next: string | null;
          }>;
        };
        const starts: number[] = [];
        let cursor: string | undefined;
        do {
          const page = await inspector.listRuns({ queue: 'paced', state: 'succeeded', limit: 500, ...(cursor ? { cursor } : {}) });
          for (const r of page.runs) starts.push(r.startedAt as number);
          cursor = page.next ?? undefined;
        } while (cursor);
        assert.equal(starts.length, PACED);
        starts.sort((a, b) => a - b);
        let worst = 0;
        for (let i = 0, j = 0; i < starts.length; i++) {
          while ((starts[j] as number) < (starts[i] as number) - 999) j++;
          worst = Math.max(worst, i - j + 1);
        }
        assert.ok(worst <= BURST + RATE, `${worst} starts within one second (limit ${RATE}/s, burst ${BURST})`);
        const span = ((starts.at(-1) as number) - (starts[0] as number)) / 1000;
        figure(`global rate limit, ${kind}`, {
          runs: PACED,
          limit: `${RATE}/s, burst ${BURST}`,
          'most starts in any 1 s window': worst,
          'rate over the drain (starts/s)': Math.round(((PACED - BURST) / span) * 10) / 10,
        });
      } finally {
        await procs.killAll();
        await app.close();
        if (kind === 'redis') await dropRedisPrefix(prefix);
      }
    });
  });
}
