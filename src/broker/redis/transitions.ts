/**
 * The Redis broker's state transitions: enqueue, reserve, settle, renew, release, progress,
 * cancel, retry and prune (recordFinished: `record.ts`), each one Lua script call per queue (`lua/<name>.lua`; batches chunked
 * only when very large), calls for several queues issued together. Replies are read through the
 * typed decoders of `replies.ts`.
 */
import { ConfigError } from '../../core/errors.ts';
import { QUEUE_NAME } from '../../core/ids.ts';
import { checkSpawns } from '../shared/workflow.ts';
import type {
  CancelOutcome,
  EnqueueResult,
  Lease,
  NewRun,
  Reservation,
  ReserveRequest,
  ReserveResult,
  RetryOutcome,
  RunState,
  Settlement,
  SettleStatus,
} from '../types.ts';
import { CorruptRunError, STATE_OF_CODE, splitRunId } from './codec.ts';
import type { RedisClient } from './connection.ts';
import { type RedisCore, time } from './core.ts';
import { byQueue, CHUNK_BYTES, CHUNK_RUNS, chunk } from './batches.ts';
import { drainAfter } from './relay.ts';
import { codeReply, enqueueReply, progressReply, renewReply, reserveReply, settleRelayReply, sliceReply } from './replies.ts';
import { pushRunArgs } from './run-args.ts';
import { runScript } from './scripts.ts';
import { spawnPayload, sweepPending } from './workflows.ts';

/** Scheduled runs promoted, and expired leases recovered, per reserve call. */
const HOUSEKEEPING_LIMIT = 1000;
/** Finished runs deleted per state per prune call. */
const PRUNE_LIMIT = 1000;

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

/** The ARGV of settlements, 5 per item (see settleItems in lua/common.lua); `now` the call's. */
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

export async function enqueue(c: RedisCore, runs: readonly NewRun[], now: number): Promise<EnqueueResult[]> {
  if (runs.length === 0) return [];
  now = time(now, 'now');
  // Runs by queue (indexes into `runs`), every id checked before anything is written.
  const groups = new Map<string, number[]>();
  const rids: string[] = new Array(runs.length);
  for (let i = 0; i < runs.length; i++) {
    const run = runs[i]!;
    const parts = splitRunId(run.id);
    if (!parts) throw new ConfigError(`enqueue: run id ${JSON.stringify(run.id)} is not a run id (expected <queue>.<ulid>, see newRunId)`);
    if (parts.queue !== run.queue) {
      throw new ConfigError(`enqueue: run ${run.id} names queue "${run.queue}", but its id belongs to queue "${parts.queue}"`);
    }
    rids[i] = parts.rid;
    const g = groups.get(parts.queue);
    if (g) g.push(i);
    else groups.set(parts.queue, [i]);
  }
  const redis = await c.ready();
  const results: EnqueueResult[] = new Array(runs.length);
  const calls: Promise<unknown>[] = [];
  for (const [queue, indexes] of groups) {
    if (!c.knows(queue)) calls.push(c.remember([queue]));
    const k = c.k(queue);
    // Chunks of one queue go one after another, so that a retried call (a NOSCRIPT reload, a
    // cluster redirect) can never put a later chunk's runs ahead of an earlier one's (FIFO).
    let chain: Promise<unknown> = Promise.resolve();
    for (let from = 0; from < indexes.length; ) {
      // One call per CHUNK_RUNS runs or about CHUNK_BYTES of input.
      const part: number[] = [];
      const args: (string | number)[] = [k.base, now];
      let bytes = 0;
      while (from < indexes.length && part.length < CHUNK_RUNS && (part.length === 0 || bytes < CHUNK_BYTES)) {
        const i = indexes[from++]!;
        const run = runs[i]!;
        part.push(i);
        bytes += run.input.length + 200;
        pushRunArgs(args, run, rids[i]!, now);
      }
      chain = chain.then(() =>
        runScript(redis, 'enqueue', [k.sched], args).then((reply) => {
          const created = enqueueReply(reply);
          for (let j = 0; j < part.length; j++) {
            const r = created[j];
            results[part[j]!] = {
              id: k.idPrefix + String(r?.rid),
              created: r?.created === true,
              state: STATE_OF_CODE[r?.code ?? 'q'] ?? 'queued',
            };
          }
        }),
      );
    }
    calls.push(chain);
  }
  await (calls.length === 1 ? calls[0] : Promise.all(calls));
  return results;
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

export async function renew(c: RedisCore, workerId: string, leases: readonly Lease[], leaseMs: number, now: number): Promise<string[]> {
  if (leases.length === 0) return [];
  now = time(now, 'now');
  const { groups, invalid } = byQueue(leases);
  const lost = invalid.map((i) => leases[i]!.id);
  if (groups.size === 0) return lost;
  const redis = await c.ready();
  const expiry = now + Math.max(1, Math.floor(leaseMs));
  const calls: Promise<void>[] = [];
  for (const [queue, group] of groups) {
    const k = c.k(queue);
    for (const part of chunk(group, () => 40)) {
      const args: (string | number)[] = [k.base, workerId, expiry];
      for (const { item, rid } of part) args.push(rid, item.attempt);
      calls.push(
        runScript(redis, 'renew', [k.active], args).then((reply) => {
          for (const rid of renewReply(reply)) lost.push(k.id(rid));
        }),
      );
    }
  }
  await Promise.all(calls);
  return lost;
}

export async function release(c: RedisCore, workerId: string, leases: readonly Lease[], now: number): Promise<void> {
  if (leases.length === 0) return;
  now = time(now, 'now');
  const { groups } = byQueue(leases);
  if (groups.size === 0) return;
  const redis = await c.ready();
  const calls: Promise<unknown>[] = [];
  for (const [queue, group] of groups) {
    const k = c.k(queue);
    for (const part of chunk(group, () => 40)) {
      const args: (string | number)[] = [k.base, workerId, now, c.eventsChannel, k.idPrefix];
      for (const { item, rid } of part) args.push(rid, item.attempt);
      calls.push(runScript(redis, 'release', [k.active], args));
    }
  }
  await Promise.all(calls);
}

export async function progress(c: RedisCore, workerId: string, lease: Lease, value: string): Promise<SettleStatus> {
  const parts = splitRunId(lease.id);
  if (!parts) return 'lost';
  const k = c.k(parts.queue);
  const redis = await c.ready();
  const r = await runScript(redis, 'progress', [k.run(parts.rid)], [workerId, lease.attempt, value, c.eventsChannel, lease.id]);
  return progressReply(r) ? 'ok' : 'lost';
}

function stateOfCode(code: string | undefined, id: string, key: string): RunState {
  const state = code === undefined ? undefined : STATE_OF_CODE[code];
  if (!state) throw new CorruptRunError(id, key, `unknown state code ${JSON.stringify(code)}`);
  return state;
}

export async function cancel(c: RedisCore, id: string, now: number): Promise<CancelOutcome> {
  now = time(now, 'now');
  const parts = splitRunId(id);
  if (!parts) return { outcome: 'not_found' };
  const k = c.k(parts.queue);
  const redis = await c.ready();
  const key = k.run(parts.rid);
  const r = codeReply(
    await runScript(redis, 'cancel', [key], [k.base, parts.rid, now, c.cancelledRetentionMs, c.eventsChannel, c.cancelsChannel, id]),
  );
  if (r.relay) await drainAfter(c, [parts.queue], now);
  switch (r.code) {
    case 'C':
      return { outcome: 'cancelled', previous: stateOfCode(r.state, id, key) };
    case 'F':
      return { outcome: 'finished', state: stateOfCode(r.state, id, key) };
    case 'N':
      return { outcome: 'not_found' };
    default:
      throw new CorruptRunError(id, key, 'it is not a hash with a known state');
  }
}

export async function retry(c: RedisCore, id: string, now: number): Promise<RetryOutcome> {
  now = time(now, 'now');
  const parts = splitRunId(id);
  if (!parts) return { outcome: 'not_found' };
  const k = c.k(parts.queue);
  const redis = await c.ready();
  const key = k.run(parts.rid);
  const r = codeReply(await runScript(redis, 'retry', [key], [k.base, parts.rid, c.eventsChannel, id, now]));
  if (r.relay) await drainAfter(c, [parts.queue], now);
  switch (r.code) {
    case 'Q':
      return { outcome: 'queued' };
    case 'S':
      return { outcome: 'not_failed', state: stateOfCode(r.state, id, key) };
    case 'N':
      return { outcome: 'not_found' };
    case 'R':
      return { outcome: 'recorded', origin: r.state ?? '' };
    default:
      throw new CorruptRunError(id, key, 'it is not a hash with a known state');
  }
}

export async function prune(c: RedisCore, now: number): Promise<number> {
  now = time(now, 'now');
  const redis = await c.ready();
  const queues = await c.allQueues(redis);
  const removed = await Promise.all(
    queues.map(async (queue) => {
      const k = c.k(queue);
      let total = 0;
      for (;;) {
        const r = sliceReply(
          await runScript(
            redis,
            'prune',
            [k.succeeded, k.failed, k.cancelled, k.expiryMinutes],
            [k.base, now, PRUNE_LIMIT, PRUNE_LIMIT, c.eventsChannel, k.idPrefix],
          ),
        );
        total += r.count;
        if (!r.more) return total;
      }
    }),
  );
  // The sweep of workflows over several queues: creations and relay entries a crash left unfinished.
  await sweepPending(c, queues, now).catch((err: unknown) =>
    c.logger?.warn({ err }, 'Redis broker: the sweep of unfinished workflow creations failed; the next prune tries again'),
  );
  await drainAfter(c, queues, now);
  return removed.reduce((a, b) => a + b, 0);
}
