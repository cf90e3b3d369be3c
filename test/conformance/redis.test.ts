/**
 * The broker conformance suite against Redis (`ERRAND_TEST_REDIS_URL`, default redis://127.0.0.1:6379).
 * Each fresh broker gets its own key prefix; the keys are deleted (by prefix, never FLUSHDB) at the end.
 */
import { after } from 'node:test';
import { Redis } from 'ioredis';
import { RedisBroker } from '../../src/broker/redis/redis-broker.ts';
import type { Broker } from '../../src/broker/types.ts';
import { dropRedisPrefixes } from '../fixtures/brokers.ts';
import { uniquePrefix } from '../helpers.ts';
import { QueueKeys, splitRunId } from '../../src/broker/redis/codec.ts';
import { inspectorConformance } from './inspector.ts';
import { brokerConformance, type MakeBroker } from './suite.ts';

const url = process.env.ERRAND_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefixOf = new WeakMap<Broker, string>();
const prefixes = new Set<string>();

const makeBroker: MakeBroker = async (opts = {}) => {
  const { sameStorageAs, ...options } = opts;
  const prefix = sameStorageAs ? prefixOf.get(sameStorageAs) : uniquePrefix('errand-test');
  if (!prefix) throw new Error('sameStorageAs must be a broker made by this factory');
  prefixes.add(prefix);
  const broker = new RedisBroker({ url, prefix, ...options });
  prefixOf.set(broker, prefix);
  return broker;
};

brokerConformance('redis', makeBroker, {
  connection: (broker) => ({ url, options: { prefix: prefixOf.get(broker) } }),
  deleteRunBehindBroker: async (broker, id) => {
    const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await redis.connect();
      const parts = splitRunId(id);
      if (!parts) throw new Error(`not a run id: ${id}`);
      await redis.del(new QueueKeys(prefixOf.get(broker) ?? '', parts.queue).run(parts.rid));
    } finally {
      redis.disconnect();
    }
  },
  elapse: async (broker, ms) => {
    const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await redis.connect();
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefixOf.get(broker)}:*`, 'COUNT', 1000);
        cursor = next;
        for (const key of keys) {
          const ttl = await redis.pttl(key);
          if (ttl < 0) continue; // no TTL (or gone)
          if (ttl <= ms) await redis.del(key);
          else await redis.pexpire(key, ttl - ms);
        }
      } while (cursor !== '0');
    } finally {
      redis.disconnect();
    }
  },
  unreachable: () => new RedisBroker({ url: 'redis://127.0.0.1:1', prefix: uniquePrefix('errand-test') }),
});
inspectorConformance('redis', makeBroker, { connection: (broker) => ({ url, options: { prefix: prefixOf.get(broker) } }) });

// Delete every key of the prefixes this file used (by prefix, never a flush).
after(async () => {
  await dropRedisPrefixes(prefixes, url);
});
