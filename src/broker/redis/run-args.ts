/**
 * A new run as the creating scripts take it: the 14 values of `newRun` in lua/runs.lua, the one
 * layout of enqueue.lua, schedfire.lua, wfcreate.lua and a spawn's runs (settle and reserve, through
 * `wfSpawn`), the last two with a workflow run's 2 more after them (`pushWorkflowRunArgs`). One
 * builder, and one reader in Lua, so a run has the same fields whichever way it was made: its flow
 * spec (docs/flow-control.md) and schedule mark included.
 */
import { timeOfRunId } from '../../core/ids.ts';
import { markText } from '../../core/run.ts';
import { rateText } from '../shared/flow.ts';
import { DAY, ownRetention } from '../shared/options.ts';
import type { FlowSpec, NewRun, NewWorkflowRun } from '../types.ts';

/** How many values `pushRunArgs` gives per run. */
export const RUN_ARGS = 14;
/** How many values `pushWorkflowRunArgs` gives per run: `pushRunArgs`'s, then inputFrom and dependencies. */
export const WORKFLOW_RUN_ARGS = RUN_ARGS + 2;

/** How a workflow run's input is built, as the M field stores it: given '' (the run's own), value v, list l, object o. */
export const MODE_CODE: Readonly<Record<string, string>> = { given: '', value: 'v', list: 'l', object: 'o' };

/** A run's flow spec as the scripts take it: `<group>|<key limit>|<group limit>|<key rate>|<group rate>|<key weight>|<key>`. */
export function flowArg(f: FlowSpec): string {
  return `${f.group}|${f.concurrency ?? 0}|${f.groupConcurrency ?? 0}|${rateText(f.rate)}|${rateText(f.groupRate)}|${f.weight ?? 1}|${f.key}`;
}

/**
 * Appends the 14 values of run `run` (its id's ULID part `rid`) to `args`: rid, task, input,
 * priority, runAt, enqueuedAt ('' when it is the time in the run id), idempotency key, its ttl,
 * traceparent, retention once cancelled (its own; else `retention`, given for a workflow's runs,
 * which always store theirs; else '' for the broker's default), flow spec, schedule mark,
 * deadline to start, debounce.
 */
export function pushRunArgs(args: (string | number)[], run: NewRun, rid: string, now: number, retention?: number): void {
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
    ownRetention(run.cancelledRetentionMs) ?? retention ?? '',
    run.flow ? flowArg(run.flow) : '',
    run.schedule ? markText(run.schedule) : '',
    run.startBy === undefined ? '' : Math.floor(run.startBy),
    run.debounce ? `${run.debounce.maxAt === null ? '' : Math.floor(run.debounce.maxAt)}|${run.debounce.key}` : '',
  );
}

/**
 * Appends the 16 values of a workflow's run (wfcreate.lua; a spawn's runs): `pushRunArgs`'s, its
 * retention once cancelled always given (`retention`, the broker's default, unless its own), then
 * how its input is built (MODE_CODE) and its dependencies as the D field stores them (`deps`).
 */
export function pushWorkflowRunArgs(
  args: (string | number)[],
  run: NewWorkflowRun,
  rid: string,
  now: number,
  retention: number,
  deps: string,
): void {
  pushRunArgs(args, run, rid, now, retention);
  args.push(MODE_CODE[run.inputFrom ?? 'given'] ?? '', deps);
}
