/**
 * The SQLite broker's workflows (docs/workflows.md): creation of a workflow in one transaction,
 * and `resolveIn`, the fan-in and failure propagation that runs inside the transaction settling
 * (or failing, or cancelling) a run of a workflow. Exactness rests on one statement:
 * `wfResolveEdge` marks an edge resolved only while it is not, so a dependent becomes queued only in
 * the transaction whose change left it with no unresolved edge, however often a dependency is
 * reported.
 */
import { ConfigError } from '../../core/errors.ts';
import { DAY } from '../shared/options.ts';
import { runErrorText } from '../shared/run-errors.ts';
import { checkWorkflow, workflowInput } from '../shared/workflow.ts';
import type {
  DependencyPolicy,
  NewWorkflow,
  RunRecord,
  SpawnSettlement,
  WorkflowCancelOutcome,
  WorkflowCreated,
  WorkflowEdge,
  WorkflowRecord,
} from '../types.ts';
import { cancelIn, cancellable } from './cancel.ts';
import { type SqliteCore, stateOf } from './core.ts';
import { insertRun } from './create.ts';
import { FlowGroups, flowMove, flowOf, flowPlace } from './flow-counts.ts';
import { num, type Row, toRecord } from './statements.ts';

export function createWorkflow(c: SqliteCore, wf: NewWorkflow, now: number): WorkflowCreated {
  c.open();
  checkWorkflow(wf);
  const queues = new Set<string>();
  let held: WorkflowCreated['held'];
  const created = c.tx(() => {
    if (c.row('wfGet', wf.id)) return false;
    // A run whose idempotency key a stored run holds: nothing is created (as enqueue, the key stands).
    for (const run of wf.runs) {
      if (run.idempotencyKey === undefined) continue;
      const hit = c.row('idemGet', run.queue, run.task, run.idempotencyKey);
      if (hit && (num(hit.expires_at) ?? 0) > now && c.row('stateOf', String(hit.run_id))) {
        held = { run: run.id, key: run.idempotencyKey, by: String(hit.run_id) };
        return false;
      }
    }
    // A run id already taken (by another workflow or an enqueue) refuses the whole workflow: the
    // INSERTs below would fail half way, which the transaction rolls back anyway.
    const taken = c.row('wfRunExists', JSON.stringify(wf.runs.map((r) => r.id)));
    if (taken) {
      throw new ConfigError(`createWorkflow: run ${String(taken.id)} of workflow ${wf.id} exists already (make new ids with newRunId)`);
    }
    c.s.wfInsert.run(wf.id, now);
    const base = c.takeSeq(wf.runs.length);
    const groups = new FlowGroups();
    wf.runs.forEach((run, i) => {
      const waits = (run.dependsOn?.length ?? 0) > 0;
      const state = waits ? 'waiting' : run.runAt <= now ? 'queued' : 'scheduled';
      // A step under flow control stores its spec; it counts in its key once queued (as enqueued runs).
      insertRun(c, run, state, base + i + 1, now, waits ? now : run.runAt, {
        id: wf.id,
        inputFrom: run.inputFrom ?? 'given',
      });
      if (run.flow && state === 'queued') groups.move(c, flowPlace(run.queue, run.flow), 1, 0);
      if (run.idempotencyKey !== undefined)
        c.s.idemPut.run(run.queue, run.task, run.idempotencyKey, run.id, now + (run.idempotencyTtl ?? DAY));
      run.dependsOn?.forEach((d, pos) => {
        c.s.wfEdge.run(run.id, d.id, wf.id, pos, d.name ?? null, d.onFailure ?? 'cancel');
      });
      c.stat(run.queue, now).enqueued++;
      if (!waits) queues.add(run.queue);
    });
    groups.flush(c);
    for (const q of queues) c.bump(q);
    return true;
  });
  if (queues.size) c.hub.emit('work', [...queues]);
  return held ? { id: wf.id, created, held } : { id: wf.id, created };
}

/**
 * Within the transaction that finished run `id` of a workflow (`ok`: succeeded with `result`;
 * otherwise failed or cancelled): resolves the edges out of it, and, transitively, those out of
 * the dependents it cancelled or skipped. Adds the runs changed to `changed` and the queues given
 * work to `queues`.
 */
export function resolveIn(
  c: SqliteCore,
  id: string,
  ok: boolean,
  result: string | null,
  now: number,
  changed: string[],
  queues: Set<string>,
): void {
  const todo: { id: string; ok: boolean; result: string | null }[] = [{ id, ok, result }];
  while (todo.length) {
    const done = todo.shift() as (typeof todo)[number];
    for (const edge of c.rows('wfOut', done.id)) {
      const dependent = String(edge.dependent);
      const policy = String(edge.on_failure) as DependencyPolicy;
      if (done.ok || policy === 'continue') {
        if (c.change('wfResolveEdge', dependent, done.id, done.ok ? done.result : null) === 0) continue;
        if ((num(c.row('wfUnresolved', dependent)?.n) ?? 1) > 0) continue;
        const run = c.row('wfInputOf', dependent);
        if (!run) continue; // no longer waiting (cancelled meanwhile)
        if (typeof run.adopt === 'string') {
          // A run that spawned runs: it finishes with their values (dynamic fan-out).
          const [mode, ret] = run.adopt.split(' ');
          const awaited = c.rows('wfValues', dependent, 1);
          const value = workflowInput(
            mode,
            'null',
            awaited.map((e) => (typeof e.value === 'string' ? e.value : null)),
            awaited.map((e) => (typeof e.name === 'string' ? e.name : null)),
          );
          const result = value === 'null' ? null : value;
          if (c.row('spawnAdopt', { id: dependent, result, now, retention: Number(ret) || 0 })) {
            changed.push(dependent);
            todo.push({ id: dependent, ok: true, result });
          }
          continue;
        }
        const edges = c.rows('wfValues', dependent, 0);
        const input = workflowInput(
          typeof run.input_from === 'string' ? run.input_from : 'given',
          typeof run.input === 'string' ? run.input : 'null',
          edges.map((e) => (typeof e.value === 'string' ? e.value : null)),
          edges.map((e) => (typeof e.name === 'string' ? e.name : null)),
        );
        const ready = c.row('wfReady', { id: dependent, input, seq: c.takeSeq(1) + 1, now });
        if (ready) {
          // A step under flow control joins its key's queued runs now (a waiting run has no counts).
          const f = flowOf(ready);
          if (f) flowMove(c, f, 1, 0);
          changed.push(dependent);
          queues.add(String(ready.queue));
          c.bump(String(ready.queue));
        }
      } else if (policy === 'cancel') {
        const error = runErrorText('dependencyFailed', { id: done.id });
        if (c.row('wfCancelWaiting', { id: dependent, now, retention: c.cancelledRetentionMs, error })) {
          changed.push(dependent);
          todo.push({ id: dependent, ok: false, result: null });
        }
      } else if (c.row('wfSkipWaiting', { id: dependent, now, retention: c.cancelledRetentionMs })) {
        changed.push(dependent);
        todo.push({ id: dependent, ok: true, result: null });
      }
    }
  }
}

/**
 * Within a settle transaction: applies a spawn (dynamic fan-out, `SpawnSettlement`) of a held run.
 * Returns the run's row (undefined: the lease is not held, nothing written) and whether the spawn
 * was refused (a run id taken: the run failed, nothing created).
 */
export function spawnIn(
  c: SqliteCore,
  workerId: string,
  s: SpawnSettlement,
  now: number,
  changed: string[],
  queues: Set<string>,
): { row: Row; refused: boolean } | undefined {
  const taken = c.row('wfRunExists', JSON.stringify(s.runs.map((r) => r.id)));
  if (taken) {
    const error = runErrorText('spawnRefused', { id: String(taken.id) });
    const row = c.row('fail', s.id, s.attempt, workerId, now, now + c.failedRetentionMs, error);
    if (!row) return undefined;
    if (typeof row.workflow === 'string') resolveIn(c, s.id, false, null, now, changed, queues);
    return { row, refused: true };
  }
  const adopt = `${s.resultFrom} ${Math.max(0, Math.floor(s.retentionMs))}`;
  const row = c.row('spawnHeld', s.id, s.attempt, workerId, now, adopt);
  if (!row) return undefined;
  const wf = String(row.workflow);
  c.s.wfInsert.run(wf, now); // a run of no workflow starts one, named by its own id (nothing when it exists)
  c.s.spawnDropEdges.run(s.id);
  const base = c.takeSeq(s.runs.length);
  const queue = String(row.queue);
  let ready = false;
  s.runs.forEach((run, i) => {
    const waits = (run.dependsOn?.length ?? 0) > 0;
    const state = waits ? 'waiting' : run.runAt <= now ? 'queued' : 'scheduled';
    // A spawned run has no idempotency key; under flow control, it counts in its key once queued.
    insertRun(c, { ...run, idempotencyKey: undefined }, state, base + i + 1, now, waits ? now : run.runAt, {
      id: wf,
      inputFrom: run.inputFrom ?? 'given',
    });
    if (run.flow && state === 'queued') flowMove(c, flowPlace(queue, run.flow), 1, 0);
    run.dependsOn?.forEach((d, pos) => {
      c.s.wfEdge.run(run.id, d.id, wf, pos, d.name ?? null, d.onFailure ?? 'cancel');
    });
    if (!waits) ready = true;
    changed.push(run.id);
  });
  s.awaits.forEach((d, pos) => {
    c.s.spawnEdge.run(s.id, d.id, wf, pos, d.name ?? null, d.onFailure ?? 'cancel');
  });
  c.stat(queue, now).enqueued += s.runs.length;
  if (ready) queues.add(queue);
  return { row, refused: false };
}

/**
 * Within the transaction that replays run `id` of a workflow (retry from a step): the runs that were
 * cancelled because it failed (reason `dependency_failed`), transitively, wait again; their edges
 * from the replayed runs are unresolved, those from runs that succeeded keep their values. Adds the
 * runs changed to `changed`.
 */
export function rewaitIn(c: SqliteCore, id: string, changed: string[]): void {
  const rerun = [id];
  const seen = new Set(rerun);
  for (let i = 0; i < rerun.length; i++) {
    for (const e of c.rows('wfAllOut', rerun[i] as string)) {
      const d = String(e.dependent);
      if (seen.has(d) || !c.row('wfRewait', d)) continue;
      seen.add(d);
      rerun.push(d);
      changed.push(d);
    }
  }
  for (const d of rerun.slice(1))
    for (const e of c.rows('wfDepsOf', d)) if (seen.has(String(e.dependency))) c.s.wfUnresolve.run(d, String(e.dependency));
}

export function getWorkflow(c: SqliteCore, id: string): WorkflowRecord | null {
  c.open();
  return c.read(() => {
    const wf = c.row('wfGet', id);
    if (!wf) return null;
    const runs: RunRecord[] = c.rows('wfRuns', id).map(toRecord);
    const edges: WorkflowEdge[] = c.rows('wfEdges', id).map((e) => {
      const edge: WorkflowEdge = {
        from: String(e.dependency),
        to: String(e.dependent),
        onFailure: String(e.on_failure) as DependencyPolicy,
      };
      if (typeof e.name === 'string') edge.name = e.name;
      return edge;
    });
    return { id, createdAt: num(wf.created_at) ?? 0, runs, edges };
  });
}

export function cancelWorkflow(c: SqliteCore, id: string, now: number): WorkflowCancelOutcome {
  c.open();
  const changed: string[] = [];
  const active: string[] = [];
  const queues = new Set<string>();
  const out = c.tx((): WorkflowCancelOutcome => {
    if (!c.row('wfGet', id)) return { outcome: 'not_found' };
    let n = 0;
    for (const row of c.rows('wfOpen', id)) {
      const runId = String(row.id);
      // Cascades of earlier cancels may have finished this one already.
      const now_ = c.row('stateOf', runId);
      if (!now_) continue;
      const state = stateOf(now_);
      if (!cancellable(state)) continue;
      // Cancelled as cancel (transitions.ts) cancels one: a step under flow control leaves its key's counts.
      const freed = cancelIn(c, runId, now_, state, now);
      if (state === 'active') active.push(runId);
      if (freed !== undefined) queues.add(freed); // its slot freed: its key may be ready again
      changed.push(runId);
      n++;
    }
    // Nothing is left to make ready: the edges are only resolved, for the record.
    for (const runId of [...changed]) resolveIn(c, runId, false, null, now, changed, queues);
    return { outcome: 'cancelled', runs: n };
  });
  if (changed.length) c.hub.emit('runs', changed);
  if (active.length) c.hub.emit('cancel', active);
  if (queues.size) c.hub.emit('work', [...queues]);
  return out;
}
