/** The Redis broker's recordFinished: runs that ran elsewhere stored as finished (`lua/record.lua`). */
import { checkFinishedRun } from '../shared/finished.ts';
import { DAY } from '../shared/options.ts';
import type { FinishedRun } from '../types.ts';
import { byQueue, chunk } from './batches.ts';
import { type RedisCore, time } from './core.ts';
import { settleReply } from './replies.ts';
import { runScript } from './scripts.ts';

/** Records runs that ran elsewhere as finished (record.lua), one call per queue (chunked when large). */
export async function recordFinished(c: RedisCore, runs: readonly FinishedRun[], now: number): Promise<boolean[]> {
  if (runs.length === 0) return [];
  now = time(now, 'now');
  for (const run of runs) checkFinishedRun(run);
  const { groups } = byQueue(runs);
  const redis = await c.ready();
  const recorded: boolean[] = runs.map(() => false);
  const calls: Promise<unknown>[] = [];
  for (const [queue, group] of groups) {
    if (!c.knows(queue)) calls.push(c.remember([queue]));
    const k = c.k(queue);
    for (const part of chunk(group, ({ item }) => item.input.length + (item.result?.length ?? 0) + (item.error?.length ?? 0) + 200)) {
      const args: (string | number)[] = [k.base, now];
      for (const { item: r, rid } of part) {
        args.push(
          rid,
          r.task,
          r.input,
          r.outcome === 'succeeded' ? 'd' : 'f',
          (r.outcome === 'succeeded' ? r.result : r.error) ?? '',
          Math.max(1, Math.floor(r.attempts)),
          r.worker,
          Math.floor(r.startedAt),
          Math.floor(r.retentionMs),
          r.idempotencyKey ?? '',
          r.idempotencyKey ? Math.max(1, Math.floor(r.idempotencyTtl ?? DAY)) : 0,
          r.origin,
        );
      }
      calls.push(
        runScript(redis, 'record', [k.expiryMinutes], args).then((reply) => {
          const applied = settleReply(reply);
          part.forEach(({ index }, j) => {
            recorded[index] = applied[j] === true;
          });
        }),
      );
    }
  }
  await Promise.all(calls);
  return recorded;
}
