import { dirname, resolve } from 'node:path';
import type { ConnectionOptions as TlsOptions } from 'node:tls';
import type { Logger } from 'pino';
import { ConfigError } from '../core/errors.ts';
import { makeDirs } from '../core/fs.ts';
import { redactUrl, redisUrlProblem } from '../core/urls.ts';
import { isMemoryUri } from './sqlite/memory-uri.ts';
import type { Broker, BrokerOptions } from './types.ts';

export const DEFAULT_SQLITE_PATH = './data/errand.db';

/** The broker URL to use when none is given: `ERRAND_BROKER_URL`, else `REDIS_URL`, else the embedded SQLite file. */
export function defaultBrokerUrl(env: NodeJS.ProcessEnv = process.env): string {
  return env.ERRAND_BROKER_URL || env.REDIS_URL || `sqlite:${DEFAULT_SQLITE_PATH}`;
}

export interface ConnectOptions extends BrokerOptions {
  logger?: Logger;
  /** Key prefix (Redis). Default `errand`. */
  prefix?: string;
  /**
   * TLS options for `rediss://` and `rediss+cluster://` URLs (Node's `tls.connect` options, e.g.
   * `{ ca }` to trust a private CA). Default: the CA file named by `ERRAND_REDIS_CA`, else the
   * system's CAs.
   */
  tls?: TlsOptions;
  /**
   * Redis: use the prefix only if Errand's keys are under it; on an empty one calls fail with
   * `EmptyPrefixError` and nothing is written (`RedisBrokerOptions.existingPrefix`). Default false.
   */
  existingPrefix?: boolean;
}

/**
 * Opens a broker from a URL:
 * - `redis://[user:pass@]host:port[/db]`, `rediss://...` (TLS): Redis;
 * - `redis+cluster://[user:pass@]host:port[,host:port...]`, `rediss+cluster://...` (TLS): Redis
 *   Cluster (seed nodes; see docs/cluster.md);
 * - `sqlite:path/to/file.db`, `sqlite:///absolute/path.db`, `sqlite::memory:`: the embedded SQLite file;
 *   `sqlite:file:<name>?mode=memory&cache=shared`: a SQLite memory URI (`memoryUri` of errand/testing),
 *   storage in memory that any thread of this process can open by the same URI.
 */
export async function connectBroker(url: string, options: ConnectOptions = {}): Promise<Broker> {
  if (typeof url !== 'string' || url.trim() === '')
    throw new ConfigError('Broker URL is empty: give redis://host:port or sqlite:path/to/file.db');
  const scheme = url.slice(0, url.indexOf(':') + 1).toLowerCase();
  if (scheme === 'redis:' || scheme === 'rediss:' || scheme === 'redis+cluster:' || scheme === 'rediss+cluster:') {
    const problem = redisUrlProblem(url);
    if (problem) throw new ConfigError(`Broker URL "${redactUrl(url)}" ${problem}`);
    const { RedisBroker } = await import('./redis/redis-broker.ts');
    if (options.tls === undefined && scheme.startsWith('rediss')) {
      const { tlsFromEnv } = await import('./redis/connection.ts');
      const tls = tlsFromEnv();
      if (tls) return new RedisBroker({ url, ...options, tls });
    }
    return new RedisBroker({ url, ...options });
  }
  if (scheme === 'sqlite:') {
    let path = url.slice('sqlite:'.length);
    if (path.startsWith('//')) path = path.slice(2);
    if (path === '') throw new ConfigError(`Broker URL "${url}" has no file path: use sqlite:path/to/file.db`);
    if (path !== ':memory:' && !isMemoryUri(path)) {
      path = resolve(path);
      try {
        makeDirs(dirname(path));
      } catch (err) {
        throw new ConfigError(`Cannot create the folder for the SQLite file ${path}: ${(err as Error).message}`);
      }
    }
    const { SqliteBroker } = await import('./sqlite/sqlite-broker.ts');
    return new SqliteBroker({ path, ...options });
  }
  throw new ConfigError(
    `Broker URL "${redactUrl(url)}" is not supported: use redis://host:port[/db], rediss://host:port (TLS), redis+cluster://host:port,..., rediss+cluster://... or sqlite:path/to/file.db`,
  );
}

/**
 * True when a `sqlite:` URL names a SQLite memory URI: storage in the memory of the process that
 * opened it, which a tool started on its own (`errand inspect`, `errand dashboard`) would find empty.
 */
export function isSqliteMemoryUrl(url: string): boolean {
  if (!url.toLowerCase().startsWith('sqlite:')) return false;
  let path = url.slice('sqlite:'.length);
  if (path.startsWith('//')) path = path.slice(2);
  return isMemoryUri(path);
}

/**
 * The absolute path of the file a `sqlite:` URL names, or undefined for any other URL (and for
 * `sqlite::memory:` and a memory URI). Tools that only look at a broker (`errand inspect`, `errand dashboard`) check
 * that it exists: opening a SQLite path creates the file, and a typo would become an empty broker.
 */
export function sqliteFileOf(url: string): string | undefined {
  if (!url.toLowerCase().startsWith('sqlite:')) return undefined;
  let path = url.slice('sqlite:'.length);
  if (path.startsWith('//')) path = path.slice(2);
  return path === '' || path === ':memory:' || isMemoryUri(path) ? undefined : resolve(path);
}

/** How long the command-line tools wait for a broker's first answer, in ms. */
export const PING_TIMEOUT_MS = 5000;

/** `broker.ping()`, failing with "no answer within N ms" when the broker does not answer in time. */
export async function pingWithin(broker: Broker, ms = PING_TIMEOUT_MS): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      broker.ping(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
