/**
 * The layout version of a Redis broker's keys, and its migrations: what `../sqlite/schema.ts` is
 * for a SQLite file.
 *
 * Records (see docs/redis-broker.md, "Layout version and upgrades"):
 * - `<prefix>:layout` (hash): `version`, the layout the keys under the prefix are in; `compatible`,
 *   the oldest layout whose code may still run on them (so that a rolling deploy can keep older
 *   workers running beside newer ones when a step allows it); `at`, when it changed.
 * - `<prefix>:{<queue>}:layout` (string): the version a queue's keys were migrated to. It shares
 *   the queue's hash tag, so that on Redis Cluster a queue's migration and its marker are one
 *   atomic script on the queue's node (`lua/migrate.lua`); the prefix record, which no script can
 *   update together with every queue, is raised only once every queue is done.
 *
 * On its first command a broker reads the record:
 * - none, and no `<prefix>:queues` set: an empty prefix; the current version is recorded (a broker
 *   opened with `existingPrefix` refuses it instead, with `EmptyPrefixError`, writing nothing).
 * - none, but queues: keys written before the record existed (layout 1), migrated as below.
 * - older: each queue in `<prefix>:queues` is migrated by `migrate.lua`, step by step, in one
 *   atomic call per queue that first reads the queue's marker: brokers starting together apply
 *   each step to each queue once. Then the record is raised (never lowered).
 * - newer, with `compatible` at or below this version: used as is (the newer code said this code
 *   may keep running on it); newer and not compatible: refused with `BrokerConfigError`.
 */
import type { Logger } from 'pino';
import { BrokerConfigError, BrokerUnavailableError, EmptyPrefixError } from '../../core/errors.ts';
import { QUEUE_NAME } from '../../core/ids.ts';
import type { RedisClient } from './connection.ts';
import { runScript } from './scripts.ts';

export interface LayoutStep {
  version: number;
  /** The oldest layout whose code may run on keys in this one (during a rolling deploy). */
  compatible: number;
  description: string;
}

/** Every layout, oldest first. A step's changes to the keys of a queue live in `lua/migrate.lua`. */
export const LAYOUT_STEPS: readonly LayoutStep[] = [
  {
    version: 1,
    compatible: 1,
    description: 'the keys of every Errand before the layout record: no record, no markers',
  },
  {
    version: 2,
    compatible: 1,
    description:
      'the layout record and per-queue markers; every lease set holds its pin at the finite score (builds ad5dc52 to 27c37c3 scored it +inf)',
  },
  {
    version: 3,
    compatible: 3,
    description:
      "flow control keeps each key's state (with its queued count) in one field of its group's hash fy|<group> instead of a hash fk|<group>|<key> of its own; code of layout 2 would misread it",
  },
  {
    version: 4,
    compatible: 4,
    description:
      "flow control packs each key's state in fy|<group> as 45 bytes (struct, numbers stored directly) instead of text; code of layout 3 would misread it",
  },
];

const CURRENT = LAYOUT_STEPS[LAYOUT_STEPS.length - 1]!;

/** The layout version this code writes. */
export const LAYOUT_VERSION = CURRENT.version;

/** The key recording the layout of a prefix. */
export function layoutKey(prefix: string): string {
  return `${prefix}:layout`;
}

/** The marker recording the layout a queue's keys were migrated to. */
export function queueLayoutKey(prefix: string, queue: string): string {
  return `${prefix}:{${queue}}:layout`;
}

export interface LayoutReport {
  /** The version found: null for an empty prefix. */
  from: number | null;
  /** The version the keys are in now (above LAYOUT_VERSION when a newer, compatible Errand wrote them). */
  version: number;
  /** Queues this call migrated (0 when another process had done them, or nothing was due). */
  queuesMigrated: number;
}

function parseVersion(value: string | undefined | null): number | undefined {
  return value !== undefined && value !== null && /^[1-9]\d{0,8}$/.test(value) ? Number(value) : undefined;
}

/**
 * Brings the keys under `prefix` to LAYOUT_VERSION (see the file's comment), or refuses them with
 * `BrokerConfigError` when a newer, incompatible Errand wrote them. `claimEmpty` false: an empty
 * prefix is refused with `EmptyPrefixError` instead of recorded.
 */
export async function ensureLayout(
  client: RedisClient,
  prefix: string,
  where: string,
  now = Date.now(),
  claimEmpty = true,
): Promise<LayoutReport> {
  const target = LAYOUT_VERSION;
  const key = layoutKey(prefix);
  const place = `Redis at ${where}, key ${key}`;
  let record: Record<string, string>;
  try {
    record = await client.hgetall(key);
  } catch (err) {
    if (/WRONGTYPE/.test(String(err))) {
      throw new BrokerConfigError(`${place} is not a hash: the prefix ${JSON.stringify(prefix)} holds keys Errand did not write`);
    }
    throw err;
  }
  let from: number | null;
  if (record.version === undefined) {
    from = (await client.exists(`${prefix}:queues`)) ? 1 : null;
    if (from === null && !claimEmpty) {
      throw new EmptyPrefixError(
        `Redis at ${where} has nothing under the key prefix ${JSON.stringify(prefix)} (no ${key}, no ${prefix}:queues): is the prefix right?`,
      );
    }
  } else {
    from = parseVersion(record.version) ?? null;
    const compatible = parseVersion(record.compatible) ?? from;
    if (from === null || compatible === null) {
      throw new BrokerConfigError(
        `${place}: unreadable layout record ${JSON.stringify(record)}; fix or delete it (see docs/redis-broker.md)`,
      );
    }
    if (compatible > target) {
      throw new BrokerConfigError(
        `${place}: the keys under prefix ${JSON.stringify(prefix)} have layout version ${from}, written by a newer Errand ` +
          `(this one knows up to ${target}, and that layout needs ${compatible} or later): upgrade Errand, or use another prefix`,
      );
    }
    if (from >= target) return { from, version: from, queuesMigrated: 0 };
  }

  let queuesMigrated = 0;
  if (from !== null) {
    const queues = (await client.smembers(`${prefix}:queues`)).filter((q) => QUEUE_NAME.test(q));
    const applied = await Promise.all(
      queues.map(
        (queue) =>
          runScript(client, 'migrate', [queueLayoutKey(prefix, queue)], [`${prefix}:{${queue}}:`, from, target]) as Promise<number>,
      ),
    );
    queuesMigrated = applied.filter((n) => n > 0).length;
  }
  const [version] = (await runScript(client, 'layout', [key], [target, CURRENT.compatible, now])) as [string, string];
  return { from, version: Number(version), queuesMigrated };
}

/**
 * The layout check of one broker instance: run before its first command, again after a failure
 * (Redis down, or a newer layout refused: the next call looks again), never once it passed.
 */
export class LayoutGuard {
  /** True once the keys are known to be in a layout this code can use. */
  ready = false;
  readonly #prefix: string;
  readonly #where: string;
  readonly #logger: Logger | undefined;
  /** Whether an empty prefix is recorded (the default) or refused (`existingPrefix`). */
  readonly #claimEmpty: boolean;
  #pending: Promise<void> | undefined;

  constructor(prefix: string, where: string, logger?: Logger, claimEmpty = true) {
    this.#prefix = prefix;
    this.#where = where;
    this.#logger = logger;
    this.#claimEmpty = claimEmpty;
  }

  ensure(client: RedisClient): Promise<void> {
    this.#pending ??= ensureLayout(client, this.#prefix, this.#where, Date.now(), this.#claimEmpty).then(
      (report) => {
        this.ready = true;
        if (report.queuesMigrated > 0) {
          this.#logger?.info(
            { redis: this.#where, prefix: this.#prefix, from: report.from, to: report.version, queues: report.queuesMigrated },
            'Redis keys migrated to a new layout',
          );
        }
      },
      (err: unknown) => {
        this.#pending = undefined;
        if (err instanceof BrokerUnavailableError) throw err;
        throw new BrokerUnavailableError(`Could not check the layout of the Redis keys at ${this.#where}: ${String(err)}`, {
          cause: err,
        });
      },
    );
    return this.#pending;
  }
}
