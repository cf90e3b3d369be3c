/**
 * The Redis broker's reserve and settle: the worker's round trip. A reserve leases runs of its
 * queues (`lua/reserve.lua`, one call per queue, a second round for what the first left) and
 * records the outcomes that ride along with it in the same call; the settle records outcomes on
 * their own (`lua/settle.lua`). Both apply an outcome through `settleItems` in lua/outcomes.lua, whose
 * ARGV (5 per item) `pushSettlements` builds. The other transitions are in `transitions.ts`.
 */
import { QUEUE_NAME } from '../../core/ids.ts';
import { checkSpawns } from '../shared/workflow.ts';
import type { Reservation, ReserveRequest, ReserveResult, Settlement, SettleStatus } from '../types.ts';
import { byQueue, CHUNK_BYTES, CHUNK_RUNS, chunk } from './batches.ts';
import type { RedisClient } from './connection.ts';
import { type RedisCore, time } from './core.ts';
import { drainAfter } from './relay.ts';
import { reserveReply, settleRelayReply } from './replies.ts';
import { runScript } from './scripts.ts';
import { spawnPayload } from './workflows.ts';

/** Scheduled runs promoted, and expired leases recovered, per reserve call. */
const HOUSEKEEPING_LIMIT = 1000;

const settlementSize = ({ item }: { item: Settlement }) =>
  item.outcome === 'spawned'
    ? item.runs.reduce((n, r) => n + r.input.length + 200, 100)
    : (item.outcome === 'succeeded' ? (item.result?.length ?? 0) : item.outcome === 'backoff' ? 0 : item.error.length) + 100;

/** Whether settlements go in one call (what `chunk` would leave in one part), without splitting them. */
function fitsOneCall(group: readonly { item: Settlement }[]): boolean {
  if (group.length > CHUNK_RUNS) return false;
  let bytes = 0;
  for (const g of group) bytes += settlementSize(g);
  return group.length === 1 || bytes <= CHUNK_BYTES;
}

/** The ARGV of settlements, 5 per item (see settleItems in lua/outcomes.lua); `now` the call's. */
function pushSettlements(c: RedisCore, args: (string | number)[], part: readonly { item: Settlement; rid: string }[], now: number): void {
  for (const { item, rid } of part) {
    if (item.outcome === 'spawned')
      args.push(rid, item.attempt, 'w', spawnPayload(item, c.cancelledRetentionMs, now), Math.max(0, Math.floor(item.retentionMs)));
    else if (item.outcome === 'succeeded') args.push(rid, item.attempt, 's', item.result ?? '', Math.max(0, Math.floor(item.retentionMs)));
    else if (item.outcome === 'failed') args.push(rid, item.attempt, 'f', item.error, Math.max(0, Math.floor(item.retentionMs)));
    else if (item.outcome === 'retry') args.push(rid, item.attempt, 'r', item.error, Math.floor(item.runAt));
    else args.push(rid, item.attempt, 'b', item.scope === 'group' ? 'g' : 'k', Math.floor(item.until));
  }
}

/** One queue's reserve script; `settle`: this queue's outcomes to record first, in the same call. */
function reserveCall(
  c: RedisCore,
  redis: RedisClient,
  queue: string,
  req: ReserveRequest,
  max: number,
  now: number,
  settle?: readonly { item: Settlement; rid: string; index: number }[],
  statuses?: SettleStatus[],
): Promise<{ queue: string; runs: Reservation[]; nextAt: number | null; queued: number }> {
  const k = c.k(queue);
  const args: (string | number)[] = [
    k.base,
    req.workerId,
    max,
    now + Math.max(1, Math.floor(req.leaseMs)),
    now,
    c.maxLeaseLosses,
    c.failedRetentionMs,
    HOUSEKEEPING_LIMIT,
    c.eventsChannel,
    k.idPrefix,
  ];
  if (settle) pushSettlements(c, args, settle, now);
  return runScript(redis, 'reserve', [k.sched, k.active, k.prios, k.paused], args).then(async (reply) => {
    const r = reserveReply(reply, queue, k.idPrefix, now);
    if (settle && statuses)
      settle.forEach(({ index }, j) => {
        statuses[index] = r.settled[j] ? 'ok' : 'lost';
      });
    // Relay entries of workflows over several queues (written now, or left by a crash): applied now.
    if (r.relay) await drainAfter(c, [queue], now);
    return { queue, runs: r.runs, nextAt: r.nextAt, queued: r.queued };
  });
}

/**
 * One queue: one script call. Several queues: the first is asked for `max` runs while the
 * others only do their housekeeping and report how many runs they have queued, all in one
 * round; then, if slots remain, the other queues are asked, in order, for what they reported
 * (at most what remains), in a second round. Queues are served in the order requested and the
 * worker is never handed more than `max` runs. `cancelsPending`: the subscription to cancel
 * notices while it is being made (runs leased after onCancel() get their notices: waited for,
 * boundedly).
 */
export async function reserve(c: RedisCore, req: ReserveRequest, cancelsPending: Promise<void> | undefined): Promise<ReserveResult> {
  const now = time(req.now, 'now');
  const queues = [...new Set(req.queues)].filter((q) => QUEUE_NAME.test(q));
  const max = Math.max(0, Math.floor(req.max));
  const settlements = req.settle ?? [];
  checkSpawns(settlements);
  if (queues.length === 0 && settlements.length === 0) return { runs: [], nextAt: null };
  const redis = await c.ready();
  // Outcomes ride along with the first call to their queue when they fit in one call; the others
  // (other queues, or too many) are settled by a settle call made at the same time.
  const settled: SettleStatus[] = settlements.map(() => 'lost');
  const along = new Map<string, { item: Settlement; rid: string; index: number }[]>();
  let apart: Promise<void> | undefined;
  if (settlements.length) {
    const { groups } = byQueue(settlements);
    const rest: number[] = [];
    for (const [queue, group] of groups) {
      if (queues.includes(queue) && fitsOneCall(group)) along.set(queue, group);
      else for (const { index } of group) rest.push(index);
    }
    if (rest.length)
      apart = settle(
        c,
        req.workerId,
        rest.map((i) => settlements[i]!),
        now,
      ).then((r) =>
        rest.forEach((i, j) => {
          settled[i] = r[j]!;
        }),
      );
  }
  if (queues.length === 0) {
    await apart;
    return { runs: [], nextAt: null, settled };
  }
  if (cancelsPending) await c.bounded(cancelsPending);
  const [first] = await Promise.all([
    Promise.all(queues.map((q, i) => reserveCall(c, redis, q, req, i === 0 ? max : 0, now, along.get(q), settled))),
    apart,
  ]);
  const byQueueRuns = new Map<string, Reservation[]>(first.map((r) => [r.queue, r.runs]));
  let nextAt: number | null = null;
  const earliest = (t: number | null) => {
    if (t !== null && (nextAt === null || t < nextAt)) nextAt = t;
  };
  for (const r of first) earliest(r.nextAt);
  let left = max - (first[0]?.runs.length ?? 0);
  if (left > 0 && queues.length > 1) {
    const second: Promise<{ queue: string; runs: Reservation[]; nextAt: number | null }>[] = [];
    for (const r of first.slice(1)) {
      if (left <= 0) break;
      if (r.queued <= 0) continue;
      const take = Math.min(r.queued, left);
      left -= take;
      second.push(reserveCall(c, redis, r.queue, req, take, now));
    }
    for (const r of await Promise.all(second)) {
      byQueueRuns.set(r.queue, [...(byQueueRuns.get(r.queue) ?? []), ...r.runs]);
      earliest(r.nextAt);
    }
  }
  const runs = queues.flatMap((q) => byQueueRuns.get(q) ?? []);
  return settlements.length ? { runs, nextAt, settled } : { runs, nextAt };
}

export async function settle(c: RedisCore, workerId: string, settlements: readonly Settlement[], now: number): Promise<SettleStatus[]> {
  if (settlements.length === 0) return [];
  now = time(now, 'now');
  checkSpawns(settlements);
  const statuses: SettleStatus[] = settlements.map(() => 'lost');
  const { groups } = byQueue(settlements);
  if (groups.size === 0) return statuses;
  const redis = await c.ready();
  const calls: Promise<void>[] = [];
  const relay = new Set<string>();
  for (const [queue, group] of groups) {
    const k = c.k(queue);
    for (const part of chunk(group, settlementSize)) {
      const args: (string | number)[] = [k.base, workerId, now, c.eventsChannel, k.idPrefix];
      pushSettlements(c, args, part, now);
      calls.push(
        runScript(redis, 'settle', [k.active, k.sched], args).then((reply) => {
          const r = settleRelayReply(reply);
          part.forEach(({ index }, j) => {
            statuses[index] = r.applied[j] ? 'ok' : 'lost';
          });
          if (r.relay) relay.add(queue);
        }),
      );
    }
  }
  await Promise.all(calls);
  // Dependents in other queues (workflows over several queues): relayed right after the settle.
  if (relay.size) await drainAfter(c, relay, now);
  return statuses;
}
