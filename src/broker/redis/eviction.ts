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

/** What the last check found: the policy, or why it could not be read. */
export type EvictionCheck = { policy: string } | { unknown: string };

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

/** The sentences a check gives (none for `noeviction`): the same words in the log and in `storageWarnings()`. */
export function evictionWarnings(check: EvictionCheck, where: string): string[] {
  if ('policy' in check) return check.policy === 'noeviction' ? [] : [evictionWarning(check.policy, where)];
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
  for (const message of evictionWarnings(check, where)) {
    logger?.warn({ redis: where, ...('policy' in check ? { maxmemoryPolicy: check.policy } : { err: check.unknown }) }, message);
  }
  return check;
}

async function evictionOf(client: RedisClient): Promise<EvictionCheck> {
  let infos: string[];
  try {
    infos = await infoOf(client);
  } catch (err) {
    return { unknown: `INFO refused: ${err instanceof Error ? err.message : String(err)}` };
  }
  const policies = infos.map(policyOf);
  const bad = policies.find((p) => p !== undefined && p !== 'noeviction');
  if (bad !== undefined) return { policy: bad };
  if (policies.some((p) => p === undefined)) return { unknown: 'INFO memory has no maxmemory_policy' };
  return { policy: 'noeviction' };
}
