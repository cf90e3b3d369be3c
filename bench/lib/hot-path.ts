/**
 * The broker's hot path without a worker, for the tools that measure what it costs
 * (tools/script-cost.ts, tools/flow-cost.ts): runs of `bench_noop` enqueued on queue `bench` 1,000
 * per call, then leased `batch` at a time by `reserve` calls that carry the outcomes of an earlier
 * batch, with `depth` batches leased at a time, as a worker sends them (a worker at concurrency 50
 * keeps two reservations of 25 in flight).
 */
import type { Broker, NewRun, Settlement } from '../../src/broker/types.ts';

const INPUT = JSON.stringify({ username: 'u', email: 'u@example.com' });

/** Enqueues `runs` runs, 1,000 per call; `extra(j)` adds fields to the j-th (e.g. a flow spec). */
export async function enqueueRuns(broker: Broker, runs: number, extra?: (j: number) => Partial<NewRun>): Promise<void> {
  for (let i = 0; i < runs; i += 1000) {
    const now = Date.now();
    const chunk: NewRun[] = [];
    for (let j = i; j < Math.min(runs, i + 1000); j++) {
      chunk.push({
        id: `bench.${ulidish(now, j)}`,
        task: 'bench_noop',
        queue: 'bench',
        input: INPUT,
        priority: 0,
        runAt: now,
        ...extra?.(j),
      });
    }
    await broker.enqueue(chunk, now);
  }
}

/**
 * Leases every queued run (see the header), each settled as succeeded with `result`, kept
 * `retentionMs`. Returns how many outcomes were stored.
 */
export async function leaseAll(
  broker: Broker,
  o: { batch: number; depth: number; result: string | null; retentionMs: number },
): Promise<number> {
  const held: Settlement[][] = [];
  let done = 0;
  let draining = false;
  for (;;) {
    const settle = held.length >= o.depth || draining ? (held.shift() ?? []) : [];
    const now = Date.now();
    const res = await broker.reserve({ workerId: 'w1', queues: ['bench'], max: o.batch, leaseMs: 30_000, now, settle });
    done += settle.length;
    if (res.runs.length === 0 && held.length === 0) return done;
    if (res.runs.length)
      held.push(
        res.runs.map((run) => ({ id: run.id, attempt: run.attempt, outcome: 'succeeded', result: o.result, retentionMs: o.retentionMs })),
      );
    else draining = true;
  }
}

/** A run id part: 10 time characters and 16 more, unique per j. */
export function ulidish(now: number, j: number): string {
  const A = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
  let t = '';
  for (let i = 0, v = now; i < 10; i++, v = Math.floor(v / 32)) t = A[v % 32] + t;
  let s = '';
  for (let i = 0, v = j; i < 16; i++, v = Math.floor(v / 32)) s = A[v % 32] + s;
  return t + s;
}
