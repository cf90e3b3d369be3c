/**
 * What every part of the Redis broker shares (`redis-broker.ts` assembles the parts): its options,
 * key names, the command connection (behind a `ConnectionGate`), and the set of known queues.
 */
import type { Logger } from 'pino';
import { BrokerUnavailableError, ConfigError } from '../../core/errors.ts';
import { QUEUE_NAME } from '../../core/ids.ts';
import { show } from '../../core/show.ts';
import { redactUrl as redact } from '../../core/urls.ts';
import { checkPrefix, DEFAULTS, nonNegativeMs, positiveInt } from '../shared/options.ts';
import type { BrokerOptions } from '../types.ts';
import { QueueKeys } from './codec.ts';
import { checkEviction } from './eviction.ts';
import { ConnectionGate, createClient, parseRedisUrl, type RedisClient, type RedisTarget, type TlsOptions } from './connection.ts';
import { LayoutGuard } from './layout.ts';
import { defineScripts } from './scripts.ts';

export interface RedisBrokerOptions extends BrokerOptions {
  /** `redis://[user:pass@]host:port[/db]`, `rediss://...` (TLS), `redis+cluster://host:port[,host:port...]`, `rediss+cluster://...`. */
  url: string;
  /**
   * Node `tls.connect` options (e.g. `{ ca }` for a private CA, `{ cert, key }` for client
   * certificates). Given, every connection speaks TLS, whatever the scheme. Default: TLS with the
   * system's CAs for `rediss://` URLs, none otherwise. (`connectBroker` reads `ERRAND_REDIS_CA`.)
   */
  tls?: TlsOptions;
  /** Prefix of every key. Default `errand`. */
  prefix?: string;
  /** Disconnects and reconnects are logged at warn. */
  logger?: Logger;
  /**
   * Retention of cancelled runs stored without one of their own (`NewRun.cancelledRetentionMs`), in
   * ms. Default 86400000 (1 day), the task default for cancelled runs.
   */
  cancelledRetentionMs?: number;
  /**
   * How long a command waits for a connection in progress before failing with
   * `BrokerUnavailableError`, in ms. While Redis is known to be down, commands fail at once.
   * Default 2000. A client's first connection is waited for up to the connect timeout (10 s) when
   * that is longer: a process just started does not fail its first commands while it connects.
   */
  connectWaitMs?: number;
  /**
   * Use the prefix only if Errand's keys are under it (a layout record or queues): on an empty
   * prefix every call fails with `EmptyPrefixError` (a `BrokerConfigError`) and nothing is written,
   * where by default the first call records the layout there. For tools that look at what an app
   * stored (the CLI's admin commands): a mistyped prefix leaves no key behind. Default false.
   */
  existingPrefix?: boolean;
  /**
   * Entries `listRuns` examines per structure of a queue in one call (a page stops there and the
   * next one goes on). Default 20000.
   */
  listCap?: number;
}

/** Entries a listing examines per structure of a queue (the listing then goes on from there). */
const LIST_CAP = 20_000;
const NAME = 'RedisBroker';

export class RedisCore {
  readonly prefix: string;
  readonly target: RedisTarget;
  readonly tls: TlsOptions | undefined;
  /** Where Redis is, for messages (credentials redacted). */
  readonly where: string;
  readonly logger: Logger | undefined;
  readonly maxLeaseLosses: number;
  readonly failedRetentionMs: number;
  readonly cancelledRetentionMs: number;
  readonly connectWaitMs: number;
  readonly listCap: number;
  readonly main: ConnectionGate;
  /** The layout version of this prefix (layout.ts), checked once before the first command. */
  readonly layout: LayoutGuard;
  readonly queuesKey: string;
  readonly pausedKey: string;
  readonly workersKey: string;
  readonly eventsChannel: string;
  readonly cancelsChannel: string;
  readonly #keys = new Map<string, QueueKeys>();
  /** Queues already added to the `<prefix>:queues` set by this instance. */
  readonly #knownQueues = new Set<string>();
  closed = false;

  constructor(options: RedisBrokerOptions) {
    if (!options || typeof options.url !== 'string') throw new ConfigError('RedisBroker: options.url is required (redis://host:port)');
    this.target = parseRedisUrl(options.url);
    if (options.tls !== undefined && (options.tls === null || typeof options.tls !== 'object')) {
      throw new ConfigError('RedisBroker: tls must be an object of TLS options, e.g. { ca }');
    }
    this.tls = options.tls;
    this.where = this.target.kind === 'single' ? redact(options.url) : this.target.nodes.map((n) => `${n.host}:${n.port}`).join(',');
    const prefix = checkPrefix('RedisBroker', options.prefix ?? 'errand');
    this.prefix = prefix;
    this.logger = options.logger;
    this.maxLeaseLosses = positiveInt(NAME, 'maxLeaseLosses', options.maxLeaseLosses, DEFAULTS.maxLeaseLosses);
    this.failedRetentionMs = nonNegativeMs(NAME, 'failedRetentionMs', options.failedRetentionMs, DEFAULTS.failedRetentionMs);
    this.cancelledRetentionMs = nonNegativeMs(NAME, 'cancelledRetentionMs', options.cancelledRetentionMs, DEFAULTS.cancelledRetentionMs);
    this.connectWaitMs = nonNegativeMs(NAME, 'connectWaitMs', options.connectWaitMs, 2000);
    this.listCap = positiveInt(NAME, 'listCap', options.listCap, LIST_CAP);
    this.queuesKey = `${prefix}:queues`;
    this.pausedKey = `${prefix}:paused`;
    this.workersKey = `${prefix}:workers`;
    this.eventsChannel = `${prefix}:events`;
    this.cancelsChannel = `${prefix}:cancels`;
    const main = createClient(this.target, 'main', this.tls);
    defineScripts(main);
    this.main = new ConnectionGate(main, this.where, this.logger, this.connectWaitMs);
    // Each new connection checks that Redis will not evict runs (eviction.ts), and says so once if it may.
    main.on('ready', () => void checkEviction(main, this.where, this.logger));
    if (options.existingPrefix !== undefined && typeof options.existingPrefix !== 'boolean') {
      throw new ConfigError(`RedisBroker: existingPrefix must be true or false, got ${show(options.existingPrefix)}`);
    }
    this.layout = new LayoutGuard(prefix, this.where, this.logger, !options.existingPrefix);
  }

  /** The keys of a queue. */
  k(queue: string): QueueKeys {
    let k = this.#keys.get(queue);
    if (!k) {
      k = new QueueKeys(this.prefix, queue);
      this.#keys.set(queue, k);
    }
    return k;
  }

  get redis(): RedisClient {
    return this.main.client;
  }

  /** The command connection once ready; a BrokerUnavailableError after close() (as on SQLite), or while Redis is down. */
  async ready(): Promise<RedisClient> {
    if (this.closed) throw new BrokerUnavailableError(`The Redis broker (${this.where}) is closed`);
    await this.main.ready();
    if (!this.layout.ready) await this.layout.ensure(this.main.client); // the layout version (layout.ts), once
    return this.main.client;
  }

  /** Adds queues to the set of known queues (once per instance), alongside the caller's command. */
  remember(queues: readonly string[]): Promise<unknown> {
    const fresh = queues.filter((q) => !this.#knownQueues.has(q));
    if (!fresh.length) return Promise.resolve();
    for (const q of fresh) this.#knownQueues.add(q);
    return this.redis.sadd(this.queuesKey, ...fresh).catch((err: unknown) => {
      for (const q of fresh) this.#knownQueues.delete(q);
      throw err;
    });
  }

  knows(queue: string): boolean {
    return this.#knownQueues.has(queue);
  }

  /** Every queue known (valid names only), sorted. */
  async allQueues(redis: RedisClient): Promise<string[]> {
    return (await redis.smembers(this.queuesKey)).filter((q) => QUEUE_NAME.test(q)).sort();
  }

  /** Waits for `p`, at most connectWaitMs; never throws. */
  async bounded(p: Promise<unknown>): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([p.catch(() => {}), new Promise((r) => (timer = setTimeout(r, this.connectWaitMs)))]);
    clearTimeout(timer);
  }
}

/** `now` (or another time) as whole ms; a ConfigError when it is not a finite number. */
export function time(value: number, name: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value))
    throw new ConfigError(`RedisBroker: ${name} must be a finite number of ms, got ${show(value)}`);
  return Math.floor(value);
}
