// Fault: a per-second schedule fired by 3 worker processes (no leader), while workers are killed
// with SIGKILL and started again, and (on Redis) Redis itself is killed and restarted (AOF, always).
// Reconciled by nominal time: every second of the window has exactly one run, none outside it, and
// every run was executed (at least once, as every run under leases) and succeeded.
// Window: 60 s on Redis, 30 s on SQLite (3 processes on one file).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
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
    // The window starts on a whole second, after the workers had time to start.
    const start = Math.ceil((Date.now() + 6000) / 1000) * 1000;
    const end = start + windowMs;
    const env = {
      ERRAND_BROKER_URL: url,
      ERRAND_PREFIX: PREFIX,
      FAULT_LOG_DIR: logDir,
      SCHED_START: String(start),
      SCHED_END: String(end),
    };
    const flags = ['--concurrency', '4', '--lease-ms', '3000'];
    const workers: Proc[] = [0, 1, 2].map((i) => procs.worker(`worker-${i}`, env, flags, MODULE));
    const events: string[] = [];
    const restart = async (i: number) => {
      await procs.kill(workers[i]!, 'SIGKILL');
      events.push(`kill -9 worker-${i} at ${Date.now() - start}`);
      await sleep(1500);
      workers[i] = procs.worker(`worker-${i}-again`, env, flags, MODULE);
    };
    // Faults, spread over the window.
    await sleep(Math.max(0, start - Date.now()) + windowMs * 0.15);
    await restart(0);
    await sleep(windowMs * 0.15);
    await restart(1);
    if (redis) {
      await sleep(windowMs * 0.1);
      await redis.kill9();
      events.push(`kill -9 redis at ${Date.now() - start}`);
      await sleep(2000);
      await redis.start();
      events.push(`redis up at ${Date.now() - start}`);
    }
    await sleep(windowMs * 0.15);
    // Two at once: one worker left firing.
    await Promise.all([restart(2), restart(0)]);
    await sleep(Math.max(0, end - Date.now()));

    broker = await connectBroker(url, { prefix: PREFIX, logger: quietLogger });
    const expected = windowMs / 1000;
    // Every run of the window created and finished (a run whose worker was killed comes back after its lease).
    const runs = await waitFor(
      async () => {
        const r = await allRuns(broker!);
        return r.length >= expected && r.every((x) => x.state === 'succeeded') ? r : null;
      },
      { timeoutMs: 60_000, intervalMs: 200, message: `the ${expected} runs of the window to succeed` },
    );
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
    for (let t = start; t < end; t += 1000) if (!byTime.has(t)) missing.push(t - start);
    assert.deepEqual(missing, [], 'every second of the window has its run');
    assert.equal(runs.length, expected, 'no run outside the window');
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
      windowSeconds: expected,
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
  it('Redis (AOF): every second of a 60 s window fired exactly once', { timeout: 240_000 }, () => scenario('redis', 60_000));
  it('SQLite (one file, 3 processes): every second of a 30 s window fired exactly once', { timeout: 240_000 }, () =>
    scenario('sqlite', 30_000),
  );
});
