/**
 * The Redis broker's flow-control key states (layout 4, `fy|<group>` in flow.lua) keep counts
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
import { keyState } from '../../../src/broker/redis/inspection.ts';
import { RedisBroker } from '../../../src/broker/redis/redis-broker.ts';
import type { Reservation } from '../../../src/broker/types.ts';
import { dropRedisPrefix } from '../../fixtures/brokers.ts';
import { runFlowSequence } from '../../fixtures/flow-sequence.ts';
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

/** Compares each stored key state with its list and with the runs that are active. */
async function checkStates(active: Map<string, Reservation>, keyOf: Map<string, string>, step: string): Promise<void> {
  const base = `${prefix}:{${Q}}:`;
  const states = await redis.hgetallBuffer(`${base}fy|${GROUP}`);
  const activeByKey = new Map<string, number>();
  for (const id of active.keys()) {
    const y = keyOf.get(id)!;
    activeByKey.set(y, (activeByKey.get(y) ?? 0) + 1);
  }
  for (const y of KEYS) {
    const len = await redis.llen(`${base}fq|${GROUP}|${y}`);
    const packed = states[y];
    const st = keyState(packed);
    if (packed) assert.ok(st, `${step}: key ${JSON.stringify(y)}: unreadable state ${packed.toString('hex')}`);
    const [a, q] = st ? [st.active, st.queued] : [0, 0];
    const shown = JSON.stringify(st);
    assert.equal(q, len, `${step}: key ${JSON.stringify(y)}: queued count ${q}, list ${len} (${shown})`);
    assert.equal(a, activeByKey.get(y) ?? 0, `${step}: key ${JSON.stringify(y)}: active count (${shown})`);
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
    await runFlowSequence({ broker, queue: Q, group: GROUP, keys: KEYS, seed: 16, check: checkStates });
    assert.equal((await broker.counts([Q]))[Q]?.queued, 0, 'every run ended');
    assert.equal(await redis.hlen(`${prefix}:{${Q}}:fy|${GROUP}`), 0, 'every key forgotten');
  });
});
