// Fault: a per-second schedule fired by 3 worker processes (no leader), while workers are killed
// with SIGKILL and started again, and (on Redis) Redis itself is killed and restarted (AOF, always).
// Reconciled by nominal time: every second of the window has exactly one run, none outside it, and
// every run was executed (at least once, as every run under leases) and succeeded.
// Window: 60 s on Redis, 30 s on SQLite (3 processes on one file).
// On a loaded machine a worker process takes many seconds to start, so nothing here assumes a start
// time: the window is chosen once the first three workers have loaded their code (the fixture waits
// for it), a restarted worker is waited for (its heartbeat) before the next kill, and if the schedule
// was stored after the window's start anyway, the seconds before it (which a new schedule never
// fires, docs/schedules.md) are left out of the reconciliation, which starts at its first fire.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectBroker } from '../../src/broker/connect.ts';
import type { Broker, BrokerInspector, RunRecord } from '../../src/broker/types.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { tempDir, waitFor } from '../helpers.ts';
import { figure, type OwnRedis, type Proc, Procs, ROOT, startRedis } from './harness.ts';

const MODULE = join(ROOT, 'test/faults/fixtures/schedule-tasks.ts');
const PREFIX = 'fault-sched';
/** A safety net for each wait on a loaded machine (a process to start, the last runs to finish), not a timing assertion. */
const LOAD_LIMIT_MS = 150_000;

/** Executions from the workers' logs: nominal time -> run ids executed for it. */
function executions(dir: string): Map<number, Set<string>> {
  const out = new Map<number, Set<string>>();
  for (const f of readdirSync(dir).filter((x) => x.endsWith('.log'))) {
    for (const line of readFileSync(join(dir, f), 'utf8').split('\n')) {
      const [at, id] = line.split(' ');
      if (!at || !id) continue;
      let s = out.get(Number(at));
      if (!s) out.set(Number(at), (s = new Set()));
      s.add(id);
    }
  }
  return out;
}

async function allRuns(broker: Broker): Promise<RunRecord[]> {
  const runs: RunRecord[] = [];
  let cursor: string | undefined;
  do {
    const page = await (broker as Broker & BrokerInspector).listRuns({ queue: 'ticks', limit: 500, ...(cursor ? { cursor } : {}) });
    runs.push(...page.runs);
    cursor = page.next ?? undefined;
  } while (cursor);
  return runs;
}

async function scenario(kind: 'redis' | 'sqlite', windowMs: number): Promise<void> {
  const procs = new Procs();
  const dir = tempDir(`errand-fault-sched-${kind}`);
  const logDir = tempDir(`errand-fault-sched-${kind}-log`);
  let redis: OwnRedis | undefined;
  let broker: Broker | undefined;
  try {
    let url: string;
    if (kind === 'redis') {
      redis = await startRedis(procs, join(dir, 'redis'), { persistent: true });
      url = redis.url;
    } else {
      url = `sqlite:${join(dir, 'errand.db')}`;
    }
    const env = { ERRAND_BROKER_URL: url, ERRAND_PREFIX: PREFIX, FAULT_LOG_DIR: logDir };
    const flags = ['--concurrency', '4', '--lease-ms', '3000'];
    const workers: Proc[] = [0, 1, 2].map((i) => procs.worker(`worker-${i}`, env, flags, MODULE));
    broker = await connectBroker(url, { prefix: PREFIX, logger: quietLogger });
    const inspector = broker as Broker & BrokerInspector;
    /** Waits until the worker process has started (its heartbeat is stored): a safety net, not a timing. */
    const up = (w: Proc) =>
      waitFor(
        async () => {
          if (!w.alive) throw new Error(`${w.name} exited: ${w.tail()}`);
          return (await inspector.listWorkers(Date.now())).some((x) => x.pid === w.pid);
        },
        { timeoutMs: LOAD_LIMIT_MS, intervalMs: 100, message: `${w.name} (pid ${w.pid}) to start` },
      );
    // The window starts on a whole second, a few seconds after the three workers have loaded their code.
    await waitFor(
      () => {
        const dead = workers.find((w) => !w.alive);
        if (dead) throw new Error(`${dead.name} exited: ${dead.tail()}`);
        return workers.every((w) => readdirSync(logDir).includes(`${w.pid}.ready`));
      },
      { timeoutMs: LOAD_LIMIT_MS, intervalMs: 100, message: 'the three workers to load their code' },
    );
    const start = Math.ceil((Date.now() + 5000) / 1000) * 1000;
    const end = start + windowMs;
    writeFileSync(join(logDir, 'window.tmp'), JSON.stringify({ start, end }));
    renameSync(join(logDir, 'window.tmp'), join(logDir, 'window.json'));
    for (const w of workers) await up(w);

    const events: string[] = [];
    const restart = async (i: number) => {
      await procs.kill(workers[i]!, 'SIGKILL');
      events.push(`kill -9 worker-${i} at ${Date.now() - start}`);
      await sleep(1500);
      const again = procs.worker(`worker-${i}-again`, env, flags, MODULE);
      workers[i] = again;
      await up(again);
      events.push(`worker-${i} up again at ${Date.now() - start}`);
    };
    const until = (at: number) => sleep(Math.max(0, at - Date.now()));
    // Faults, spread over the window (a fault waits for the restarted worker before it, however late).
    await until(start + windowMs * 0.15);
    await restart(0);
    await until(start + windowMs * 0.3);
    await restart(1);
    if (redis) {
      await until(start + windowMs * 0.4);
      await redis.kill9();
      events.push(`kill -9 redis at ${Date.now() - start}`);
      await sleep(2000);
      await redis.start();
      events.push(`redis up at ${Date.now() - start}`);
    }
    await until(start + windowMs * (redis ? 0.55 : 0.45));
    // Two at once: one worker left firing.
    await Promise.all([restart(2), restart(0)]);
    await until(end);

    // Every run of the window created and finished (a run whose worker was killed comes back after its
    // lease). The schedule fires from its start or, stored after it, from the first second at or after
    // the time its definition was made (before it was stored): from `stored` at the latest.
    let stored = start;
    const runs = await waitFor(
      async () => {
        const s = await broker!.getSchedule('ticks', 'per-second');
        if (!s || s.next !== null) return null;
        stored = Math.max(start, Math.ceil(s.createdAt / 1000) * 1000);
        const r = await allRuns(broker!);
        return r.length >= (end - stored) / 1000 && r.every((x) => x.state === 'succeeded') ? r : null;
      },
      { timeoutMs: LOAD_LIMIT_MS, intervalMs: 200, message: 'the runs of the window to succeed' },
    ).catch(async (err: Error) => {
      const r = await allRuns(broker!).catch(() => []);
      const states: Record<string, number> = {};
      for (const x of r) states[x.state] = (states[x.state] ?? 0) + 1;
      const times = new Set(r.map((x) => x.schedule?.at));
      const missing: number[] = [];
      for (let t = stored; t < end; t += 1000) if (!times.has(t)) missing.push(t - start);
      throw new Error(
        `${err.message}: runs ${JSON.stringify(states)}, seconds without a run ${JSON.stringify(missing)}, events ${events.join(', ')}`,
      );
    });
    const first = Math.min(...runs.map((r) => r.schedule?.at ?? Number.POSITIVE_INFINITY));
    assert.ok(first <= stored, `the schedule fired from its start, or from when it was stored (${first - start} ms)`);
    const expected = (end - first) / 1000;
    const byTime = new Map<number, string[]>();
    for (const r of runs) {
      assert.ok(r.schedule, `run ${r.id} carries its schedule`);
      const list = byTime.get(r.schedule.at) ?? [];
      list.push(r.id);
      byTime.set(r.schedule.at, list);
    }
    const twice = [...byTime].filter(([, ids]) => ids.length > 1);
    assert.deepEqual(twice, [], 'no nominal time has two runs');
    const missing: number[] = [];
    for (let t = first; t < end; t += 1000) if (!byTime.has(t)) missing.push(t - start);
    assert.deepEqual(missing, [], 'every second of the window has its run');
    assert.ok(
      runs.every((r) => r.schedule!.at >= start && r.schedule!.at < end),
      'no run outside the window',
    );
    assert.equal(runs.length, expected, 'one run per second from the first fire to the end');
    const s = await broker.getSchedule('ticks', 'per-second');
    assert.equal(s?.missed, 0);
    assert.equal(s?.next, null, 'the schedule ended with its window');
    // Executions: each nominal time executed, only ever by its one run.
    const ex = executions(logDir);
    for (const [at, ids] of byTime) {
      assert.deepEqual([...(ex.get(at) ?? [])], ids, `the executions of ${at - start} ms are of its one run`);
    }
    const lags = runs.map((r) => (r.startedAt ?? 0) - (r.schedule?.at ?? 0)).sort((a, b) => a - b);
    figure(`schedules-${kind}`, {
      windowSeconds: windowMs / 1000,
      reconciledSeconds: expected,
      runs: runs.length,
      reexecuted: runs.filter((r) => r.attempts > 1).length,
      lagMs: { p50: lags[Math.floor(lags.length / 2)], p90: lags[Math.floor(lags.length * 0.9)], max: lags.at(-1) },
      events,
    });
  } finally {
    await procs.killAll();
    await broker?.close();
    await redis?.stop();
  }
}

describe('fault: a per-second schedule, three worker processes, kill -9 of workers (and of Redis)', () => {
  it('Redis (AOF): every second of a 60 s window fired exactly once', { timeout: 900_000 }, () => scenario('redis', 60_000));
  it('SQLite (one file, 3 processes): every second of a 30 s window fired exactly once', { timeout: 900_000 }, () =>
    scenario('sqlite', 30_000),
  );
});
