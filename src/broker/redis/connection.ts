/**
 * Redis connections of the broker: URL parsing, client options, logging of disconnects and
 * reconnects, and the gate that makes commands fail fast while Redis is unreachable.
 *
 * Policy: a client reconnects forever (backoff up to 2 s); commands are never queued while
 * disconnected (`enableOfflineQueue: false`) and never resent after a reconnect
 * (`autoResendUnfulfilledCommands: false`: the scripts are not all idempotent, and the caller
 * decides whether to try again). A command issued while the connection is down fails at once with
 * `BrokerUnavailableError` (the HTTP layer answers 503); one issued while a (re)connection is in
 * progress waits for it up to `connectWaitMs` (the client's first connection: up to the connect
 * timeout, 10 s, if that is longer). The blocking (wake-up) and subscriber connections
 * are internal and do queue their commands while disconnected.
 *
 * A connection that Redis refuses for its configuration (a wrong user name or password, a TLS
 * certificate the client does not trust, TLS against a plain port) is not "unreachable": commands
 * then fail with `BrokerConfigError` saying what to fix, which a worker's start reports as a
 * configuration error instead of retrying forever.
 */
import { readFileSync } from 'node:fs';
import type { ConnectionOptions as TlsOptions } from 'node:tls';
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import type { RedisTarget } from '../../core/urls.ts';
import { BrokerConfigError, BrokerUnavailableError, ConfigError } from '../../core/errors.ts';

export type { TlsOptions };
// The one Redis URL parser is in core (the configuration checks use it too).
export { parseRedisUrl, type RedisTarget } from '../../core/urls.ts';

export type RedisClient = Redis | Cluster;

/** Reconnect delay: 50 ms doubling up to 2 s, with jitter; never gives up. */
function retryDelay(times: number): number {
  const base = Math.min(2000, 50 * 2 ** Math.min(times, 6));
  return Math.round(base * (0.8 + Math.random() * 0.4));
}

export type ClientRole = 'main' | 'blocking' | 'subscriber';

/** Longest wait for an answer on the command connection, in ms. */
export const COMMAND_TIMEOUT_MS = 10_000;

/** How long one connection attempt may take (ioredis `connectTimeout`), in ms. */
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * TLS options from the environment, for `rediss://` URLs: `ERRAND_REDIS_CA`, the path of a PEM file
 * with the CA certificate(s) to trust (instead of the system's). Undefined when it is not set.
 */
export function tlsFromEnv(env: NodeJS.ProcessEnv = process.env): TlsOptions | undefined {
  const path = env.ERRAND_REDIS_CA?.trim();
  if (!path) return undefined;
  try {
    return { ca: readFileSync(path, 'utf8') };
  } catch (err) {
    throw new ConfigError(`ERRAND_REDIS_CA: cannot read the CA file ${JSON.stringify(path)}: ${(err as Error).message}`);
  }
}

/** Node's codes for a server certificate the client does not accept, and for TLS spoken to a server that does not. */
const TLS_TRUST_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * The connection error as a `BrokerConfigError` when Redis refused the client's configuration
 * (credentials, TLS, a database index it does not have), else undefined (a network problem: worth retrying).
 */
export function refusedConfiguration(err: unknown, where: string): BrokerConfigError | undefined {
  // A cluster reports the last node's error inside its own.
  const e = ((err as { lastNodeError?: unknown })?.lastNodeError ?? err) as { message?: unknown; code?: unknown } | undefined;
  const message = typeof e?.message === 'string' ? e.message : '';
  const code = typeof e?.code === 'string' ? e.code : '';
  if (/^(WRONGPASS|NOAUTH)\b/.test(message) || /invalid (username-)?password/i.test(message)) {
    return new BrokerConfigError(
      `Redis at ${where} refused the credentials (${message.trim()}): check the user name and password in the broker URL (redis://user:password@host:port)`,
      { cause: err },
    );
  }
  if (/^NOPERM\b/.test(message)) {
    return new BrokerConfigError(
      `Redis at ${where} refused a command for lack of permission (${message.trim()}): the ACL user needs ~* &* +@all (or at least the commands Errand uses)`,
      { cause: err },
    );
  }
  if (/DB index is out of range/i.test(message)) {
    const db = /\/(\d+)\/?$/.exec(where)?.[1];
    return new BrokerConfigError(
      `Redis at ${where} has no database ${db ?? 'with that index'} (${message.trim()}): give a db index below the server's "databases" setting (16 by default), as in redis://host:6379/0`,
      { cause: err },
    );
  }
  if (TLS_TRUST_CODES.has(code)) {
    return new BrokerConfigError(
      `The TLS certificate of Redis at ${where} is not trusted (${code}: ${message}): set ERRAND_REDIS_CA to the PEM file of the CA that signed it (or pass tls: { ca })`,
      { cause: err },
    );
  }
  if (/cluster support disabled/i.test(message)) {
    return new BrokerConfigError(
      `Redis at ${where} is not a cluster (${message.trim()}): redis+cluster:// is for a Redis Cluster; for a single server use redis://${where.split(',')[0]} (rediss:// for TLS)`,
      { cause: err },
    );
  }
  const reply = /^Protocol error, got "(.*)" as reply type byte/.exec(message);
  if (reply) {
    const http = reply[1] === 'H' ? ': an HTTP server or proxy?' : '';
    return new BrokerConfigError(
      `The server at ${where} does not speak the Redis protocol (its reply began with ${JSON.stringify(reply[1])}${http}): check the host and port of the broker URL, and use rediss:// for a TLS port`,
      { cause: err },
    );
  }
  if (code.startsWith('ERR_SSL_')) {
    return new BrokerConfigError(
      `TLS with Redis at ${where} failed (${code}: ${message}): does the server speak TLS on this port? Use rediss:// for a TLS port, redis:// for a plain one`,
      { cause: err },
    );
  }
  return undefined;
}

/** Why a connection could not be made, by Node's code for it; undefined for other errors. */
const CONNECT_FAILURES: Record<string, string> = {
  ECONNREFUSED: 'nothing accepts connections there: is Redis running, and on this port?',
  ETIMEDOUT: `no answer within ${CONNECT_TIMEOUT_MS / 1000} s: is the host up, and its port open to this machine?`,
  ENOTFOUND: 'the host name does not resolve',
  EAI_AGAIN: 'the host name could not be resolved (DNS did not answer)',
  EHOSTUNREACH: 'no route to the host',
  ENETUNREACH: 'no route to that network',
  ECONNRESET: 'the server closed the connection',
};

/**
 * The reason a connection to Redis failed, worded for a person: "could not connect (...)" with
 * Node's code and what it means, or the client's message for any other error.
 */
export function connectionProblem(err: Error): string {
  const e = ((err as { lastNodeError?: unknown }).lastNodeError ?? err) as { message?: unknown; code?: unknown };
  const code = typeof e.code === 'string' ? e.code : '';
  const meaning = CONNECT_FAILURES[code];
  const message = typeof e.message === 'string' ? e.message : err.message;
  return meaning ? `could not connect (${message}): ${meaning}` : message;
}

/**
 * Errors ioredis raises as a consequence of an earlier one (a command written to the socket the
 * failure left behind): they must not hide the first error of an outage, which says why.
 */
const CONSEQUENT = /^(Stream isn't writeable|Connection is closed)/;

/**
 * A new client for `role` (not yet connected: it connects on first use or on `connect()`). `tls`:
 * options for Node's `tls.connect` (e.g. `{ ca }`); given, the client speaks TLS whatever the scheme.
 */
export function createClient(target: RedisTarget, role: ClientRole, tls?: TlsOptions): RedisClient {
  const internal = role !== 'main';
  const common: RedisOptions = {
    lazyConnect: true,
    connectionName: `errand:${role}`,
    enableOfflineQueue: internal,
    autoResendUnfulfilledCommands: false,
    // In-flight commands fail when the connection drops (never silently dropped, never resent).
    maxRetriesPerRequest: 0,
    retryStrategy: retryDelay,
    connectTimeout: CONNECT_TIMEOUT_MS,
    keepAlive: 30_000,
  };
  // A command connection whose peer stops answering (a network black hole) must not hold callers
  // until TCP gives up: commands fail after COMMAND_TIMEOUT_MS, and the caller sees the broker as
  // unavailable (the HTTP layer answers 503; a worker tries again). Blocking and subscriber
  // connections wait on purpose and have their own bounds.
  if (role === 'main') common.commandTimeout = COMMAND_TIMEOUT_MS;
  // ioredis writes SUBSCRIBE as soon as the socket connects (SUBSCRIBE may run while Redis loads),
  // before its ready check; the check's INFO then meets a connection in subscriber mode, fails,
  // and the reconnect rejects the SUBSCRIBE (seen with AUTH, which widens that window). A
  // subscriber needs no ready check.
  if (role === 'subscriber') common.enableReadyCheck = false;
  if (target.kind === 'single') {
    const options: RedisOptions = { ...common };
    if (target.tls || tls) options.tls = { ...tls };
    return new Redis(target.url, options);
  }
  const redisOptions: RedisOptions = {
    ...(role === 'main' ? { commandTimeout: COMMAND_TIMEOUT_MS } : {}),
    connectionName: common.connectionName,
    connectTimeout: CONNECT_TIMEOUT_MS,
    keepAlive: 30_000,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
  };
  if (target.username !== undefined) redisOptions.username = target.username;
  if (target.password !== undefined) redisOptions.password = target.password;
  if (target.tls || tls) redisOptions.tls = { ...tls };
  const options: ClusterOptions = {
    lazyConnect: true,
    enableOfflineQueue: internal,
    maxRedirections: 16,
    clusterRetryStrategy: retryDelay,
    redisOptions,
  };
  return new Cluster(target.nodes, options);
}

/**
 * Watches a client's connection: logs each loss and recovery (warn), never lets an `error` event
 * crash the process, and gates commands (see `ready`).
 */
export class ConnectionGate {
  readonly client: RedisClient;
  readonly #where: string;
  readonly #logger: Logger | undefined;
  readonly #waitMs: number;
  #everReady = false;
  /** True once a connection attempt failed and until the next `ready`: fail fast then. */
  #down = false;
  #lostAt: number | undefined;
  #lastError: Error | undefined;
  /** Set when the last connection attempt was refused for its configuration; cleared on `ready`. */
  #refused: BrokerConfigError | undefined;
  #closed = false;
  #errorsLogged = 0;
  #pending: Promise<void> | undefined;

  constructor(client: RedisClient, where: string, logger: Logger | undefined, waitMs: number, quiet = false) {
    this.client = client;
    this.#where = where;
    this.#logger = quiet ? undefined : logger;
    this.#waitMs = waitMs;
    client.on('error', (err: Error) => {
      if (this.client.status !== 'ready') this.#down = true;
      if (this.#errorsLogged > 0 && CONSEQUENT.test(err.message)) return;
      this.#lastError = err;
      this.#refused = refusedConfiguration(err, where);
      // One line per outage (the first error), then quiet: the reconnects go on.
      if (this.#errorsLogged++ === 0) {
        if (this.#refused) this.#logger?.error({ redis: this.#where }, this.#refused.message);
        else this.#logger?.warn({ err: err.message, redis: this.#where }, 'Redis connection error');
      }
    });
    client.on('close', () => {
      if (this.#closed || this.#lostAt !== undefined || !this.#everReady) return;
      this.#lostAt = Date.now();
      this.#logger?.warn({ redis: this.#where }, 'Redis connection lost; reconnecting');
    });
    client.on('ready', () => {
      this.#down = false;
      this.#refused = undefined;
      this.#errorsLogged = 0;
      if (this.#lostAt !== undefined) {
        this.#logger?.warn({ redis: this.#where, downMs: Date.now() - this.#lostAt }, 'Redis connection restored');
      }
      this.#lostAt = undefined;
      this.#everReady = true;
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Resolves when the client can take commands. Throws `BrokerUnavailableError` at once when the
   * connection is down (a connection attempt failed), or after `waitMs` when a (re)connection in
   * progress does not complete; `BrokerConfigError` when the last attempt was refused for its
   * credentials or TLS set-up.
   */
  ready(): Promise<void> {
    const c = this.client;
    if (c.status === 'ready') return Promise.resolve();
    if (this.#closed) return Promise.reject(new BrokerUnavailableError(`The Redis broker (${this.#where}) is closed`));
    if (this.#down) return Promise.reject(this.#unavailable());
    if (c.status === 'wait') c.connect().catch(() => {});
    // One wait shared by every caller arriving meanwhile.
    this.#pending ??= new Promise<void>((resolve, reject) => {
      let settled = false;
      const done = (err?: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        c.off('ready', onReady);
        c.off('error', onError);
        c.off('end', onEnd);
        this.#pending = undefined;
        if (err) reject(err);
        else resolve();
      };
      const onReady = () => done();
      // The first failed attempt: fail now rather than at the end of the wait.
      const onError = () => setImmediate(() => c.status !== 'ready' && done(this.#unavailable()));
      const onEnd = () => done(this.#unavailable());
      // A client's first connection (a process just started, its connection not yet ready on a
      // busy machine) may take up to the connect timeout: a command waits for it that long, so a
      // fresh API does not answer 503 while its own connection is merely slow. Later
      // (re)connections: waitMs. An attempt that fails still fails the wait at once (onError).
      const waitMs = this.#everReady ? this.#waitMs : Math.max(this.#waitMs, CONNECT_TIMEOUT_MS);
      const timer = setTimeout(() => done(this.#unavailable(`no connection within ${waitMs} ms`)), waitMs);
      c.on('ready', onReady);
      c.on('error', onError);
      c.on('end', onEnd);
    });
    return this.#pending;
  }

  /** The error of a failed wait: the last attempt's refusal, else why Redis is unreachable (`fallback` when no attempt failed yet). */
  #unavailable(fallback?: string): BrokerUnavailableError | BrokerConfigError {
    if (this.#refused) return this.#refused;
    const reason = this.#lastError ? connectionProblem(this.#lastError) : fallback;
    const why = reason ? `: ${reason}` : '';
    return new BrokerUnavailableError(`Redis at ${this.#where} is unreachable${why}`, { cause: this.#lastError });
  }

  /** Closes the client: QUIT when connected (pending replies arrive first), else disconnect. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const c = this.client;
    if (c.status === 'ready') {
      try {
        await Promise.race([c.quit(), new Promise((r) => setTimeout(r, 2000).unref())]);
      } catch {
        // Closing anyway.
      }
    }
    c.disconnect();
  }
}
