/**
 * Broker URLs, read in one place: the password hidden for messages (`redactUrl`), and the one
 * check and parse of a Redis URL (`parseRedisUrl`, `redisUrlProblem`) that `connectBroker`, the
 * Redis broker and the users service's configuration (`app/config.ts`) all use.
 */
import { ConfigError } from './errors.ts';

/** A URL with its password hidden, for messages and logs. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^:@/]*):([^@/]*)@/, '//$1:***@');
}

export type RedisTarget =
  | { kind: 'single'; url: string; tls: boolean }
  | { kind: 'cluster'; nodes: { host: string; port: number }[]; username?: string; password?: string; tls: boolean };

const REDIS_SCHEMES = ['redis:', 'rediss:', 'redis+cluster:', 'rediss+cluster:'];
const SINGLE_EXAMPLE = 'redis://host:6379[/db]';
const CLUSTER_EXAMPLE = 'redis+cluster://host1:6379,host2:6379';

type Parsed = { target: RedisTarget } | { problem: string };

function validPort(port: string): boolean {
  return Number(port) >= 1 && Number(port) <= 65535;
}

function parse(url: string): Parsed {
  const scheme = url.slice(0, url.indexOf(':') + 1).toLowerCase();
  if (!REDIS_SCHEMES.includes(scheme)) {
    return { problem: `must start with ${REDIS_SCHEMES.map((s) => `${s}//`).join(' or ')} (like ${SINGLE_EXAMPLE})` };
  }
  if (scheme === 'redis:' || scheme === 'rediss:') {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return { problem: `must be a URL like ${scheme}//[user:password@]host:port[/db]` };
    }
    if (!u.hostname) return { problem: `has no host (expected ${scheme}//[user:password@]host:port[/db])` };
    if (u.port !== '' && !validPort(u.port)) return { problem: 'has a port outside 1 to 65535' };
    if (u.pathname !== '' && u.pathname !== '/' && !/^\/\d{1,5}$/.test(u.pathname)) {
      return { problem: `has a path that is not a database index (${JSON.stringify(u.pathname)}; expected redis://host:6379/0)` };
    }
    return { target: { kind: 'single', url, tls: scheme === 'rediss:' } };
  }
  // A cluster URL lists several host:port pairs, which URL cannot parse.
  const nodesProblem = {
    problem: `must list the cluster's nodes like ${CLUSTER_EXAMPLE} (${scheme}//[user:password@]host:port[,host:port...])`,
  };
  let rest = url.slice(scheme.length);
  if (!rest.startsWith('//')) return nodesProblem;
  rest = rest.slice(2).replace(/\/$/, '');
  let username: string | undefined;
  let password: string | undefined;
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    const auth = rest.slice(0, at);
    rest = rest.slice(at + 1);
    const colon = auth.indexOf(':');
    try {
      username = decodeURIComponent(colon >= 0 ? auth.slice(0, colon) : auth) || undefined;
      password = colon >= 0 ? decodeURIComponent(auth.slice(colon + 1)) : undefined;
    } catch {
      return { problem: 'has a user name or password that is not URL-encoded (write %40 for @, %25 for %)' };
    }
  }
  if (rest === '' || /[/?#]/.test(rest)) return nodesProblem;
  const nodes: { host: string; port: number }[] = [];
  for (const node of rest.split(',')) {
    const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$/.exec(node.trim());
    if (!m?.[1]) return { problem: `has a node that is not host:port (${JSON.stringify(node)}; expected ${CLUSTER_EXAMPLE})` };
    if (m[2] !== undefined && !validPort(m[2])) return { problem: `has a port outside 1 to 65535 (${JSON.stringify(node)})` };
    nodes.push({ host: m[1].replace(/^\[|\]$/g, ''), port: m[2] ? Number(m[2]) : 6379 });
  }
  const target: RedisTarget = { kind: 'cluster', nodes, tls: scheme === 'rediss+cluster:' };
  if (username !== undefined) target.username = username;
  if (password !== undefined) target.password = password;
  return { target };
}

/** Why `url` is not a usable Redis or Redis Cluster URL ("has no host ..."), or undefined when it is one. */
export function redisUrlProblem(url: string): string | undefined {
  const parsed = parse(url);
  return 'problem' in parsed ? parsed.problem : undefined;
}

/**
 * `redis://[user:pass@]host:port[/db]`, `rediss://...` (TLS), or
 * `redis+cluster://[user:pass@]host:port[,host:port...]` (seed nodes of a Redis Cluster;
 * `rediss+cluster://` for TLS). Throws `ConfigError` naming the URL (password hidden) and what is wrong.
 */
export function parseRedisUrl(url: string): RedisTarget {
  const parsed = parse(url);
  if ('problem' in parsed) throw new ConfigError(`Redis URL "${redactUrl(url)}" ${parsed.problem}`);
  return parsed.target;
}
