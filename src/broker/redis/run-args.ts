/**
 * A new run as the creating scripts take it: the 14 values of `newRun` in lua/common.lua, the one
 * layout of enqueue.lua, schedfire.lua and wfcreate.lua (which adds its own after them). One
 * builder, so a run has the same fields whichever way it was made: its flow spec
 * (docs/flow-control.md) and schedule mark included.
 */
import { timeOfRunId } from '../../core/ids.ts';
import { markText } from '../../core/run.ts';
import { rateText } from '../shared/flow.ts';
import { DAY, ownRetention } from '../shared/options.ts';
import type { FlowSpec, NewRun } from '../types.ts';

/** How many values `runArgs` gives per run. */
export const RUN_ARGS = 14;

/** A run's flow spec as the scripts take it: `<group>|<key limit>|<group limit>|<key rate>|<group rate>|<key weight>|<key>`. */
export function flowArg(f: FlowSpec): string {
  return `${f.group}|${f.concurrency ?? 0}|${f.groupConcurrency ?? 0}|${rateText(f.rate)}|${rateText(f.groupRate)}|${f.weight ?? 1}|${f.key}`;
}

/**
 * Appends the 14 values of run `run` (its id's ULID part `rid`) to `args`: rid, task, input,
 * priority, runAt, enqueuedAt ('' when it is the time in the run id), idempotency key, its ttl,
 * traceparent, retention once cancelled ('' for the broker's default), flow spec, schedule mark,
 * deadline to start, debounce.
 */
export function pushRunArgs(args: (string | number)[], run: NewRun, rid: string, now: number): void {
  const runAt = Math.floor(run.runAt);
  args.push(
    rid,
    run.task,
    run.input,
    Math.trunc(run.priority || 0),
    Number.isFinite(runAt) ? runAt : now,
    timeOfRunId(run.id) === now ? '' : now,
    run.idempotencyKey ?? '',
    run.idempotencyKey ? Math.max(1, Math.floor(run.idempotencyTtl ?? DAY)) : 0,
    run.traceparent ?? '',
    ownRetention(run.cancelledRetentionMs) ?? '',
    run.flow ? flowArg(run.flow) : '',
    run.schedule ? markText(run.schedule) : '',
    run.startBy === undefined ? '' : Math.floor(run.startBy),
    run.debounce ? `${run.debounce.maxAt === null ? '' : Math.floor(run.debounce.maxAt)}|${run.debounce.key}` : '',
  );
}
