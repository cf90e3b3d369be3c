/** The checks both brokers make of runs recorded finished (`recordFinished`, see FinishedRun in ../types.ts). */
import { ConfigError } from '../../core/errors.ts';
import { isRunId, queueOfRunId } from '../../core/ids.ts';
import { show } from '../../core/show.ts';
import type { FinishedRun } from '../types.ts';

/** Throws a ConfigError naming the run and what is wrong with it. */
export function checkFinishedRun(run: FinishedRun): void {
  if (typeof run.id !== 'string' || !isRunId(run.id)) {
    throw new ConfigError(`recordFinished: run id ${show(run.id)} is not a run id (expected <queue>.<ulid>, see newRunId)`);
  }
  const queue = queueOfRunId(run.id);
  if (run.queue !== queue) {
    throw new ConfigError(`recordFinished: run ${run.id} names queue "${run.queue}", but its id belongs to queue "${queue}"`);
  }
  if (run.outcome !== 'succeeded' && run.outcome !== 'failed') {
    throw new ConfigError(`recordFinished: run ${run.id} has outcome ${show(run.outcome)} (expected "succeeded" or "failed")`);
  }
  if (run.outcome === 'failed' && typeof run.error !== 'string') {
    throw new ConfigError(`recordFinished: failed run ${run.id} has no error`);
  }
  for (const [name, value] of [
    ['attempts', run.attempts],
    ['startedAt', run.startedAt],
    ['retentionMs', run.retentionMs],
  ] as const) {
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      throw new ConfigError(`recordFinished: run ${run.id} has ${name} ${show(value)} (expected a finite number)`);
    }
  }
}
