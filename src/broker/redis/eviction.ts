/**
 * The eviction check: Redis must keep every key Errand writes, so its `maxmemory-policy` must be
 * `noeviction` (docs/reliability.md, "Redis settings"). Any other policy deletes keys when memory is
 * full, without a word: queued runs, active runs, idempotency keys (which have TTLs, and go first
 * under the `volatile-*` policies) vanish, and their work is lost. With `noeviction` a full Redis
 * refuses writes instead (`BrokerFullError`), and nothing accepted disappears.
 *
 * Read from `INFO memory` (field `maxmemory_policy`), which managed services that disable CONFIG
 * still answer; a server that refuses INFO (an ACL without it) cannot be checked, which is said
 * once too. Each (re)connection of the command connection checks again (the server may have been
 * reconfigured, or replaced by a failover), and says it at most once per connection.
 */
import type { Cluster } from 'ioredis';
import type { Logger } from 'pino';
import type { RedisClient } from './connection.ts';

/**
 * What a check found: the policy (and `full`: a server whose used memory is at its `maxmemory`,
 * which refuses writes), or why it could not be read.
 */
export type EvictionCheck = { policy: string; full?: { used: number; max: number } } | { unknown: string };

/** The policy named in an `INFO memory` reply; undefined when the reply has no such field. */
export function policyOf(info: string): string | undefined {
  return /^maxmemory_policy:(\S+)/m.exec(info)?.[1];
}

/** The warning logged for a policy other than `noeviction`: what will happen, and what to set. */
export function evictionWarning(policy: string, where: string): string {
  return (
    `Redis at ${where} has maxmemory-policy ${policy}: when its memory is full it will delete keys to make room, ` +
    'and with them queued and active runs, results and idempotency keys, without any error: that work is lost. ' +
    "Set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, and in redis.conf, or in your provider's settings): " +
    'a full Redis then refuses new work with an error instead'
  );
}

async function infoOf(client: RedisClient): Promise<string[]> {
  if ((client as Cluster).isCluster) {
    const masters = (client as Cluster).nodes('master');
    return Promise.all(masters.map((node) => node.info('memory')));
  }
  return [await client.info('memory')];
}

/** What a full Redis does now, for `storageWarnings()`. */
function fullWarning(where: string, full: { used: number; max: number }): string {
  const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MB`;
  return (
    `Redis at ${where} is full (${mb(full.used)} used of its maxmemory ${mb(full.max)}): it refuses new runs and outcomes (they wait in the workers) ` +
    'and worker heartbeats (live workers may show as lost). Finished runs are pruned as their retention ends; raise maxmemory, lower retention or purge queues to free memory sooner'
  );
}

/** The sentences a check gives (none for `noeviction`): the same words in the log and in `storageWarnings()`. */
export function evictionWarnings(check: EvictionCheck, where: string): string[] {
  if ('policy' in check) {
    const out = check.policy === 'noeviction' ? [] : [evictionWarning(check.policy, where)];
    if (check.full) out.push(fullWarning(where, check.full));
    return out;
  }
  return [
    `Redis at ${where} cannot be checked for its maxmemory-policy (${check.unknown}): make sure it is noeviction (any other policy deletes runs when memory is full)`,
  ];
}

/**
 * Checks the policy of the server(s) behind `client` and logs a warning when it is not
 * `noeviction` (or cannot be read). Never throws.
 */
export async function checkEviction(client: RedisClient, where: string, logger: Logger | undefined): Promise<EvictionCheck> {
  const check = await evictionOf(client);
  // The policy only: a full Redis says so on the writes it refuses (BrokerFullError).
  for (const message of evictionWarnings('policy' in check ? { policy: check.policy } : check, where)) {
    logger?.warn({ redis: where, ...('policy' in check ? { maxmemoryPolicy: check.policy } : { err: check.unknown }) }, message);
  }
  return check;
}

/** Reads the policy and the memory of the server(s) behind `client` (INFO memory). Never throws. */
export async function evictionOf(client: RedisClient): Promise<EvictionCheck> {
  let infos: string[];
  try {
    infos = await infoOf(client);
  } catch (err) {
    return { unknown: `INFO refused: ${err instanceof Error ? err.message : String(err)}` };
  }
  const policies = infos.map(policyOf);
  const bad = policies.find((p) => p !== undefined && p !== 'noeviction');
  if (bad === undefined && policies.some((p) => p === undefined)) return { unknown: 'INFO memory has no maxmemory_policy' };
  const check: EvictionCheck = { policy: bad ?? 'noeviction' };
  for (const info of infos) {
    const used = Number(/^used_memory:(\d+)/m.exec(info)?.[1]);
    const max = Number(/^maxmemory:(\d+)/m.exec(info)?.[1]);
    if (max > 0 && used >= max) check.full = { used, max };
  }
  return check;
}
