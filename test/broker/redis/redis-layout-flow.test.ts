/**
 * Layouts 3 and 4 (src/broker/redis/layout.ts): flow control's key states move from one hash per
 * key (`fk|<group>|<key>`, listed in `fS`) to one field per key of the group's hash `fy|<group>`
 * (layout 3: text 'a;q;c;t;r;w;e;z'), then that field is packed by struct (layout 4). Keys of
 * layout 2, and of layout 3, are written here with raw commands (a key with queued and active runs,
 * one held by its rate, one whose name holds '|' with a weight); a broker of this layout migrates
 * them, and the runs are still seen, held and started as before.
 *
 * Every test uses a key prefix of its own, deleted at the end (never FLUSHDB).
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { keyState } from '../../../src/broker/redis/inspection.ts';
import { LAYOUT_VERSION, layoutKey, queueLayoutKey } from '../../../src/broker/redis/layout.ts';
import { RedisBroker } from '../../../src/broker/redis/redis-broker.ts';
import { newRunId } from '../../../src/core/ids.ts';
import { dropRedisPrefixes } from '../../fixtures/brokers.ts';
import { uniquePrefix } from '../../helpers.ts';

const URL_ = process.env.ERRAND_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const redis = new Redis(URL_, { lazyConnect: true, maxRetriesPerRequest: 1 });
const prefixes: string[] = [];
const brokers: RedisBroker[] = [];

after(async () => {
  await Promise.allSettled(brokers.map((b) => b.close()));
  await dropRedisPrefixes(prefixes, URL_);
  redis.disconnect();
});

describe('redis layouts 3 and 4: flow-control key states', () => {
  for (const from of [2, 3] as const) {
    it(`migrates the key states of layout ${from}, and the runs are held and started as before`, async () => {
      await migratesFrom(from);
    });
  }
});

async function migratesFrom(from: 2 | 3): Promise<void> {
  {
    await redis.connect().catch(() => {});
    const prefix = uniquePrefix('errand-layout-flow');
    prefixes.push(prefix);
    const q = 'lim';
    const base = `${prefix}:{${q}}:`;
    const now = Date.now();
    const id = (n: number) => newRunId(q, now - 100 + n);
    const rid = (x: string) => x.slice(-26);
    const [a1, a2, aActive, b1, x1] = [id(1), id(2), id(3), id(4), id(5)];
    const run = (y: string, state: string, extra: string[] = []) => [
      's',
      state,
      't',
      'mail',
      'i',
      JSON.stringify({ y }),
      'g',
      'mail',
      'y',
      y,
      'n',
      y === 'a' ? '2' : '0',
      'm',
      '0',
      ...extra,
    ];
    // Layout 2 as its code left it: key a (limit 2) with 2 queued and 1 active, in the ring; key b
    // (1 start per second) held by its rate until now + 500; key 'x|y' (weight 3) with 1 queued.
    await redis.hset(layoutKey(prefix), 'version', String(from), 'compatible', String(from === 2 ? 1 : 3), 'at', '0');
    await redis.sadd(`${prefix}:queues`, q);
    const m = redis
      .multi()
      .hset(`${base}r:${rid(a1)}`, ...run('a', 'q'))
      .hset(`${base}r:${rid(a2)}`, ...run('a', 'q'))
      .hset(`${base}r:${rid(aActive)}`, ...run('a', 'a', ['a', '1', 'w', 'old', 'b', String(now - 10), 'o', '1']))
      .zadd(`${base}active`, now + 60_000, rid(aActive), '9000000000000000', 'pin')
      .hset(`${base}r:${rid(b1)}`, ...run('b', 'q', ['u', '1000,1']))
      .hset(`${base}r:${rid(x1)}`, ...run('x|y', 'q', ['K', '3']))
      .rpush(`${base}fq|mail|a`, rid(a1), rid(a2))
      .rpush(`${base}fq|mail|b`, rid(b1))
      .rpush(`${base}fq|mail|x|y`, rid(x1))
      .zadd(`${base}fK|mail`, 1, 'a', 2, 'x|y')
      .zadd(`${base}fR`, 3, 'mail')
      .zadd(`${base}fW`, now + 500, 'mail|b')
      .hset(`${base}fG|mail`, 'a', '1', 'c', '0')
      .hset(`${base}fM`, 't', '3', 'q', '4');
    if (from === 2) {
      m.hset(`${base}fk|mail|a`, 'a', '1', 'c', '2')
        .hset(`${base}fk|mail|b`, 'c', '0', 'r', '1000,1', 't', String(now + 500), 'w', '1')
        .hset(`${base}fk|mail|x|y`, 'c', '0', 'e', '3', 'z', '1')
        .sadd(`${base}fS`, 'mail|a', 'mail|b', 'mail|x|y');
    } else {
      // Layout 3's text: a;q;c;t;r;w;e;z.
      m.hset(`${base}fy|mail`, 'a', '1;2;2;;;;;', 'b', `0;1;0;${now + 500};1000,1;1;;`, 'x|y', '0;1;0;;;;3;1')
        .sadd(`${base}fY`, 'mail')
        .hset(`${base}fM`, 'w', String(now + 500));
    }
    await m.exec();

    const b = new RedisBroker({ url: URL_, prefix });
    brokers.push(b);
    await b.ping();
    assert.equal(LAYOUT_VERSION, 4);
    assert.deepEqual(await redis.hmget(layoutKey(prefix), 'version', 'compatible'), ['4', '4'], 'layout 2 and 3 code may not run on it');
    assert.equal(await redis.get(queueLayoutKey(prefix, q)), '4');
    const states = await redis.hgetallBuffer(`${base}fy|mail`);
    assert.deepEqual(
      Object.fromEntries(Object.entries(states).map(([y, v]) => [y, keyState(v)])),
      {
        a: { active: 1, queued: 2, limit: 2, interval: 0, burst: 0, wait: '', weight: 1, streak: 0 },
        b: { active: 0, queued: 1, limit: 0, tat: now + 500, interval: 1000, burst: 1, wait: '1', weight: 1, streak: 0 },
        'x|y': { active: 0, queued: 1, limit: 0, interval: 0, burst: 0, wait: '', weight: 3, streak: 1 },
      },
      'each state packed, every field kept',
    );
    assert.equal(await redis.exists(`${base}fS`, `${base}fk|mail|a`, `${base}fk|mail|b`, `${base}fk|mail|x|y`), 0, 'the old keys are gone');
    assert.deepEqual(await redis.smembers(`${base}fY`), ['mail']);

    // The inspector sees each key as before.
    const page = await b.flowKeys(q, { sort: 'key', offset: 0, limit: 50 });
    assert.equal(page.total, 3);
    assert.deepEqual(
      page.keys.map((k) => [k.key, k.queued, k.active, k.concurrency, k.waitUntil]),
      [
        ['a', 2, 1, 2, undefined],
        ['b', 1, 0, 0, now + 500],
        ['x|y', 1, 0, 0, undefined],
      ],
    );
    assert.deepEqual((await b.getRun(b1))?.flow?.waiting, { reason: 'key_rate', until: now + 500 });
    const counts = (await b.flowCounts([q]))[q];
    assert.deepEqual([counts?.queued, counts?.keys, counts?.rateLimitedKeys, counts?.heldRuns.key_rate], [4, 3, 1, 1]);

    // Key a has one free slot, 'x|y' its run, b waits for its rate.
    const first = await b.reserve({ workerId: 'w', queues: [q], max: 10, leaseMs: 30_000, now });
    assert.deepEqual(first.runs.map((r) => r.id).sort(), [a1, x1].sort());
    assert.equal(first.nextAt, now + 500, 'b is due when its rate allows');
    const ok = (runs: { id: string; attempt: number }[]) =>
      runs.map((r) => ({ id: r.id, attempt: r.attempt, outcome: 'succeeded' as const, result: null, retentionMs: 0 }));
    // The run that was active before the migration frees its slot when it ends.
    assert.deepEqual(await b.settle('old', ok([{ id: aActive, attempt: 1 }]), now), ['ok']);
    const second = await b.reserve({ workerId: 'w', queues: [q], max: 10, leaseMs: 30_000, now, settle: ok(first.runs) });
    assert.deepEqual(
      second.runs.map((r) => r.id),
      [a2],
    );
    const third = await b.reserve({ workerId: 'w', queues: [q], max: 10, leaseMs: 30_000, now: now + 1000, settle: ok(second.runs) });
    assert.deepEqual(
      third.runs.map((r) => r.id),
      [b1],
      'b starts once its rate allows',
    );
    // b1 was written with its limits in fields of their own (before layout 4): queued again by a
    // retry, it goes back to its key with them (the rate of 1 start per second still held).
    assert.deepEqual(await b.settle('w', [{ id: b1, attempt: 1, outcome: 'retry', error: '{}', runAt: now + 1000 }], now + 1000), ['ok']);
    const requeued = (await b.flowKeys(q, { sort: 'key', offset: 0, limit: 50 })).keys.find((k) => k.key === 'b');
    assert.deepEqual([requeued?.queued, requeued?.rate], [1, { interval: 1000, burst: 1 }]);
    assert.equal(
      (await b.reserve({ workerId: 'w', queues: [q], max: 10, leaseMs: 30_000, now: now + 1500 })).runs.length,
      0,
      'held by its rate',
    );
    const fourth = await b.reserve({ workerId: 'w', queues: [q], max: 10, leaseMs: 30_000, now: now + 2000 });
    assert.deepEqual(
      fourth.runs.map((r) => r.id),
      [b1],
    );
    await b.settle('w', ok(fourth.runs), now + 2000);
    assert.equal((await b.flowKeys(q, { sort: 'key', offset: 0, limit: 50 })).total, 0, 'every key forgotten once idle');
    assert.equal((await b.counts([q]))[q]?.queued, 0);
  }
}
