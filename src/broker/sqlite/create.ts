/**
 * The creation of a run, in one place: enqueue (transitions.ts), the schedule fire step
 * (schedules.ts, through enqueue's body) and workflows (workflows.ts) all write a new run with
 * `insertRun`, so a run has the same columns whichever way it was made: its flow spec
 * (docs/flow-control.md), schedule mark and deadline to start included.
 */
import { markText, type RunState } from '../../core/run.ts';
import { rateText } from '../shared/flow.ts';
import { ownRetention } from '../shared/options.ts';
import type { NewRun } from '../types.ts';
import type { SqliteCore } from './core.ts';

/** What a run of a workflow stores besides (see docs/workflows.md). */
export interface WorkflowPart {
  id: string;
  /** How its input is built once ready ('given' for its own). */
  inputFrom: string;
}

/**
 * Inserts run `run` in state `state` with sequence number `seq`, inside the caller's transaction.
 * Returns 0 when a run of that id exists (nothing written), else 1. Only the row: its flow counts,
 * idempotency key, stats and signals are the caller's.
 */
export function insertRun(c: SqliteCore, run: NewRun, state: RunState, seq: number, now: number, runAt: number, wf?: WorkflowPart): number {
  const f = run.flow;
  return c.change(
    'insert',
    run.id,
    run.queue,
    state,
    run.task,
    run.priority,
    seq,
    run.input,
    now,
    runAt,
    run.idempotencyKey ?? null,
    run.traceparent ?? null,
    ownRetention(run.cancelledRetentionMs) ?? null,
    run.schedule ? markText(run.schedule) : null,
    run.startBy ?? null,
    f ? f.group : null,
    f ? f.key : null,
    f ? (f.concurrency ?? 0) : null,
    f ? (f.groupConcurrency ?? 0) : null,
    f ? rateText(f.rate) : null,
    f ? rateText(f.groupRate) : null,
    f ? (f.weight ?? 1) : null,
    wf ? wf.id : null,
    wf ? wf.inputFrom : null,
  );
}
