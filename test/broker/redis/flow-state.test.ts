/**
 * The Redis broker's flow-control key states (layout 3, `fy|<group>` in common.lua) keep counts
 * that no script recomputes on the hot path: a key's queued count must equal the length of its
 * list, and its active count the runs of that key that are active. After a seeded random
 * sequence of every transition that moves runs of limited keys (enqueue, a scheduled run coming
 * due, reserve, success, failure, retry due now and later, back-off, release, cancel of a queued
 * and of an active run, a lease expired and recovered, replay of a failed run, workflows whose
 * limited steps become queued when their dependencies end (fan-in, edge policies, retry from a
 * step) and cancel of a workflow), the stored states are compared with the lists and the runs
 * themselves, and every run ends.
 *
 * Uses a key prefix of its own, deleted at the end (never FLUSHDB).
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { RedisBroker } from '../../../src/broker/redis/redis-broker.ts';
import type { DependencyPolicy, NewWorkflowRun, Reservation, Settlement } from '../../../src/broker/types.ts';
import { newRunId } from '../../../src/core/ids.ts';
import { dropRedisPrefix } from '../../fixtures/brokers.ts';
import { uniquePrefix } from '../../helpers.ts';

const URL_ = process.env.ERRAND_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const redis = new Redis(URL_, { lazyConnect: true, maxRetriesPerRequest: 1 });
const prefix = uniquePrefix('errand-flow-state');
const broker = new RedisBroker({ url: URL_, prefix, maxLeaseLosses: 100 });
const Q = 'fs';
const GROUP = 'fs.task';
const KEYS = ['a', 'b', 'c|d', ''];

after(async () => {
  await broker.close();
  await dropRedisPrefix(prefix, URL_);
  redis.disconnect();
});

/** A small seeded generator (mulberry32), so that a failure can be replayed. */
function rng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Compares each stored key state with its list and with the runs that are active. */
async function checkStates(active: Map<string, Reservation>, keyOf: Map<string, string>, step: string): Promise<void> {
  const base = `${prefix}:{${Q}}:`;
  const states = await redis.hgetall(`${base}fy|${GROUP}`);
  const activeByKey = new Map<string, number>();
  for (const id of active.keys()) {
    const y = keyOf.get(id)!;
    activeByKey.set(y, (activeByKey.get(y) ?? 0) + 1);
  }
  for (const y of KEYS) {
    const len = await redis.llen(`${base}fq|${GROUP}|${y}`);
    const packed = states[y];
    const [a, q] = packed ? packed.split(';').map(Number) : [0, 0];
    assert.equal(q, len, `${step}: key ${JSON.stringify(y)}: queued count ${q}, list ${len} (${packed})`);
    assert.equal(a, activeByKey.get(y) ?? 0, `${step}: key ${JSON.stringify(y)}: active count (${packed})`);
    if (!packed) assert.equal(len, 0, `${step}: key ${JSON.stringify(y)} forgotten with runs queued`);
  }
  const total = Number((await redis.hget(`${base}fM`, 'q')) ?? 0);
  let lists = 0;
  for (const y of KEYS) lists += await redis.llen(`${base}fq|${GROUP}|${y}`);
  assert.equal(total, lists, `${step}: the queue's count of runs in key lists`);
}

describe('redis flow-control key states', () => {
  it('keep queued and active counts equal to the lists and the active runs through every transition (seeded)', async () => {
    await redis.connect().catch(() => {});
    const rand = rng(16);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const keyOf = new Map<string, string>();
    const active = new Map<string, Reservation>();
    const failed = new Set<string>();
    let now = Date.now();
    const spec = (y: string) => ({ group: GROUP, key: y, concurrency: 2, groupConcurrency: 5 });
    const enqueue = async (n: number, later = 0) => {
      const runs = Array.from({ length: n }, () => {
        const y = pick(KEYS);
        const id = newRunId(Q, now);
        keyOf.set(id, y);
        return { id, task: GROUP, queue: Q, input: '{}', priority: 0, runAt: now + later, flow: spec(y) };
      });
      await broker.enqueue(runs, now);
    };
    const workflows: string[] = [];
    // A workflow: a root (limited or not), one or two limited steps after it (a random edge
    // policy), and a limited fan-in of those: its steps count in their keys once queued.
    const workflow = async () => {
      const step = (limited: boolean, over: Partial<NewWorkflowRun> = {}): NewWorkflowRun => {
        const id = newRunId(Q, now);
        const run: NewWorkflowRun = { id, task: GROUP, queue: Q, input: '{}', priority: 0, runAt: now, ...over };
        if (limited) {
          const y = pick(KEYS);
          keyOf.set(id, y);
          run.flow = spec(y);
        }
        return run;
      };
      const root = step(rand() < 0.5);
      const policy = (): DependencyPolicy => pick(['cancel', 'cancel', 'skip', 'continue'] as const);
      const mids = Array.from({ length: 1 + Math.floor(rand() * 2) }, () =>
        step(true, { dependsOn: [{ id: root.id, onFailure: policy() }] }),
      );
      const fanIn = step(true, { dependsOn: mids.map((m) => ({ id: m.id, onFailure: policy() })), inputFrom: 'list' });
      const id = newRunId(Q, now);
      workflows.push(id);
      await broker.createWorkflow({ id, runs: [root, ...mids, fanIn] }, now);
    };
    const settle = async (s: Settlement[]) => {
      for (const x of s) active.delete(x.id);
      await broker.settle('w', s, now);
    };
    await enqueue(30);
    for (let step = 0; step < 300; step++) {
      now += 1 + Math.floor(rand() * 30);
      const op = Math.floor(rand() * 14);
      const held = [...active.values()];
      const one = held.length ? pick(held) : undefined;
      if (op === 0) await enqueue(1 + Math.floor(rand() * 4), rand() < 0.3 ? 20 : 0);
      else if (op <= 3) {
        const res = await broker.reserve({ workerId: 'w', queues: [Q], max: 1 + Math.floor(rand() * 4), leaseMs: 1_000, now });
        for (const r of res.runs) active.set(r.id, r);
      } else if (op === 4 && one)
        await settle([{ id: one.id, attempt: one.attempt, outcome: 'succeeded', result: null, retentionMs: 60_000 }]);
      else if (op === 5 && one) {
        await settle([{ id: one.id, attempt: one.attempt, outcome: 'failed', error: '{"message":"x"}', retentionMs: 60_000 }]);
        failed.add(one.id);
      } else if (op === 6 && one)
        await settle([
          { id: one.id, attempt: one.attempt, outcome: 'retry', error: '{"message":"x"}', runAt: now + (rand() < 0.5 ? 0 : 15) },
        ]);
      else if (op === 7 && one)
        await settle([{ id: one.id, attempt: one.attempt, outcome: 'backoff', until: now + 10, scope: rand() < 0.8 ? 'key' : 'group' }]);
      else if (op === 8 && one) {
        active.delete(one.id);
        await broker.release('w', [{ id: one.id, attempt: one.attempt }], now);
      } else if (op === 9) {
        const id = pick([...keyOf.keys()]);
        const out = await broker.cancel(id, now);
        if (out.outcome === 'cancelled') active.delete(id);
      } else if (op === 10 && held.length) {
        // Every lease expires: the next reserve recovers them (and may lease them again).
        now += 2_000;
        active.clear();
        const res = await broker.reserve({ workerId: 'w', queues: [Q], max: 2, leaseMs: 1_000, now });
        for (const r of res.runs) active.set(r.id, r);
      } else if (op === 11 && failed.size) {
        const id = pick([...failed]);
        failed.delete(id);
        await broker.retry(id, now);
      } else if (op === 12) await workflow();
      else if (op === 13 && workflows.length) {
        const out = await broker.cancelWorkflow(pick(workflows), now);
        assert.equal(out.outcome, 'cancelled');
        // Its active runs were cancelled: their leases are gone.
        for (const [id, r] of active) if ((await broker.getRun(id))?.state === 'cancelled') active.delete(r.id);
      }
      await checkStates(active, keyOf, `step ${step} (op ${op})`);
    }
    // Everything left runs to its end.
    for (let i = 0; i < 200; i++) {
      now += 50;
      await settle(
        [...active.values()].map((r) => ({ id: r.id, attempt: r.attempt, outcome: 'succeeded', result: null, retentionMs: 60_000 })),
      );
      const res = await broker.reserve({ workerId: 'w', queues: [Q], max: 10, leaseMs: 1_000, now });
      for (const r of res.runs) active.set(r.id, r);
      await checkStates(active, keyOf, `drain ${i}`);
      if (res.runs.length === 0 && active.size === 0 && (await broker.counts([Q]))[Q]?.scheduled === 0) break;
    }
    assert.equal((await broker.counts([Q]))[Q]?.queued, 0, 'every run ended');
    assert.equal(await redis.hlen(`${prefix}:{${Q}}:fy|${GROUP}`), 0, 'every key forgotten');
  });
});
