/**
 * Redis-specific behaviour of the Redis broker (the contract itself is checked by
 * test/conformance): key layout under hash tags, memory per queued run, script reload after
 * SCRIPT FLUSH, corrupt records, connection loss, wake-up tokens, URL parsing.
 *
 * Every broker here uses a key prefix of its own; the keys are deleted by prefix at the end
 * (never FLUSHDB).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import pino from 'pino';
import { parseRedisUrl } from '../../../src/broker/redis/connection.ts';
import { CorruptRunError, RedisBroker } from '../../../src/broker/redis/redis-broker.ts';
import { LUA_LIBRARIES } from '../../../src/broker/redis/scripts.ts';
import type { NewRun } from '../../../src/broker/types.ts';
import { BrokerConfigError, BrokerUnavailableError, ConfigError } from '../../../src/core/errors.ts';
import { newRunId, timeOfRunId } from '../../../src/core/ids.ts';
import { dropRedisPrefixes } from '../../fixtures/brokers.ts';
import { settledFlag, settleTurns, uniquePrefix, waitFor, within } from '../../helpers.ts';

const URL_ = process.env.ERRAND_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const redis = new Redis(URL_, { lazyConnect: true, maxRetriesPerRequest: 1 });
const prefixes = new Set<string>();
const brokers: RedisBroker[] = [];

function open(options: Partial<ConstructorParameters<typeof RedisBroker>[0]> = {}): RedisBroker {
  const prefix = options.prefix ?? uniquePrefix('errand-rt');
  prefixes.add(prefix);
  const b = new RedisBroker({ url: URL_, ...options, prefix });
  brokers.push(b);
  return b;
}

function run(queue: string, now: number, over: Partial<NewRun> = {}): NewRun {
  return {
    id: newRunId(queue, now),
    task: 'send_welcome_email',
    queue,
    input: '{"to":"user@example.com"}',
    priority: 0,
    runAt: now,
    ...over,
  };
}

async function keysOf(pattern: string): Promise<string[]> {
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    out.push(...keys);
  } while (cursor !== '0');
  return out.sort();
}

/** The hash tag Redis Cluster uses for a key: the text between the first `{` and the next `}`. */
function hashTag(key: string): string | null {
  const open = key.indexOf('{');
  if (open < 0) return null;
  const close = key.indexOf('}', open + 1);
  if (close <= open + 1) return null;
  return key.slice(open + 1, close);
}

const rid = (id: string) => id.slice(-26);

after(async () => {
  await Promise.allSettled(brokers.map((b) => b.close()));
  await dropRedisPrefixes(prefixes, URL_);
  redis.disconnect();
});

describe('redis broker: layout', () => {
  it('keeps every key of a queue under its hash tag, runs named by their ULID only', async () => {
    const b = open();
    const now = Date.now();
    const e1 = run('emails', now, { priority: 5, idempotencyKey: 'k1', idempotencyTtl: 60_000 });
    const e2 = run('emails', now, { runAt: now + 60_000 });
    const s1 = run('sms', now);
    const s2 = run('sms', now);
    await b.enqueue([e1, e2, s1, s2], now);
    const { runs } = await b.reserve({ workerId: 'w1', queues: ['emails', 'sms'], max: 2, leaseMs: 30_000, now });
    assert.equal(runs.length, 2);
    await b.settle('w1', [{ id: runs[0]!.id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: 60_000 }], now + 1);
    await b.cancel(s2.id, now + 2);

    const keys = await keysOf(`${b.prefix}*`);
    assert.ok(keys.includes(`${b.prefix}:queues`), 'the global set of queues');
    assert.ok(keys.includes(`${b.prefix}:layout`), 'the layout record (layout.ts)');
    for (const key of keys) {
      if (key === `${b.prefix}:queues` || key === `${b.prefix}:layout`) continue;
      const tag = hashTag(key);
      assert.ok(tag === 'emails' || tag === 'sms', `key ${key} is under a queue's hash tag`);
      assert.ok(key.startsWith(`${b.prefix}:{${tag}}:`), `key ${key} starts with <prefix>:{<queue>}:`);
    }
    for (const r of [e1, e2, s1, s2]) {
      const tag = r.queue;
      assert.ok(keys.includes(`${b.prefix}:{${tag}}:r:${rid(r.id)}`), `run key of ${r.id} (ULID only)`);
    }
    assert.ok(keys.includes(`${b.prefix}:{emails}:ik:send_welcome_email:k1`), 'idempotency key in the queue slot');
    assert.ok(keys.includes(`${b.prefix}:{emails}:sched`), 'schedule');
    assert.ok(keys.includes(`${b.prefix}:{sms}:cancelled`), 'cancelled index');
    // Members of lists and sets are ULIDs too.
    assert.deepStrictEqual(await redis.zrange(`${b.prefix}:{emails}:sched`, 0, -1), [rid(e2.id)]);
  });

  it('keeps the lease set in skiplist encoding with a pin that is never due, counted or listed', async () => {
    const b = open();
    const now = Date.now();
    const runs = [run('emails', now), run('emails', now)];
    await b.enqueue(runs, now);
    const active = `${b.prefix}:{emails}:active`;
    const first = await b.reserve({ workerId: 'w1', queues: ['emails'], max: 2, leaseMs: 30_000, now });
    assert.equal(first.runs.length, 2);
    assert.equal(await redis.object('ENCODING', active), 'skiplist', 'two leases, yet not the listpack encoding');
    assert.equal(await redis.zcard(active), 3, 'two leases and the pin');
    assert.equal((await b.counts(['emails'])).emails!.active, 2, 'the pin is not counted');
    assert.deepStrictEqual(
      (await b.listRuns({ queue: 'emails', state: 'active', limit: 10 })).runs.map((r) => r.id).sort(),
      runs.map((r) => r.id).sort(),
    );
    assert.equal(first.nextAt, now + 30_000, 'the earliest lease expiry, not the pin');

    await b.settle(
      'w1',
      runs.map((r) => ({ id: r.id, attempt: 1, outcome: 'succeeded' as const, result: null, retentionMs: 60_000 })),
      now + 1,
    );
    assert.equal((await b.counts(['emails'])).emails!.active, 0);
    const idle = await b.reserve({ workerId: 'w1', queues: ['emails'], max: 2, leaseMs: 30_000, now: now + 2 });
    assert.deepStrictEqual([idle.runs.length, idle.nextAt], [0, null], 'a set holding only the pin holds no leases: nothing is due');
    const later = await b.reserve({ workerId: 'w1', queues: ['emails'], max: 2, leaseMs: 30_000, now: now + 10 ** 12 });
    assert.deepStrictEqual([later.runs.length, later.nextAt], [0, null], 'the pin is never taken for a lease');
  });

  it('stores a queued run as a small hash: state, task, input (priority only when not 0)', async () => {
    const b = open();
    const now = Date.now();
    const plain = run('emails', now);
    const urgent = run('emails', now, { priority: 9 });
    await b.enqueue([plain, urgent], now);
    const h = await redis.hgetall(`${b.prefix}:{emails}:r:${rid(plain.id)}`);
    assert.deepStrictEqual(h, { s: 'q', t: plain.task, i: plain.input });
    const hu = await redis.hgetall(`${b.prefix}:{emails}:r:${rid(urgent.id)}`);
    assert.equal(hu.p, '9');
    assert.equal(await redis.object('ENCODING', `${b.prefix}:{emails}:r:${rid(plain.id)}`), 'listpack');
  });

  it('a run settled as succeeded writes no history and keeps the compact encoding; getRun still shows the attempt', async () => {
    const b = open();
    const now = Date.now();
    const r = run('emails', now);
    await b.enqueue([r], now);
    await b.reserve({ workerId: 'worker-host-1234:5678:abcdef', queues: ['emails'], max: 1, leaseMs: 30_000, now });
    await b.settle(
      'worker-host-1234:5678:abcdef',
      [{ id: r.id, attempt: 1, outcome: 'succeeded', result: '{"ok":true}', retentionMs: 60_000 }],
      now + 5,
    );
    const key = `${b.prefix}:{emails}:r:${rid(r.id)}`;
    const h = await redis.hgetall(key);
    assert.equal(h.h, undefined, 'no history field');
    assert.equal(await redis.object('ENCODING', key), 'listpack');
    const rec = await b.getRun(r.id);
    assert.deepStrictEqual(rec?.history, [
      { attempt: 1, worker: 'worker-host-1234:5678:abcdef', startedAt: now, outcome: 'succeeded', finishedAt: now + 5 },
    ]);
  });

  it('memory per queued run is at or below what BullMQ stores for the same small job', async () => {
    const b = open({ prefix: uniquePrefix('errand') });
    const n = 2000;
    const now = Date.now();
    const runs = Array.from({ length: n }, () => run('emails', now));
    await b.enqueue(runs, now);
    const hashBytes = (await redis.call('MEMORY', 'USAGE', `${b.prefix}:{emails}:r:${rid(runs[n >> 1]!.id)}`)) as number;
    const listBytes = (await redis.call('MEMORY', 'USAGE', `${b.prefix}:{emails}:w:0`, 'SAMPLES', '0')) as number;
    const ours = hashBytes + listBytes / n;

    // A real BullMQ queue: Queue.add('send_welcome_email', { to }) with default options, n times. It
    // stores a hash per job and pushes the job id on the wait list (plus an entry in its events
    // stream, capped at 10,000 entries: printed, left out of the comparison). Same prefix length, so
    // the key names weigh about the same.
    // Unique per test run (the shared Redis may serve another run of this suite at the same time).
    const bull = `bull${b.prefix.slice('errand'.length)}`;
    prefixes.add(bull);
    const connection = new Redis(URL_, { maxRetriesPerRequest: null });
    const queue = new Queue('emails', { connection, prefix: bull });
    let bullHash: number;
    let bullList: number;
    let bullEvents: number;
    try {
      const jobs = await Promise.all(Array.from({ length: n }, () => queue.add('send_welcome_email', { to: 'user@example.com' })));
      assert.equal(await queue.count(), n, 'every BullMQ job is waiting');
      bullHash = (await redis.call('MEMORY', 'USAGE', `${bull}:emails:${jobs[n >> 1]!.id}`)) as number;
      bullList = (await redis.call('MEMORY', 'USAGE', `${bull}:emails:wait`, 'SAMPLES', '0')) as number;
      bullEvents = ((await redis.call('MEMORY', 'USAGE', `${bull}:emails:events`, 'SAMPLES', '0')) as number | null) ?? 0;
    } finally {
      await queue.close();
      connection.disconnect();
    }
    const theirs = bullHash + bullList / n;
    console.log(
      `# memory per queued run (prefix of ${b.prefix.length} chars): errand ${ours.toFixed(1)} bytes (hash ${hashBytes} + list ${(listBytes / n).toFixed(1)}); ` +
        `BullMQ ${theirs.toFixed(1)} bytes (hash ${bullHash} + list ${(bullList / n).toFixed(1)}), not counting its events stream (${(bullEvents / n).toFixed(1)} bytes per job)`,
    );
    assert.ok(ours <= theirs, `errand ${ours} bytes per queued run should be <= BullMQ's ${theirs}`);
  });
});

describe('redis broker: deadline index and debounce keys do not outlive what they are for', () => {
  it('startby holds the runs that may still expire: out when leased, cancelled, swept or purged, back when released', async () => {
    const b = open();
    const t0 = Date.now();
    const idx = `${b.prefix}:{sms}:startby`;
    const [leased, cancelled, purged, plain] = await b.enqueue(
      [
        run('sms', t0, { startBy: t0 + 1000 }),
        run('sms', t0, { startBy: t0 + 1000 }),
        run('sms', t0, { startBy: t0 + 500 }),
        run('sms', t0),
      ],
      t0,
    );
    assert.deepStrictEqual(await redis.zrange(idx, 0, -1, 'WITHSCORES'), [
      rid(purged!.id),
      String(t0 + 500),
      rid(leased!.id),
      String(t0 + 1000),
      rid(cancelled!.id),
      String(t0 + 1000),
    ]);
    await b.cancel(cancelled!.id, t0 + 1);
    const r = await b.reserve({ workerId: 'w', queues: ['sms'], max: 1, leaseMs: 60_000, now: t0 + 2 });
    assert.deepStrictEqual(
      r.runs.map((x) => x.id),
      [leased!.id],
    );
    assert.deepStrictEqual(await redis.zrange(idx, 0, -1), [rid(purged!.id)]);
    await b.purge('sms', t0 + 2);
    assert.equal(await redis.exists(idx), 0, 'the purged run left the index with its hash');
    await b.release('w', [{ id: leased!.id, attempt: 1 }], t0 + 3);
    assert.deepStrictEqual(await redis.zrange(idx, 0, -1), [rid(leased!.id)], 'released: it may expire again');
    assert.equal(plain?.created, true);
    await b.reserve({ workerId: 'w', queues: ['sms'], max: 0, leaseMs: 60_000, now: t0 + 600 });
    assert.deepStrictEqual(await redis.zrange(idx, 0, -1), [rid(leased!.id)]);
    await b.reserve({ workerId: 'w', queues: ['sms'], max: 0, leaseMs: 60_000, now: t0 + 1001 });
    assert.equal(await redis.exists(idx), 0, 'nothing left to expire');
  });

  it('a debounce hash has no TTL while its run is scheduled, and goes when the run is promoted, cancelled or purged', async () => {
    const b = open();
    const t0 = Date.now();
    const hash = (key: string) => `${b.prefix}:{deb}:db:send_welcome_email:${key}`;
    const deb = (key: string, now: number, window: number) => run('deb', now, { runAt: now + window, debounce: { key, maxAt: null } });
    const [promoted, cancelled, purged, older] = await b.enqueue(
      [deb('promoted', t0, 5_000), deb('cancelled', t0, 5_000), deb('purged', t0, 60_000), deb('older', t0, 5_000)],
      t0,
    );
    for (const key of ['promoted', 'cancelled', 'purged', 'older']) assert.equal(await redis.pttl(hash(key)), -1, `${key}: no TTL`);
    assert.equal(await redis.hget(`${b.prefix}:{deb}:r:${rid(promoted!.id)}`, 'B'), 'promoted', 'the run names its key');
    // A run and hash as an earlier version left them: no B, a TTL. Debounced into, they become ours.
    await redis.hdel(`${b.prefix}:{deb}:r:${rid(older!.id)}`, 'B');
    await redis.pexpire(hash('older'), 61_000);
    const [into, intoOlder] = await b.enqueue([deb('promoted', t0 + 1, 5_000), deb('older', t0 + 1, 5_000)], t0 + 1);
    assert.deepStrictEqual([into?.id, into?.created, intoOlder?.id, intoOlder?.created], [promoted!.id, false, older!.id, false]);
    assert.equal(await redis.pttl(hash('promoted')), -1, 'still no TTL');
    assert.equal(await redis.pttl(hash('older')), -1, 'the TTL of the earlier version is gone');
    assert.equal(await redis.hget(`${b.prefix}:{deb}:r:${rid(older!.id)}`, 'B'), 'older');
    await b.cancel(cancelled!.id, t0 + 2);
    assert.equal(await redis.exists(hash('cancelled')), 0, 'cancelled: its burst is over');
    await b.reserve({ workerId: 'w', queues: ['deb'], max: 0, leaseMs: 60_000, now: t0 + 5_001 });
    assert.equal(await redis.exists(hash('promoted')), 0, 'promoted (queued): its burst is over');
    assert.equal(await redis.exists(hash('older')), 0);
    assert.equal(await redis.exists(hash('purged')), 1, 'its run is still scheduled');
    assert.equal(purged?.created, true);
    await b.purge('deb', t0 + 5_002);
    assert.deepStrictEqual(await keysOf(`${b.prefix}:{deb}:db:*`), [], 'purged: none left');
  });
});

describe('redis broker: retention', () => {
  it('a finished run is listed for deletion in the minute its retention ends (no TTL); retention 0 deletes it; a replay leaves the list', async () => {
    const b = open();
    const now = Date.now();
    const [kept, gone, failed] = [run('emails', now), run('emails', now), run('emails', now)];
    await b.enqueue([kept, gone, failed], now);
    await b.reserve({ workerId: 'w', queues: ['emails'], max: 3, leaseMs: 30_000, now });
    await b.settle(
      'w',
      [
        { id: kept.id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: 60_000 },
        { id: gone.id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: 0 },
        { id: failed.id, attempt: 1, outcome: 'failed', error: '{"name":"Error","message":"x"}', retentionMs: 120_000 },
      ],
      now + 1,
    );
    const minute = (t: number) => t - (t % 60_000);
    assert.equal(await redis.pttl(`${b.prefix}:{emails}:r:${rid(kept.id)}`), -1, 'no TTL: prune deletes it');
    assert.deepStrictEqual(await redis.lrange(`${b.prefix}:{emails}:exp:${minute(now + 1 + 60_000)}`, 0, -1), [rid(kept.id)]);
    assert.deepStrictEqual(await redis.lrange(`${b.prefix}:{emails}:exp:${minute(now + 1 + 120_000)}`, 0, -1), [rid(failed.id)]);
    assert.deepStrictEqual(
      (await redis.zrange(`${b.prefix}:{emails}:exps`, 0, -1)).map(Number),
      [minute(now + 1 + 60_000), minute(now + 1 + 120_000)].filter((m, i, a) => a.indexOf(m) === i),
      'the minutes that have a list',
    );
    assert.equal(await redis.exists(`${b.prefix}:{emails}:r:${rid(gone.id)}`), 0);
    assert.equal(await redis.zscore(`${b.prefix}:{emails}:succeeded`, rid(gone.id)), null, 'retention 0 is not indexed');
    assert.equal(
      Number(await redis.zscore(`${b.prefix}:{emails}:succeeded`, rid(kept.id))),
      timeOfRunId(kept.id),
      'indexed by the time in its id (listing newest first)',
    );
    assert.deepStrictEqual(await b.retry(failed.id, now + 2), { outcome: 'queued' });
    const rec = await b.getRun(failed.id);
    assert.equal(rec?.history.length, 1, 'the failed attempt was moved into the stored history');
    assert.deepStrictEqual(rec?.history[0], {
      attempt: 1,
      worker: 'w',
      startedAt: now,
      finishedAt: now + 1,
      outcome: 'failed',
      error: '{"name":"Error","message":"x"}',
    });
    assert.equal(await b.prune(now + 10 ** 7), 1, 'the kept run; the replayed one is skipped');
    assert.ok(await b.getRun(failed.id), 'the replayed run is not pruned at its old expiry');
    assert.deepStrictEqual(await redis.zrange(`${b.prefix}:{emails}:exps`, 0, -1), [], 'the lists are consumed');
  });

  it('prunes runs of a short retention on time behind thousands of runs kept longer', async () => {
    const b = open();
    const now = Date.now();
    const long = Array.from({ length: 2500 }, () => run('emails', now));
    const short = run('emails', now);
    await b.enqueue([...long, short], now);
    const { runs } = await b.reserve({ workerId: 'w', queues: ['emails'], max: 3000, leaseMs: 30_000, now });
    assert.equal(runs.length, 2501);
    await b.settle(
      'w',
      [
        ...long.map((r) => ({ id: r.id, attempt: 1, outcome: 'succeeded' as const, result: null, retentionMs: 86_400_000 })),
        { id: short.id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: 60_000 },
      ],
      now + 1,
    );
    assert.equal(await b.prune(now + 30_000), 0, 'nothing has expired yet');
    assert.equal(await b.prune(now + 120_000), 1, 'the short run, though 2,500 unexpired runs come first in the index');
    assert.equal(await b.getRun(short.id), null);
    assert.equal((await b.counts(['emails'])).emails!.succeeded, 2500);
    assert.equal(await b.prune(now + 86_400_000 + 60_000), 2500, 'and the rest at the end of theirs');
    assert.equal((await b.counts(['emails'])).emails!.succeeded, 0);
    assert.deepStrictEqual(await keysOf(`${b.prefix}:{emails}:exp*`), [], 'no expiry list left');
  });

  it('prunes runs finished by earlier versions, which expire by a TTL, and their index entries', async () => {
    const b = open();
    const now = Date.now();
    const [ttl, gone] = [run('emails', now), run('emails', now)];
    await b.enqueue([ttl, gone], now);
    await b.reserve({ workerId: 'w', queues: ['emails'], max: 2, leaseMs: 30_000, now });
    await b.settle(
      'w',
      [ttl, gone].map((r) => ({ id: r.id, attempt: 1, outcome: 'succeeded' as const, result: null, retentionMs: 60_000 })),
      now + 1,
    );
    // As an earlier version left them: no expiry list, a TTL on the hash; one has expired already.
    await redis.del(...(await keysOf(`${b.prefix}:{emails}:exp*`)));
    await redis.pexpire(`${b.prefix}:{emails}:r:${rid(ttl.id)}`, 60_000);
    await redis.del(`${b.prefix}:{emails}:r:${rid(gone.id)}`);
    assert.equal(await b.prune(now + 2), 1, 'the entry of the run whose TTL ran out');
    assert.equal((await b.counts(['emails'])).emails!.succeeded, 1);
    assert.equal(await b.prune(now + 60_002), 1, 'the other at its expiresAt');
    assert.equal((await b.counts(['emails'])).emails!.succeeded, 0);
  });
});

describe('redis broker: scripts', () => {
  it('every script starts with a header documenting KEYS, ARGV and the return value', () => {
    const dir = new URL('../../../src/broker/redis/lua/', import.meta.url);
    const files = readdirSync(dir).filter((f) => f.endsWith('.lua'));
    assert.ok(files.length >= 12);
    for (const f of files) {
      const text = readFileSync(new URL(f, dir), 'utf8');
      assert.ok(text.startsWith('--[['), `${f} starts with a header comment`);
      const header = text.slice(0, text.indexOf(']]'));
      if ((LUA_LIBRARIES as readonly string[]).includes(f)) continue; // libraries: their own keys and fields
      for (const word of ['KEYS[1]', 'Returns']) assert.ok(header.includes(word), `${f}: header mentions ${word}`);
    }
  });

  it('keeps working after SCRIPT FLUSH (EVALSHA falls back to sending the script)', async () => {
    const b = open();
    const now = Date.now();
    await b.enqueue([run('emails', now)], now);
    assert.equal((await b.reserve({ workerId: 'w', queues: ['emails'], max: 5, leaseMs: 30_000, now })).runs.length, 1);
    await redis.script('FLUSH');
    // Several calls in flight at once, over several queues, right after the flush.
    const batch = [run('emails', now), run('sms', now), run('push', now)];
    const [enq] = await Promise.all([b.enqueue(batch, now), b.counts(['emails', 'sms', 'push'])]);
    assert.ok(enq.every((r) => r.created));
    await redis.script('FLUSH');
    const { runs } = await b.reserve({ workerId: 'w', queues: ['emails', 'sms', 'push'], max: 10, leaseMs: 30_000, now });
    assert.equal(runs.length, 3);
    await redis.script('FLUSH');
    assert.deepStrictEqual(
      await b.settle(
        'w',
        runs.map((r) => ({ id: r.id, attempt: r.attempt, outcome: 'succeeded' as const, result: null, retentionMs: 1000 })),
        now + 1,
      ),
      ['ok', 'ok', 'ok'],
    );
  });
});

describe('redis broker: reserve over several queues', () => {
  it('serves queues in the order requested and never hands out more than max', async () => {
    const b = open();
    const now = Date.now();
    const q = (name: string) => Array.from({ length: 5 }, () => run(name, now));
    const [a, bb, c] = [q('qa'), q('qb'), q('qc')];
    await b.enqueue([...a, ...bb, ...c], now);
    const first = await b.reserve({ workerId: 'w', queues: ['qa', 'qb', 'qc'], max: 7, leaseMs: 30_000, now });
    assert.deepStrictEqual(
      first.runs.map((r) => r.id),
      [...a, ...bb.slice(0, 2)].map((r) => r.id),
    );
    const second = await b.reserve({ workerId: 'w', queues: ['qc', 'qb'], max: 100, leaseMs: 30_000, now });
    assert.deepStrictEqual(
      second.runs.map((r) => r.id),
      [...c, ...bb.slice(2)].map((r) => r.id),
    );
    assert.deepStrictEqual((await b.counts(['qa', 'qb', 'qc'])).qb, {
      waiting: 0,
      queued: 0,
      scheduled: 0,
      active: 5,
      succeeded: 0,
      failed: 0,
      cancelled: 0,
    });
  });
});

describe('redis broker: corrupt records', () => {
  it('reserve fails unreadable runs with reason corrupt and keeps going', async () => {
    const b = open();
    const now = Date.now();
    const good = [run('emails', now), run('emails', now)];
    await b.enqueue(good, now);
    const base = `${b.prefix}:{emails}:`;
    const notHash = newRunId('emails', now);
    const noInput = newRunId('emails', now);
    const noState = newRunId('emails', now);
    const schedString = newRunId('emails', now);
    const activeString = newRunId('emails', now);
    await redis.set(`${base}r:${rid(notHash)}`, 'garbage');
    await redis.hset(`${base}r:${rid(noInput)}`, 's', 'q', 't', 'send_welcome_email');
    await redis.hset(`${base}r:${rid(noState)}`, 't', 'send_welcome_email', 'i', '{}');
    await redis.rpush(`${base}w:0`, rid(notHash), rid(noInput), rid(noState), rid(newRunId('emails', now)));
    await redis.set(`${base}r:${rid(schedString)}`, 'garbage');
    await redis.zadd(`${base}sched`, now - 1, rid(schedString));
    await redis.sadd(`${base}r:${rid(activeString)}`, 'a', 'set');
    await redis.zadd(`${base}active`, now - 1, rid(activeString));

    const { runs } = await b.reserve({ workerId: 'w', queues: ['emails'], max: 10, leaseMs: 30_000, now });
    assert.deepStrictEqual(
      runs.map((r) => r.id),
      good.map((r) => r.id),
      'the readable runs are reserved',
    );
    for (const id of [notHash, noInput, noState, schedString, activeString]) {
      const rec = await b.getRun(id);
      assert.equal(rec?.state, 'failed', `${id} failed`);
      const err = JSON.parse(rec.error!) as { reason: string; message: string };
      assert.equal(err.reason, 'corrupt');
      assert.match(err.message, new RegExp(id.replace('.', '\\.')));
    }
    assert.equal((await b.counts(['emails'])).emails?.failed, 5);
    assert.deepStrictEqual((await b.reserve({ workerId: 'w', queues: ['emails'], max: 10, leaseMs: 30_000, now })).runs, []);
  });

  it('getRun never throws on an unreadable run: it reads as failed, reason corrupt, naming the key; cancel and retry say what is wrong', async () => {
    const b = open();
    const id = newRunId('emails');
    const key = `${b.prefix}:{emails}:r:${rid(id)}`;
    await redis.set(key, 'garbage');
    const rec = await b.getRun(id);
    assert.equal(rec?.state, 'failed');
    const err = JSON.parse(rec.error!) as { reason: string; message: string };
    assert.equal(err.reason, 'corrupt');
    assert.ok(err.message.includes(id) && err.message.includes(key), err.message);
    await assert.rejects(b.cancel(id, Date.now()), (e: unknown) => e instanceof CorruptRunError && e.message.includes(key));
    await assert.rejects(b.retry(id, Date.now()), (e: unknown) => e instanceof CorruptRunError && e.message.includes(key));
    const noState = newRunId('emails');
    await redis.hset(`${b.prefix}:{emails}:r:${rid(noState)}`, 't', 'x', 'i', '{}', 's', '?');
    const rec2 = await b.getRun(noState);
    assert.equal(rec2?.state, 'failed');
    assert.match(rec2.error!, /unknown state code/);
    assert.equal(rec2.task, 'x', 'the readable fields are kept');
  });
});

describe('redis broker: wake-ups', () => {
  it('a token taken by a waiter that gave up is put back for the next one', async () => {
    const a = open();
    const other = open({ prefix: a.prefix });
    const c = new AbortController();
    const waiting = a.waitForWork(['emails'], null, c.signal);
    await new Promise((r) => setTimeout(r, 50)); // let the BLPOP start
    c.abort();
    await waiting;
    await other.enqueue([run('emails', Date.now())], Date.now()); // the lingering BLPOP of `a` takes the token
    await waitFor(async () => (await redis.llen(`${a.prefix}:{emails}:wake`)) === 1, { message: 'token put back' });
    const third = open({ prefix: a.prefix });
    await within(third.waitForWork(['emails'], null, new AbortController().signal), 10_000, 'waitForWork with a token waiting');
    assert.equal(await redis.llen(`${a.prefix}:{emails}:wake`), 0, 'the next waiter was woken by that token (it took it)');
  });

  it('close() resolves pending waits', async () => {
    const b = open();
    const w = b.waitForWork(['emails', 'sms'], null, new AbortController().signal);
    const waiting = settledFlag(w);
    await settleTurns();
    assert.equal(waiting.settled, false, 'nothing to wake for before close()');
    await within(b.close(), 10_000, 'close with a pending waitForWork');
    await within(w, 10_000, 'the pending wait resolves on close');
  });
});

/** A TCP proxy in front of Redis that can drop every connection and refuse new ones. */
class TcpProxy {
  server: Server | undefined;
  sockets = new Set<Socket>();
  port = 0;
  async start(port = 0): Promise<void> {
    const target = new URL(URL_);
    this.server = createServer((client) => {
      const upstream = tcpConnect(Number(target.port || 6379), target.hostname);
      this.sockets.add(client);
      this.sockets.add(upstream);
      client.pipe(upstream).pipe(client);
      const drop = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
    });
    await new Promise<void>((resolve) => this.server!.listen(port, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
  }
  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }
}

describe('redis broker: connection', () => {
  it('ping and commands fail with BrokerUnavailableError on the refused connection, not by waiting out connectWaitMs', async () => {
    // connectWaitMs far beyond the test's own limit: a rejection at all shows the broker failed on
    // the refused connection instead of waiting out the bound.
    const b = new RedisBroker({ url: 'redis://127.0.0.1:1', prefix: uniquePrefix('errand-rt'), connectWaitMs: 3_600_000 });
    try {
      await within(
        assert.rejects(b.ping(), (err: Error) => {
          assert.ok(err instanceof BrokerUnavailableError, String(err));
          assert.match(
            err.message,
            /^Redis at redis:\/\/127\.0\.0\.1:1 is unreachable: could not connect \(connect ECONNREFUSED 127\.0\.0\.1:1\): nothing accepts connections there/,
          );
          return true;
        }),
        30_000,
        'ping on a refused connection',
      );
      await within(
        assert.rejects(b.enqueue([run('emails', Date.now())], Date.now()), BrokerUnavailableError),
        30_000,
        'enqueue on a refused connection',
      );
      await within(assert.rejects(b.getRun(newRunId('emails')), BrokerUnavailableError), 30_000, 'getRun on a refused connection');
      const until = Date.now() + 100;
      await within(
        b.waitForWork(['emails'], until, new AbortController().signal),
        30_000,
        'waitForWork returns at until while Redis is down',
      );
    } finally {
      await within(b.close(), 10_000, 'close of an unconnected broker');
    }
  });

  it('redis+cluster:// against a server that is not a cluster: BrokerConfigError saying so and naming redis://', async () => {
    const { hostname, port } = new URL(URL_);
    const b = new RedisBroker({ url: `redis+cluster://${hostname}:${port || 6379}`, prefix: uniquePrefix('errand-rt') });
    try {
      await within(
        assert.rejects(b.ping(), (err: Error) => {
          assert.ok(err instanceof BrokerConfigError, String(err));
          assert.match(err.message, /is not a cluster \(ERR This instance has cluster support disabled\): .* use redis:\/\//);
          return true;
        }),
        30_000,
        'ping of a cluster broker on a single server',
      );
    } finally {
      await b.close();
    }
  });

  it('a server that is not Redis (here HTTP): BrokerConfigError naming what answered, not a consequent "Stream isn\'t writeable"', async () => {
    const server = createHttpServer((_req, res) => res.end());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    // A db index: the SELECT after connecting is the command ioredis then fails as "Stream isn't writeable".
    const b = new RedisBroker({ url: `redis://127.0.0.1:${port}/9`, prefix: uniquePrefix('errand-rt') });
    try {
      await within(
        assert.rejects(b.ping(), (err: Error) => {
          assert.ok(err instanceof BrokerConfigError, String(err));
          assert.equal(
            err.message,
            `The server at redis://127.0.0.1:${port}/9 does not speak the Redis protocol (its reply began with "H": an HTTP server or proxy?): check the host and port of the broker URL, and use rediss:// for a TLS port`,
          );
          return true;
        }),
        30_000,
        'ping of a server that is not Redis',
      );
    } finally {
      await b.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('waits for its first connection longer than connectWaitMs: a process just started does not fail while it connects', async () => {
    // A server that takes the connection but answers only once released: the first connection is
    // in progress, not failed, for as long as it is held.
    const target = new URL(URL_);
    let release: () => void = () => {};
    const released = new Promise<void>((r) => (release = r));
    const held = new Set<Socket>();
    let seen: () => void = () => {};
    const connected = new Promise<void>((r) => (seen = r));
    const server = createServer((client) => {
      held.add(client);
      seen();
      void released.then(() => {
        const upstream = tcpConnect(Number(target.port || 6379), target.hostname);
        held.add(upstream);
        client.pipe(upstream).pipe(client);
        client.on('error', () => upstream.destroy());
        upstream.on('error', () => client.destroy());
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const prefix = uniquePrefix('errand-rt');
    prefixes.add(prefix);
    const b = new RedisBroker({ url: `redis://127.0.0.1:${port}`, prefix, connectWaitMs: 50 });
    try {
      const ping = b.ping();
      const pending = settledFlag(ping);
      await within(connected, 10_000, 'the connection reaches the server');
      // Held six times connectWaitMs: a reconnection would have failed by now; a first connection waits.
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(pending.settled, false, 'the first command still waits for the first connection');
      release();
      await within(ping, 10_000, 'ping once the connection completes');
      await b.enqueue([run('emails', Date.now())], Date.now());
      assert.equal((await b.counts(['emails'])).emails?.queued, 1);
    } finally {
      release();
      await b.close();
      for (const s of held) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('logs a lost connection, fails commands while it is down, and recovers by itself', async () => {
    const proxy = new TcpProxy();
    await proxy.start();
    const lines: { msg: string; level: number }[] = [];
    const logger = pino(
      { level: 'warn' },
      new Writable({
        write(chunk, _enc, cb) {
          lines.push(JSON.parse(String(chunk)));
          cb();
        },
      }),
    );
    const prefix = uniquePrefix('errand-rt');
    prefixes.add(prefix);
    const b = new RedisBroker({ url: `redis://127.0.0.1:${proxy.port}`, prefix, logger, connectWaitMs: 1000 });
    brokers.push(b);
    await b.ping();
    await b.enqueue([run('emails', Date.now())], Date.now());

    const port = proxy.port;
    await proxy.stop();
    await waitFor(() => lines.some((l) => /lost/.test(l.msg)), { message: 'a warn line about the lost connection' });
    await assert.rejects(b.ping(), BrokerUnavailableError);
    await assert.rejects(b.counts(['emails']), BrokerUnavailableError);

    await proxy.start(port);
    await waitFor(
      async () => {
        await b.ping();
        return true;
      },
      { timeoutMs: 10_000, message: 'the broker reconnects by itself' },
    );
    assert.equal((await b.counts(['emails'])).emails?.queued, 1);
    assert.ok(
      lines.some((l) => /restored/.test(l.msg)),
      `a warn line about the recovery: ${JSON.stringify(lines)}`,
    );
    await b.close();
    await proxy.stop();
  });
});

describe('redis broker: URLs and options', () => {
  it('parses single, TLS and cluster URLs', () => {
    assert.deepStrictEqual(parseRedisUrl('redis://127.0.0.1:6379/2'), { kind: 'single', url: 'redis://127.0.0.1:6379/2', tls: false });
    assert.equal((parseRedisUrl('rediss://user:pw@cache.example.com:6380') as { tls: boolean }).tls, true);
    assert.deepStrictEqual(parseRedisUrl('redis+cluster://user:p%40ss@10.0.0.1:7000,10.0.0.2:7001,node-3'), {
      kind: 'cluster',
      nodes: [
        { host: '10.0.0.1', port: 7000 },
        { host: '10.0.0.2', port: 7001 },
        { host: 'node-3', port: 6379 },
      ],
      username: 'user',
      password: 'p@ss',
      tls: false,
    });
    assert.throws(() => parseRedisUrl('redis+cluster://'), ConfigError);
    assert.throws(() => parseRedisUrl('redis+cluster://a:1,,b:2'), ConfigError);
    assert.throws(() => parseRedisUrl('redis://'), ConfigError);
  });

  it('refuses a prefix with braces (it would break the hash tags)', () => {
    assert.throws(() => new RedisBroker({ url: URL_, prefix: 'a{b}' }), ConfigError);
    assert.throws(() => new RedisBroker({ url: URL_, maxLeaseLosses: 0 }), ConfigError);
  });
});

describe('redis broker: inspection', () => {
  it('lists newest first with every filter, in every state, pages without gaps or repeats', async () => {
    const b = open();
    const t0 = Date.now();
    const all: NewRun[] = [];
    for (let i = 0; i < 150; i++) {
      all.push(
        run(i % 3 ? 'qa' : 'qb', t0, {
          task: i % 2 ? 't.one' : 't.two',
          priority: i % 5 === 0 ? 3 : 0,
          runAt: i % 7 === 0 ? t0 + 60_000 : t0,
        }),
      );
    }
    for (let i = 0; i < all.length; i += 40) await b.enqueue(all.slice(i, i + 40), t0);
    const { runs } = await b.reserve({ workerId: 'w', queues: ['qa', 'qb'], max: 70, leaseMs: 60_000, now: t0 });
    await b.settle(
      'w',
      runs.slice(0, 60).map((r, i) =>
        i % 4 === 0
          ? { id: r.id, attempt: 1, outcome: 'failed' as const, error: '{}', retentionMs: 60_000 }
          : i % 4 === 1
            ? { id: r.id, attempt: 1, outcome: 'retry' as const, error: '{}', runAt: t0 } // back in the queue, out of order
            : { id: r.id, attempt: 1, outcome: 'succeeded' as const, result: '1', retentionMs: 60_000 },
      ),
      t0,
    );
    for (const r of all.slice(140)) await b.cancel(r.id, t0);
    const records = (await Promise.all(all.map((r) => b.getRun(r.id)))).map((r) => r!);
    const states = new Set(records.map((r) => r.state));
    assert.equal(states.size, 6, `every state is present: ${[...states].join(', ')}`);
    const filters = [
      {},
      { queue: 'qa' },
      { task: 't.one' },
      { state: 'failed' as const },
      { state: 'queued' as const },
      { state: 'scheduled' as const },
      { state: 'active' as const },
      { queue: 'qb', state: 'succeeded' as const },
      { task: 't.two', state: 'queued' as const },
      { queue: 'qa', task: 't.one' },
      { queue: 'qa', task: 't.two', state: 'cancelled' as const },
    ];
    for (const f of filters) {
      const expected = records
        .filter(
          (r) =>
            (!('queue' in f) || r.queue === f.queue) && (!('task' in f) || r.task === f.task) && (!('state' in f) || r.state === f.state),
        )
        .map((r) => r.id)
        .reverse();
      const seen: string[] = [];
      let cursor: string | undefined;
      for (let page = 0; page < 100; page++) {
        const res = await b.listRuns({ ...f, limit: 7, ...(cursor ? { cursor } : {}) });
        assert.ok(res.runs.length <= 7);
        seen.push(...res.runs.map((r) => r.id));
        if (!res.next) break;
        cursor = res.next;
      }
      assert.deepStrictEqual(seen, expected, `listRuns(${JSON.stringify(f)})`);
    }
    await assert.rejects(b.listRuns({ limit: 5, cursor: 'garbage' }), ConfigError);
    assert.deepStrictEqual(await b.listQueues(), ['qa', 'qb']);
  });

  it('a listing that examines at most listCap entries per structure goes on from where it stopped, without gaps', async () => {
    const b = open({ listCap: 40 });
    const t0 = Date.now();
    const all = Array.from({ length: 300 }, (_, i) => run('lc', t0, { task: i % 60 === 7 ? 'rare' : 'common' }));
    await b.enqueue(all, t0);
    const { runs } = await b.reserve({ workerId: 'w', queues: ['lc'], max: 200, leaseMs: 60_000, now: t0 });
    await b.settle(
      'w',
      runs.map((r) => ({ id: r.id, attempt: 1, outcome: 'succeeded' as const, result: null, retentionMs: 60_000 })),
      t0,
    );
    for (const f of [{ task: 'rare' }, { task: 'rare', state: 'succeeded' as const }, { task: 'rare', state: 'queued' as const }, {}]) {
      const expected = all
        .filter((r, i) => (f.task === undefined || r.task === f.task) && (!('state' in f) || (f.state === 'succeeded') === i < 200))
        .map((r) => r.id)
        .reverse();
      const seen: string[] = [];
      let cursor: string | undefined;
      let pages = 0;
      for (; pages < 200; pages++) {
        const res = await b.listRuns({ ...f, limit: 3, ...(cursor ? { cursor } : {}) });
        seen.push(...res.runs.map((r) => r.id));
        if (!res.next) break;
        cursor = res.next;
      }
      assert.deepStrictEqual(seen, expected, `listRuns(${JSON.stringify(f)}) in ${pages + 1} pages`);
    }
  });

  it('pause keeps a queue out of reserve until resumed (which wakes the waiters); purge and retryFailed work in bulk', async () => {
    const b = open();
    const t0 = Date.now();
    await b.enqueue([run('p', t0), run('p', t0), run('p', t0, { runAt: t0 + 10 })], t0);
    await b.pause('p');
    assert.deepStrictEqual(await b.pausedQueues(), ['p']);
    assert.deepStrictEqual(await b.reserve({ workerId: 'w', queues: ['p'], max: 10, leaseMs: 1000, now: t0 + 100 }), {
      runs: [],
      nextAt: null,
    });
    await redis.del(`${b.prefix}:{p}:wake`); // the enqueue's token: the waiter below must be woken by resume
    const ac = new AbortController();
    const waiting = b.waitForWork(['p'], null, ac.signal).then(() => 'woken');
    await new Promise((r) => setTimeout(r, 50));
    await b.resume('p');
    assert.equal(await within(waiting, 5000, 'resume wakes the waiters'), 'woken');
    assert.deepStrictEqual(await b.pausedQueues(), []);
    const { runs } = await b.reserve({ workerId: 'w', queues: ['p'], max: 10, leaseMs: 1000, now: t0 + 100 });
    assert.equal(runs.length, 3);
    await b.settle(
      'w',
      runs.map((r) => ({ id: r.id, attempt: 1, outcome: 'failed' as const, error: '{}', retentionMs: 60_000 })),
      t0 + 200,
    );
    assert.equal(await b.retryFailed('p', 'no.such.task', t0 + 300), 0);
    assert.equal(await b.retryFailed('p', undefined, t0 + 300), 3);
    assert.deepStrictEqual((await b.counts(['p'])).p, {
      waiting: 0,
      queued: 3,
      scheduled: 0,
      active: 0,
      succeeded: 0,
      failed: 0,
      cancelled: 0,
    });
    await b.enqueue([run('p', t0, { runAt: t0 + 60_000 })], t0 + 300);
    assert.equal(await b.purge('p', t0 + 400), 4);
    assert.deepStrictEqual((await b.counts(['p'])).p, {
      waiting: 0,
      queued: 0,
      scheduled: 0,
      active: 0,
      succeeded: 0,
      failed: 0,
      cancelled: 0,
    });
  });

  it('retryFailed of one task skips the others, over several slices', async () => {
    const b = open();
    const t0 = Date.now();
    const runs = Array.from({ length: 2500 }, (_, i) => run('rf', t0, { task: i % 2 ? 'odd' : 'even' }));
    await b.enqueue(runs, t0);
    const { runs: got } = await b.reserve({ workerId: 'w', queues: ['rf'], max: 2500, leaseMs: 60_000, now: t0 });
    await b.settle(
      'w',
      got.map((r) => ({ id: r.id, attempt: 1, outcome: 'failed' as const, error: '{}', retentionMs: 60_000 })),
      t0,
    );
    assert.equal(await b.retryFailed('rf', 'odd', t0 + 1), 1250);
    assert.deepStrictEqual((await b.counts(['rf'])).rf, {
      waiting: 0,
      queued: 1250,
      scheduled: 0,
      active: 0,
      succeeded: 0,
      failed: 1250,
      cancelled: 0,
    });
    assert.equal(await b.purge('rf', t0 + 2), 1250);
  });

  it('keeps per-minute stats and a worker registry', async () => {
    const b = open();
    const minute = Math.floor(Date.now() / 60_000) * 60_000;
    const t0 = minute + 1000;
    await b.enqueue([run('s', t0), run('s', t0), run('s', t0)], t0);
    const { runs } = await b.reserve({ workerId: 'w', queues: ['s'], max: 3, leaseMs: 60_000, now: t0 + 3 });
    const [a, c, d] = runs as unknown as [{ id: string }, { id: string }, { id: string }];
    await b.settle(
      'w',
      [
        { id: a.id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: 60_000 },
        { id: c.id, attempt: 1, outcome: 'failed', error: '{}', retentionMs: 60_000 },
        { id: d.id, attempt: 1, outcome: 'retry', error: '{}', runAt: t0 + 5000 },
      ],
      t0 + 40,
    );
    const stats = await b.stats(['s', 'none'], minute);
    assert.deepStrictEqual(stats.none, []);
    assert.equal(stats.s?.length, 1);
    const m = stats.s![0]!;
    assert.deepStrictEqual([m.minute, m.enqueued, m.succeeded, m.failed, m.retried], [minute, 3, 1, 1, 1]);
    assert.deepStrictEqual(m.wait, [0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 'three runs waited 3 ms (bucket <= 5 ms)');
    assert.deepStrictEqual(m.run, [0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 'three attempts ran 37 ms (bucket <= 50 ms)');
    const later = await b.reserve({ workerId: 'w', queues: ['s'], max: 3, leaseMs: 60_000, now: t0 + 5010 });
    assert.equal(later.runs.length, 1);
    const m2 = (await b.stats(['s'], minute)).s![0]!;
    assert.equal(m2.wait[3], 1, 'a retried run waits from its due time (10 ms, bucket <= 10 ms)');

    const info = { id: 'w1', host: 'h', pid: 1, queues: ['s'], concurrency: 4, active: 2, startedAt: t0 };
    await b.heartbeat(info, 15_000, t0);
    await b.heartbeat({ ...info, id: 'w2' }, 15_000, t0);
    await b.removeWorker('w2');
    assert.deepStrictEqual(await b.listWorkers(t0 + 20_000), [{ ...info, lastSeen: t0, ttlMs: 15_000 }]);
    assert.deepStrictEqual(await b.listWorkers(t0 + 2 * 3_600_000), [], 'forgotten after an hour');
  });
});
