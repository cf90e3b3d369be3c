/**
 * The service's configuration, read from the environment once at start-up.
 *
 * Every variable has a default that runs the whole service on one machine with nothing installed
 * (the embedded SQLite file and a development mail transport writing `.eml` files). A bad value
 * stops start-up with one line naming the variable and what is wrong with it (`main.ts` prints it
 * and exits with code 2).
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { redactUrl, redisUrlProblem } from '../src/core/urls.ts';
import { ConfigError, type LogFormat, logFormat as resolveLogFormat, scheduleIssues } from '../src/index.ts';

export interface AppConfig {
  /** `PORT`, default 8000. */
  port: number;
  /** `HOST`, default 127.0.0.1. */
  host: string;
  /** `DATA_DIR`, default `./data`, made absolute. Holds `errand.db` and `outbox/`. */
  dataDir: string;
  /** `DATA_DIR/errand.db`: the embedded broker's tables and (without `DATABASE_URL`) the users table. */
  sqlitePath: string;
  /** `DATA_DIR/outbox`: where the development mail transport writes `.eml` files. */
  outboxDir: string;
  /**
   * `REDIS_URL`: the Redis broker (`redis://`, `rediss://` for TLS with the CA in `ERRAND_REDIS_CA`,
   * `redis+cluster://host1:port,host2:port` for a Redis Cluster); absent, the embedded SQLite broker in `sqlitePath`.
   */
  redisUrl: string | undefined;
  /**
   * The broker URL the service uses: `ERRAND_BROKER_URL` (any broker URL the library takes:
   * `redis://...`, `rediss://...`, `redis+cluster://...`, `sqlite:path`), else `REDIS_URL`, else
   * undefined (the embedded SQLite file in `sqlitePath`). The same order as the library and the
   * `errand` CLI, so that the service and `errand inspect` look at the same broker.
   */
  brokerUrlFromEnv: string | undefined;
  /** The variable the broker comes from, for messages: `ERRAND_BROKER_URL`, `REDIS_URL` or `DATA_DIR`. */
  brokerVariable: 'ERRAND_BROKER_URL' | 'REDIS_URL' | 'DATA_DIR';
  /** `ERRAND_REDIS_CA`: a readable PEM file (checked at start); the broker reads it for `rediss://`. */
  redisCa: string | undefined;
  /** `ERRAND_PREFIX`: key prefix in Redis (default `errand`); lets several services or tests share one Redis. */
  prefix: string | undefined;
  /** `DATABASE_URL`: PostgreSQL for the users table; absent, the SQLite file. */
  databaseUrl: string | undefined;
  /** `SMTP_URL`: where welcome emails go; absent, the development transport (`outboxDir`). */
  smtpUrl: string | undefined;
  /** `MAIL_FROM`, default `welcome@example.com` (a bare address or `Name <address>`). */
  mailFrom: string;
  /**
   * The sign-up digest (app/digest.ts): `DIGEST_CRON` (default `0 8 * * *`), `DIGEST_TIMEZONE` (an
   * IANA zone, default UTC) and `DIGEST_TO` (default the MAIL_FROM address).
   */
  digest: { cron: string; timezone: string; to: string };
  /** `WORKER_CONCURRENCY`, default 10: welcome emails sent at once by one worker. */
  workerConcurrency: number;
  /** `LOG_LEVEL`, default `info`. */
  logLevel: string;
  /** `LOG_FORMAT`: `json`, `pretty`, or (unset) pretty when stdout is a terminal, else json. */
  logFormat: LogFormat;
  /**
   * `RATE_LIMIT_MAX` requests per client per `RATE_LIMIT_WINDOW_MS` (default 60000) on the API;
   * undefined (no limit) unless `RATE_LIMIT_MAX` is set.
   */
  rateLimit: { max: number; windowMs: number } | undefined;
  /**
   * `WELCOME_DOMAIN_RATE` welcome emails per `WELCOME_DOMAIN_PERIOD_MS` (default 60000) per
   * recipient domain, at most `WELCOME_DOMAIN_BURST` (default: the rate) at once: mail providers
   * throttle senders per destination domain. Undefined (no limit) unless `WELCOME_DOMAIN_RATE` is set.
   */
  welcomeDomainRate: { limit: number; period: number; burst: number } | undefined;
  /** The environment the configuration was read from (for `authFromEnv`: `ERRAND_ADMIN_TOKENS`, `ERRAND_READ_TOKENS`). */
  env: NodeJS.ProcessEnv;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
// A bare address, or `Display Name <address>`; the address part without spaces or angle brackets.
const ADDRESS = /^[^\s<>@"]+@[^\s<>@]+\.[^\s<>@]+$/;
const NAMED_ADDRESS = /^[^<>\r\n]*<([^<>]+)>$/;

/** Reads and checks the configuration. Throws `ConfigError` whose message names the variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): AppConfig {
  const get = (name: string): string | undefined => {
    const v = env[name];
    // An empty value (`PORT=`) counts as unset, as in most process managers' env files.
    return v === undefined || v.trim() === '' ? undefined : v;
  };

  const port = integer('PORT', get('PORT'), 8000, 1, 65535);
  const host = get('HOST') ?? '127.0.0.1';
  if (!/^[A-Za-z0-9.:_%[\]-]+$/.test(host)) throw bad('HOST', 'must be a host name or an IP address to listen on', host);

  const dataDirRaw = get('DATA_DIR') ?? './data';
  if (dataDirRaw.includes('\0')) throw bad('DATA_DIR', 'must be a folder path', dataDirRaw);
  const dataDir = isAbsolute(dataDirRaw) ? dataDirRaw : resolve(dataDirRaw);

  const redisUrl = get('REDIS_URL');
  if (redisUrl !== undefined) checkRedisUrl('REDIS_URL', redisUrl);
  const errandBrokerUrl = get('ERRAND_BROKER_URL');
  if (errandBrokerUrl !== undefined) {
    if (/^sqlite:/i.test(errandBrokerUrl)) {
      const path = errandBrokerUrl.slice('sqlite:'.length).replace(/^\/\//, '');
      if (path === '' || path.includes('\0'))
        throw bad('ERRAND_BROKER_URL', 'must give a file path after sqlite:, like sqlite:./data/errand.db', errandBrokerUrl);
    } else if (/^rediss?(\+cluster)?:/i.test(errandBrokerUrl)) checkRedisUrl('ERRAND_BROKER_URL', errandBrokerUrl);
    else
      throw bad(
        'ERRAND_BROKER_URL',
        'must start with redis://, rediss://, redis+cluster://, rediss+cluster:// or sqlite: (like redis://host:6379 or sqlite:./data/errand.db)',
        redactUrl(errandBrokerUrl),
      );
  }
  const redisCa = get('ERRAND_REDIS_CA')?.trim();
  if (redisCa !== undefined) {
    try {
      readFileSync(redisCa, 'utf8');
    } catch (err) {
      throw bad(
        'ERRAND_REDIS_CA',
        `must be a readable PEM file of the CA certificate(s) (${(err as NodeJS.ErrnoException).code ?? 'unreadable'})`,
        redisCa,
      );
    }
  }
  const prefix = get('ERRAND_PREFIX');
  if (prefix !== undefined && !/^[A-Za-z0-9_.:-]{1,64}$/.test(prefix)) {
    throw bad('ERRAND_PREFIX', 'must be 1 to 64 letters, digits, "_", ".", ":" or "-"', prefix);
  }

  const databaseUrl = get('DATABASE_URL');
  if (databaseUrl !== undefined) {
    checkUrl('DATABASE_URL', databaseUrl, ['postgres:', 'postgresql:'], 'postgres://user:password@host:5432/database', {
      hostOptional: true,
    });
  }

  const smtpUrl = get('SMTP_URL');
  if (smtpUrl !== undefined) checkUrl('SMTP_URL', smtpUrl, ['smtp:', 'smtps:'], 'smtp://[user:password@]host:port');

  const mailFrom = (get('MAIL_FROM') ?? 'welcome@example.com').trim();
  const address = NAMED_ADDRESS.exec(mailFrom)?.[1]?.trim() ?? mailFrom;
  if (!ADDRESS.test(address)) throw bad('MAIL_FROM', 'must be an email address or "Name <address>"', mailFrom);

  const digest = {
    cron: (get('DIGEST_CRON') ?? '0 8 * * *').trim(),
    timezone: (get('DIGEST_TIMEZONE') ?? 'UTC').trim(),
    to: (get('DIGEST_TO') ?? address).trim(),
  };
  const digestIssues = scheduleIssues({ cron: digest.cron, timezone: digest.timezone });
  if (digestIssues.length) {
    const i = digestIssues[0]!;
    throw bad(
      i.field === 'timezone' ? 'DIGEST_TIMEZONE' : 'DIGEST_CRON',
      i.message,
      i.field === 'timezone' ? digest.timezone : digest.cron,
    );
  }
  if (!ADDRESS.test(digest.to)) throw bad('DIGEST_TO', 'must be an email address', digest.to);

  const workerConcurrency = integer('WORKER_CONCURRENCY', get('WORKER_CONCURRENCY'), 10, 1, 1000);

  const logLevel = get('LOG_LEVEL') ?? 'info';
  if (!LOG_LEVELS.includes(logLevel)) throw bad('LOG_LEVEL', `must be one of ${LOG_LEVELS.join(', ')}`, logLevel);
  const rawFormat = get('LOG_FORMAT');
  if (rawFormat !== undefined && !['json', 'pretty'].includes(rawFormat.trim().toLowerCase()))
    throw bad('LOG_FORMAT', 'must be json or pretty (unset: pretty on a terminal, else json)', rawFormat);
  const logFormat = resolveLogFormat({ LOG_FORMAT: rawFormat });

  const rateLimitMax = get('RATE_LIMIT_MAX');
  const rateLimitWindow = get('RATE_LIMIT_WINDOW_MS');
  if (rateLimitWindow !== undefined && rateLimitMax === undefined) {
    throw bad('RATE_LIMIT_WINDOW_MS', 'is set but RATE_LIMIT_MAX is not: set RATE_LIMIT_MAX to switch rate limiting on', rateLimitWindow);
  }
  const rateLimit =
    rateLimitMax === undefined
      ? undefined
      : {
          max: integer('RATE_LIMIT_MAX', rateLimitMax, 0, 1, 1_000_000_000),
          windowMs: integer('RATE_LIMIT_WINDOW_MS', rateLimitWindow, 60_000, 1, 86_400_000),
        };

  const domainRate = get('WELCOME_DOMAIN_RATE');
  for (const name of ['WELCOME_DOMAIN_PERIOD_MS', 'WELCOME_DOMAIN_BURST']) {
    const v = get(name);
    if (v !== undefined && domainRate === undefined) {
      throw bad(name, 'is set but WELCOME_DOMAIN_RATE is not: set WELCOME_DOMAIN_RATE to limit welcome emails per domain', v);
    }
  }
  let welcomeDomainRate: AppConfig['welcomeDomainRate'];
  if (domainRate !== undefined) {
    const limit = integer('WELCOME_DOMAIN_RATE', domainRate, 0, 1, 1_000_000);
    welcomeDomainRate = {
      limit,
      period: integer('WELCOME_DOMAIN_PERIOD_MS', get('WELCOME_DOMAIN_PERIOD_MS'), 60_000, 1, 86_400_000),
      burst: integer('WELCOME_DOMAIN_BURST', get('WELCOME_DOMAIN_BURST'), limit, 1, 1_000_000),
    };
  }

  return {
    port,
    host,
    dataDir,
    sqlitePath: join(dataDir, 'errand.db'),
    outboxDir: join(dataDir, 'outbox'),
    redisUrl,
    brokerUrlFromEnv: errandBrokerUrl ?? redisUrl,
    brokerVariable: errandBrokerUrl !== undefined ? 'ERRAND_BROKER_URL' : redisUrl !== undefined ? 'REDIS_URL' : 'DATA_DIR',
    redisCa,
    prefix,
    databaseUrl,
    smtpUrl,
    mailFrom,
    digest,
    workerConcurrency,
    logLevel,
    logFormat,
    rateLimit,
    welcomeDomainRate,
    env,
  };
}

/** The address part of `MAIL_FROM` (`welcome@example.com` from `Welcome <welcome@example.com>`). */
export function mailFromAddress(mailFrom: string): string {
  return NAMED_ADDRESS.exec(mailFrom)?.[1]?.trim() ?? mailFrom;
}

/** The broker URL the service uses: `ERRAND_BROKER_URL`, else `REDIS_URL`, else the embedded SQLite file in `DATA_DIR`. */
export function brokerUrl(config: AppConfig): string {
  return config.brokerUrlFromEnv ?? `sqlite:${config.sqlitePath}`;
}

function bad(name: string, why: string, value: string): ConfigError {
  const shown = value.length > 80 ? `${value.slice(0, 80)}...` : value;
  return new ConfigError(`${name} ${why}, got ${JSON.stringify(shown)}`);
}

function integer(name: string, raw: string | undefined, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw.trim());
  if (!/^\d+$/.test(raw.trim()) || n < min || n > max) throw bad(name, `must be an integer from ${min} to ${max}`, raw);
  return n;
}

/** A Redis or Redis Cluster URL, checked by the library's own parser (the one the broker uses). */
function checkRedisUrl(name: string, raw: string): void {
  const problem = redisUrlProblem(raw);
  if (problem) throw bad(name, problem, redactUrl(raw));
}

function checkUrl(name: string, raw: string, schemes: string[], example: string, { hostOptional = false } = {}): void {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw bad(name, `must be a URL like ${example}`, redactUrl(raw));
  }
  if (!schemes.includes(url.protocol)) {
    throw bad(name, `must start with ${schemes.map((s) => `${s}//`).join(' or ')} (like ${example})`, redactUrl(raw));
  }
  if (!hostOptional && !url.hostname) throw bad(name, `has no host (expected ${example})`, redactUrl(raw));
  if (url.port !== '' && (Number(url.port) < 1 || Number(url.port) > 65535)) {
    throw bad(name, 'has a port outside 1 to 65535', redactUrl(raw));
  }
}
