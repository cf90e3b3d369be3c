/**
 * A handle to a workflow (what `errand.workflow(shape)` returns): its id, its state, its runs,
 * its value once done, and cancel. See docs/workflows.md.
 */
import type { Broker, RunState, WorkflowEdge } from '../broker/types.ts';
import { FINISHED_STATES } from '../broker/types.ts';
import { WorkflowNotFoundError } from '../core/errors.ts';
import { decodeRun, type RunInfo } from '../core/run-info.ts';
import { RunHandle } from './handle.ts';
import type { CompiledWorkflow } from './workflow.ts';

/**
 * `running` while any run is not finished; then `failed` if any run failed, else `cancelled` if any
 * was cancelled (by the user, or because a step it waited for failed), else `succeeded`.
 */
export type WorkflowState = 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface WorkflowInfo {
  id: string;
  state: WorkflowState;
  createdAt: Date;
  /** Its runs (those not yet pruned), decoded, in creation order. */
  runs: RunInfo[];
  edges: WorkflowEdge[];
}

/** The state of a workflow from the states of its runs. */
export function workflowState(states: readonly RunState[]): WorkflowState {
  if (states.some((s) => !FINISHED_STATES.has(s))) return 'running';
  if (states.includes('failed')) return 'failed';
  if (states.includes('cancelled')) return 'cancelled';
  return 'succeeded';
}

export class WorkflowHandle<R = unknown> {
  readonly id: string;
  /**
   * False when nothing was created: a workflow with this id existed already (a resent call), or a
   * step's idempotency key is held by a stored run (`held`: that step, the key, the run holding it).
   */
  readonly created: boolean;
  readonly held?: { run: string; key: string; by: string };
  /** The ids of its runs, in creation order. */
  readonly runIds: readonly string[];
  readonly #broker: () => Promise<Broker>;
  readonly #value: CompiledWorkflow['value'];

  constructor(
    compiled: CompiledWorkflow,
    broker: () => Promise<Broker>,
    created: boolean,
    held?: { run: string; key: string; by: string },
  ) {
    this.id = compiled.id;
    this.created = created;
    if (held) this.held = held;
    this.runIds = compiled.runs.map((r) => r.id);
    this.#value = compiled.value;
    this.#broker = broker;
  }

  /** A handle to one run of the workflow. */
  run<T = unknown>(id: string): RunHandle<T> {
    return new RunHandle<T>(id, this.#broker);
  }

  /** The workflow as stored now: its state, runs and edges. Throws `WorkflowNotFoundError` when it is gone. */
  async info(): Promise<WorkflowInfo> {
    const rec = await (await this.#broker()).getWorkflow(this.id);
    if (!rec) throw new WorkflowNotFoundError(this.id);
    const runs = rec.runs.map((r) => decodeRun(r));
    return { id: rec.id, state: workflowState(runs.map((r) => r.state)), createdAt: new Date(rec.createdAt), runs, edges: rec.edges };
  }

  async state(): Promise<WorkflowState> {
    return (await this.info()).state;
  }

  /**
   * Waits for the workflow's value: a chain's or chord's last step result, a group's list of
   * results, a dag's object of every node's result by name. Throws as `RunHandle.result` does for
   * the first of those runs that fails or is cancelled (a step cancelled because one it waited for
   * failed: `RunCancelledError`; the failed step's own error is on that step, see `info()`).
   */
  async result(options: { timeout?: number } = {}): Promise<R> {
    const one = (id: string) => new RunHandle(id, this.#broker).result(options);
    const v = this.#value;
    if (v.kind === 'one') return (await one(v.id)) as R;
    if (v.kind === 'many') return (await Promise.all(v.ids.map(one))) as R;
    const names = Object.keys(v.ids);
    const values = await Promise.all(names.map((n) => one(v.ids[n] as string)));
    return Object.fromEntries(names.map((n, i) => [n, values[i]])) as R;
  }

  /** Cancels every run of the workflow not yet finished (active ones see their signal abort). Returns how many. */
  async cancel(): Promise<number> {
    const out = await (await this.#broker()).cancelWorkflow(this.id, Date.now());
    if (out.outcome === 'not_found') throw new WorkflowNotFoundError(this.id);
    return out.runs;
  }
}
