/**
 * One run cancelled, inside the caller's transaction: the one way for `cancel` (transitions.ts)
 * and `cancelWorkflow` (workflows.ts), apart from both so that neither imports the other.
 */
import type { RunState } from '../types.ts';
import type { SqliteCore } from './core.ts';
import { flowMove, flowOf } from './flow-counts.ts';
import type { Row } from './statements.ts';

/** Whether a run in `state` can be cancelled: it has not finished. */
export function cancellable(state: RunState): state is 'waiting' | 'queued' | 'scheduled' | 'active' {
  return state === 'waiting' || state === 'queued' || state === 'scheduled' || state === 'active';
}

/**
 * Cancels run `id`, read as `row` (statement `stateOf`) in `state`, which the caller checked is
 * cancellable (waiting, queued, scheduled or active): finished as cancelled (kept its own retention, stored at
 * enqueue, else the broker's), an active run's cancel logged for its worker, and under flow control
 * its key's counts moved out of queued or active. Returns the queue whose flow slot it freed (its
 * signal bumped: the key may be ready again, other workers look), else undefined. Telling the wake
 * hub and resolving a workflow's edges are the caller's.
 */
export function cancelIn(c: SqliteCore, id: string, row: Row, state: RunState, now: number): string | undefined {
  c.s.cancel.run({ id, now, retention: c.cancelledRetentionMs });
  if (state === 'active') c.s.cancelLog.run(id, now);
  const f = flowOf(row);
  if (f && state === 'queued') flowMove(c, f, -1, 0);
  if (f && state === 'active') {
    flowMove(c, f, 0, -1);
    c.bump(f.queue);
    return f.queue;
  }
  return undefined;
}
