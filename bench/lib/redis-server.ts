/**
 * The benchmark's own Redis: a `redis-server` on a free port, no persistence, killed at the end. Only
 * this server is ever flushed; the machine's shared Redis is never touched.
 */
import { execFileSync } from 'node:child_process';
import { Redis } from 'ioredis';
import { type Child, freePort, spawnCmd, waitUntil } from './proc.ts';

export interface BenchRedis {
  url: string;
  port: number;
  version: string;
  client: Redis;
  child: Child;
  /** Empties the benchmark's own server (never the shared one). */
  flush(): Promise<void>;
  usedMemory(): Promise<number>;
  /** CPU time used by redis-server so far (user + system), in microseconds. */
  cpuUs(): Promise<number>;
  /** Sum of `MEMORY USAGE key SAMPLES 0` over every key. */
  keyBytes(): Promise<{ bytes: number; keys: number }>;
  commandStats(): Promise<Record<string, { calls: number; usec: number }>>;
  stop(): Promise<void>;
}

export function redisServerAvailable(): string | null {
  try {
    return execFileSync('redis-server', ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    return null;
  }
}

export async function startRedis(name = 'redis-server'): Promise<BenchRedis> {
  const port = await freePort();
  const child = spawnCmd(name, 'redis-server', [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--protected-mode',
    'no',
    '--maxclients',
    '10000',
    '--dir',
    '/tmp',
    '--dbfilename',
    `errand-bench-${port}.rdb`,
  ]);
  const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
  client.on('error', () => {}); // connection errors surface as rejected commands
  await waitUntil(
    async () => {
      if (child.exited) throw new Error(`redis-server exited (${child.exitInfo()}): ${child.tail()}`);
      if (client.status !== 'ready') await client.connect().catch(() => undefined);
      return (await client.ping()) === 'PONG';
    },
    10_000,
    `redis-server on port ${port}`,
    50,
  );
  const info = await client.info('server');
  const version = /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown';
  const ownPort = port;
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    version,
    client,
    child,
    async flush() {
      // Belt and braces: this client was created for our own server's port only.
      if ((client.options.port ?? 0) !== ownPort) throw new Error('refusing to flush a Redis that the benchmark did not start');
      await client.flushall();
      await client.config('RESETSTAT');
      await client.call('MEMORY', 'PURGE').catch(() => undefined);
    },
    async usedMemory() {
      const m = await client.info('memory');
      return Number(/used_memory:(\d+)/.exec(m)?.[1] ?? Number.NaN);
    },
    async cpuUs() {
      const m = await client.info('cpu');
      const user = Number(/used_cpu_user:([\d.]+)/.exec(m)?.[1] ?? Number.NaN);
      const sys = Number(/used_cpu_sys:([\d.]+)/.exec(m)?.[1] ?? Number.NaN);
      return Math.round((user + sys) * 1e6);
    },
    async keyBytes() {
      let cursor = '0';
      let bytes = 0;
      let keys = 0;
      do {
        const [next, batch] = await client.scan(cursor, 'COUNT', 1000);
        cursor = next;
        if (batch.length) {
          const p = client.pipeline();
          for (const k of batch) p.call('MEMORY', 'USAGE', k, 'SAMPLES', '0');
          const res = (await p.exec()) ?? [];
          for (const [err, v] of res) if (!err && typeof v === 'number') bytes += v;
          keys += batch.length;
        }
      } while (cursor !== '0');
      return { bytes, keys };
    },
    async commandStats() {
      const text = await client.info('commandstats');
      const out: Record<string, { calls: number; usec: number }> = {};
      for (const m of text.matchAll(/cmdstat_([^:]+):calls=(\d+),usec=(\d+)/g)) out[m[1]!] = { calls: Number(m[2]), usec: Number(m[3]) };
      return out;
    },
    async stop() {
      try {
        await client.call('SHUTDOWN', 'NOSAVE');
      } catch {
        // the connection drops as the server exits
      }
      client.disconnect();
      await child.stop(3000);
    },
  };
}
