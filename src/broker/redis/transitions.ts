/**
 * The Redis broker's state transitions: enqueue, renew, release, progress, cancel, retry and prune
 * (reserve and settle, the worker's round trip: `reserve.ts`; recordFinished: `record.ts`), each
 * one Lua script call per queue (`lua/<name>.lua`; batches chunked only when very large), calls for
 * several queues issued together. Replies are read through the typed decoders of `replies.ts`.
 */
import { ConfigError } from '../../core/errors.ts';
import { show } from '../../core/show.ts';
import type { CancelOutcome, EnqueueResult, Lease, NewRun, RetryOutcome, RunState, SettleStatus } from '../types.ts';
import { CorruptRunError, STATE_OF_CODE, splitRunId } from './codec.ts';
import { type RedisCore, time } from './core.ts';
import { byQueue, CHUNK_BYTES, CHUNK_RUNS, chunk } from './batches.ts';
import { drainAfter } from './relay.ts';
import { codeReply, enqueueReply, progressReply, renewReply, sliceReply } from './replies.ts';
import { pushRunArgs } from './run-args.ts';
import { runScript } from './scripts.ts';
import { sweepPending } from './workflows.ts';

/** Finished runs deleted per state per prune call. */
const PRUNE_LIMIT = 1000;

export async function enqueue(c: RedisCore, runs: readonly NewRun[], now: number): Promise<EnqueueResult[]> {
  if (runs.length === 0) return [];
  now = time(now, 'now');
  // Runs by queue (indexes into `runs`), every id checked before anything is written.
  const groups = new Map<string, number[]>();
  const rids: string[] = new Array(runs.length);
  for (let i = 0; i < runs.length; i++) {
    const run = runs[i]!;
    const parts = splitRunId(run.id);
    if (!parts) throw new ConfigError(`enqueue: run id ${show(run.id)} is not a run id (expected <queue>.<ulid>, see newRunId)`);
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
