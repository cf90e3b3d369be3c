/**
 * The workflow part of the Broker contract (docs/workflows.md): runs with dependencies, edges and
 * their failure policies, workflow records. Re-exported by `types.ts`, where the rest of the
 * contract is.
 */
import type { RunRecord } from '../core/run.ts';
import type { NewRun } from './new-run.ts';

/** What a dependent does when a dependency ends without succeeding (failed after its retries, or cancelled). */
export type DependencyPolicy = 'cancel' | 'skip' | 'continue';

export const DEPENDENCY_POLICIES: readonly DependencyPolicy[] = ['cancel', 'skip', 'continue'];

/** An edge: the run that declares it waits for run `id`. */
export interface Dependency {
  /** A run of the same workflow. */
  id: string;
  /**
   * When `id` ends without succeeding: `cancel` (default) cancels this run, which counts as a failure
   * for its own dependents; `skip` finishes it as succeeded without running it (result null), a
   * success for its dependents; `continue` runs it anyway once its other dependencies are resolved,
   * with `null` in this dependency's place in its input.
   */
  onFailure?: DependencyPolicy;
  /** The key of this dependency's result in the input (`inputFrom: 'object'`). */
  name?: string;
}

/** How a dependent's input is built when it becomes ready (the broker joins JSON texts; it never parses them). */
export type InputFrom = 'given' | 'value' | 'list' | 'object';

export interface NewWorkflowRun extends NewRun {
  /** The runs this one waits for; none: it is created queued (or scheduled) as any run. */
  dependsOn?: readonly Dependency[];
  /**
   * `given` (default): its own `input`; `value`: the result of its one dependency; `list`: the
   * results of its dependencies as a JSON array, in `dependsOn` order; `object`: a JSON object of
   * the results by each dependency's `name`. A dependency without a result contributes `null`.
   */
  inputFrom?: InputFrom;
}

export interface NewWorkflow {
  /** `<queue>.<ulid>` (see `newRunId`), the queue being that of one of its runs. */
  id: string;
  /**
   * Its runs, dependencies before or after their dependents (any order). A run may carry an
   * idempotency key (as `NewRun`'s: same queue and task, `idempotencyTtl`); two runs of one workflow
   * may not share one.
   */
  runs: readonly NewWorkflowRun[];
}

/**
 * What `createWorkflow` did. `created: false`: nothing was created, because a workflow with this id
 * is stored (a resent call), or because a run's idempotency key is held by a stored run (`held`:
 * which run of the workflow, its key, and the stored run holding it).
 */
export interface WorkflowCreated {
  id: string;
  created: boolean;
  held?: { run: string; key: string; by: string };
}

export interface WorkflowEdge {
  /** The dependency. */
  from: string;
  /** The dependent. */
  to: string;
  onFailure: DependencyPolicy;
  name?: string;
}

export interface WorkflowRecord {
  id: string;
  createdAt: number;
  /** Its runs that still exist (prune removes finished ones after their retention), in creation order. */
  runs: RunRecord[];
  edges: WorkflowEdge[];
}

export type WorkflowCancelOutcome = { outcome: 'cancelled'; runs: number } | { outcome: 'not_found' };

/**
 * Dynamic fan-out (docs/workflows.md, "Dynamic fan-out"): a settlement that ends the attempt of run
 * `id` by creating `runs` and making the run wait, holding no worker slot, for the runs named in
 * `awaits`; once they are resolved it finishes `succeeded` with their values as its result, built as
 * `resultFrom` says (as a dependent's input is built from `inputFrom`), kept `retentionMs`.
 *
 * Applied in the same atomic step as any settlement, and only while the lease (id, attempt, worker)
 * is held: a spawn settled after the lease was lost creates nothing. The runs join the run's
 * workflow (or, for a run of none, a workflow whose id is the run's own id); they must all be in the
 * run's queue, their dependencies among themselves, without idempotency keys; each is created as
 * `createWorkflow` creates a run (queued, scheduled or waiting). A run id already taken refuses the
 * spawn: the run fails (reason `spawn_refused`) and nothing is created. Spawned runs take no
 * idempotency keys (`ConfigError`). An awaited run that ends
 * without succeeding applies its edge's `onFailure` to this run (default `cancel`: cancelled with
 * reason `dependency_failed`, which its own dependents see as a failure). The attempt ends with the
 * outcome `spawned` in the run's history; its `attempts` stay as they are.
 */
export interface SpawnSettlement {
  id: string;
  attempt: number;
  outcome: 'spawned';
  runs: readonly NewWorkflowRun[];
  /** Runs of `runs` whose values make this run's result (names for `resultFrom: 'object'`). */
  awaits: readonly Dependency[];
  /** `value`: the one awaited run's result; `list`: a JSON array in `awaits` order; `object`: by name. */
  resultFrom: 'value' | 'list' | 'object';
  /** How long the run is kept once it succeeded. */
  retentionMs: number;
}
