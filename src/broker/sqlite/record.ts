/** The SQLite broker's recordFinished: runs that ran elsewhere stored as finished. */
import { timeOfRunId } from '../../core/ids.ts';
import { checkFinishedRun } from '../shared/finished.ts';
import { DAY } from '../shared/options.ts';
import type { FinishedRun } from '../types.ts';
import type { SqliteCore } from './core.ts';
import { num } from './statements.ts';

/** Records runs that ran elsewhere as finished (see FinishedRun), in one transaction. */
export function recordFinished(c: SqliteCore, runs: readonly FinishedRun[], now: number): boolean[] {
  c.open();
  for (const run of runs) checkFinishedRun(run);
  if (runs.length === 0) return [];
  const changed: string[] = [];
  const results = c.tx(() => {
    const base = c.takeSeq(runs.length);
    return runs.map((run, i) => {
      const key = run.idempotencyKey;
      if (key !== undefined) {
        const hit = c.row('idemGet', run.queue, run.task, key);
        // A key held by a run that still exists stands (see enqueue).
        if (hit && (num(hit.expires_at) ?? 0) > now && c.row('stateOf', String(hit.run_id))) return false;
      }
      if (c.row('stateOf', run.id)) return false;
      const enqueued = timeOfRunId(run.id);
      const stat = c.stat(run.queue, now);
      stat.enqueued++;
      if (run.outcome === 'succeeded') stat.succeeded++;
      else stat.failed++;
      c.observe(stat, 'wait', run.startedAt - enqueued);
      c.observe(stat, 'run', now - run.startedAt);
      if (run.retentionMs <= 0) return true;
      c.change('insertFinished', {
        id: run.id,
        queue: run.queue,
        state: run.outcome,
        task: run.task,
        seq: base + i + 1,
        input: run.input,
        result: run.outcome === 'succeeded' ? (run.result ?? null) : null,
        error: run.outcome === 'failed' ? (run.error ?? null) : null,
        attempts: Math.max(1, Math.floor(run.attempts)),
        enqueued,
        started: Math.floor(run.startedAt),
        now,
        expires: now + Math.floor(run.retentionMs),
        worker: run.worker,
        key: key ?? null,
        origin: run.origin,
      });
      if (key !== undefined) c.s.idemPut.run(run.queue, run.task, key, run.id, now + (run.idempotencyTtl ?? DAY));
      changed.push(run.id);
      return true;
    });
  });
  if (changed.length) c.hub.emit('runs', changed);
  return results;
}
