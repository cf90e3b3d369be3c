/**
 * What both brokers share about workflows (docs/workflows.md): the check of a new workflow (a DAG
 * of its own runs, every field in range), and the one way a dependent's input is built from its
 * dependencies' results (JSON texts joined, never parsed). The Redis broker's Lua does the same
 * joining (`wfJoin` in lua/workflow.lua); the conformance suite holds both to it.
 */
import { ConfigError } from '../../core/errors.ts';
import { queueOfRunId } from '../../core/ids.ts';
import { show } from '../../core/show.ts';
import { checkFlow } from './checks.ts';
import {
  DEPENDENCY_POLICIES,
  type DependencyPolicy,
  type InputFrom,
  type NewWorkflow,
  type Settlement,
  type SpawnSettlement,
} from '../types.ts';

const INPUT_FROM: readonly InputFrom[] = ['given', 'value', 'list', 'object'];

/** One-letter codes of the edge policies, as the Redis broker stores them. */
export const POLICY_CODE: Readonly<Record<DependencyPolicy, string>> = { cancel: 'c', skip: 's', continue: 'k' };
export const POLICY_OF_CODE: Readonly<Record<string, DependencyPolicy>> = { c: 'cancel', s: 'skip', k: 'continue' };

/**
 * The size of a workflow (and of a spawn): how many runs, dependencies (edges) and bytes of step
 * inputs one may hold. Chosen from measurement (docs/workflows.md, "Limits"): on Redis a workflow
 * is created in calls of at most `CHUNK_RUNS` runs, but the fan-in into one step (its input joined
 * from every result, in the settle that ends its last dependency), a spawn (one script with its
 * parent's settle) and a cancel of the workflow (one script per queue) stay single scripts that hold
 * Redis for a time that grows with the size: some 40 ms for 10,000 runs on the test machine, 1.5 s
 * for 100,000 (and 5.6 s to create them in one script, past Redis's 5 s script limit). On SQLite a
 * creation is one transaction: about 0.2 s for 10,000 runs, 3 s for 200 MB of inputs.
 */
export const MAX_WORKFLOW_RUNS = 10_000;
export const MAX_WORKFLOW_DEPENDENCIES = 20_000;
export const MAX_WORKFLOW_BYTES = 64 * 1024 * 1024;

/** A count as the messages about sizes show it: 10,001. */
export const countText = (n: number) => n.toLocaleString('en-US');
const count = countText;

function bad(where: string, what: string): never {
  throw new ConfigError(`createWorkflow: ${where} ${what} (see docs/workflows.md)`);
}

/**
 * Checks a workflow before anything is written. Returns its queues (in first-seen order). Throws
 * `ConfigError` naming the run and what is wrong: an id that is not a run id or not unique, a
 * dependency outside the workflow or repeated, an unknown policy or `inputFrom`, an `inputFrom`
 * that does not fit the dependencies, an idempotency key, a flow spec (`checkFlow`), a cycle.
 */
export function checkWorkflow(wf: NewWorkflow): string[] {
  if (!wf || typeof wf !== 'object') bad('the workflow', 'is not an object');
  if (typeof wf.id !== 'string' || queueOfRunId(wf.id) === null) {
    bad(`workflow id ${JSON.stringify(wf.id)}`, 'is not an id of the form <queue>.<ulid> (see newRunId)');
  }
  if (!Array.isArray(wf.runs) || wf.runs.length === 0) bad(`workflow ${wf.id}`, 'has no runs');
  // Sizes first, before any per-run work: nothing of a workflow over a limit is written.
  if (wf.runs.length > MAX_WORKFLOW_RUNS)
    bad(`workflow ${wf.id}`, `has ${count(wf.runs.length)} runs, over the limit of ${count(MAX_WORKFLOW_RUNS)} runs per workflow`);
  let edges = 0;
  let bytes = 0;
  for (const run of wf.runs) {
    if (Array.isArray(run?.dependsOn)) edges += run.dependsOn.length;
    if (typeof run?.input === 'string') bytes += Buffer.byteLength(run.input);
  }
  if (edges > MAX_WORKFLOW_DEPENDENCIES)
    bad(
      `workflow ${wf.id}`,
      `has ${count(edges)} dependencies between its runs, over the limit of ${count(MAX_WORKFLOW_DEPENDENCIES)} per workflow`,
    );
  if (bytes > MAX_WORKFLOW_BYTES)
    bad(
      `workflow ${wf.id}`,
      `has ${count(bytes)} bytes of step inputs (JSON) in all, over the limit of ${count(MAX_WORKFLOW_BYTES)} bytes per workflow`,
    );
  const ids = new Set<string>();
  const keys = new Set<string>();
  const queues: string[] = [];
  for (const [i, run] of wf.runs.entries()) {
    const q = typeof run?.id === 'string' ? queueOfRunId(run.id) : null;
    if (q === null) bad(`run ${i}`, `has id ${JSON.stringify(run?.id)}, not a run id (<queue>.<ulid>)`);
    if (q !== run.queue) bad(`run ${run.id}`, `names queue "${run.queue}", but its id belongs to queue "${q}"`);
    if (ids.has(run.id)) bad(`run ${run.id}`, 'appears twice');
    if (run.idempotencyKey !== undefined) {
      if (typeof run.idempotencyKey !== 'string' || run.idempotencyKey === '')
        bad(`run ${run.id}`, 'has an idempotency key that is not a non-empty string');
      const k = `${run.queue}\n${run.task}\n${run.idempotencyKey}`;
      if (keys.has(k)) bad(`run ${run.id}`, `has the idempotency key "${run.idempotencyKey}" of another run of this workflow (same task)`);
      keys.add(k);
    }
    if (run.debounce !== undefined) bad(`run ${run.id}`, `is of task "${run.task}", which debounces: workflow steps do not yet`);
    if (run.startBy !== undefined)
      bad(`run ${run.id}`, `is of task "${run.task}" with a deadline to start (startBy): workflow steps do not expire yet`);
    // A step under flow control (docs/flow-control.md): its spec is checked as enqueue checks one.
    if (run.flow !== undefined) checkFlow(run.flow, `createWorkflow: run ${run.id}`);
    ids.add(run.id);
    if (!queues.includes(q)) queues.push(q);
  }
  if (!queues.includes(queueOfRunId(wf.id) as string)) bad(`workflow id ${wf.id}`, 'names a queue none of its runs is in');
  const deps = new Map<string, string[]>();
  for (const run of wf.runs) {
    const on = run.dependsOn ?? [];
    if (!Array.isArray(on)) bad(`run ${run.id}`, 'has dependsOn that is not a list');
    const mode = run.inputFrom ?? 'given';
    if (!INPUT_FROM.includes(mode)) bad(`run ${run.id}`, `has inputFrom ${JSON.stringify(mode)} (known: ${INPUT_FROM.join(', ')})`);
    const seen = new Set<string>();
    const names = new Set<string>();
    for (const d of on) {
      if (!d || typeof d.id !== 'string' || !ids.has(d.id))
        bad(`run ${run.id}`, `depends on ${JSON.stringify(d?.id)}, which is not a run of this workflow`);
      if (d.id === run.id) bad(`run ${run.id}`, 'depends on itself');
      if (seen.has(d.id)) bad(`run ${run.id}`, `depends on ${d.id} twice`);
      seen.add(d.id);
      if (d.onFailure !== undefined && !DEPENDENCY_POLICIES.includes(d.onFailure)) {
        bad(`run ${run.id}`, `has onFailure ${show(d.onFailure)} for ${d.id} (known: ${DEPENDENCY_POLICIES.join(', ')})`);
      }
      if (mode === 'object') {
        if (typeof d.name !== 'string' || d.name === '')
          bad(`run ${run.id}`, `takes an object input but its dependency ${d.id} has no name`);
        if (names.has(d.name)) bad(`run ${run.id}`, `names two dependencies "${d.name}"`);
        names.add(d.name);
      } else if (d.name !== undefined && typeof d.name !== 'string') {
        bad(`run ${run.id}`, `has a name for ${d.id} that is not a string`);
      }
    }
    if (mode !== 'given' && on.length === 0) bad(`run ${run.id}`, `takes its input from dependencies (${mode}) but has none`);
    if (mode === 'value' && on.length !== 1) bad(`run ${run.id}`, `takes the value of one dependency but has ${on.length}`);
    deps.set(
      run.id,
      on.map((d) => d.id),
    );
  }
  // A cycle: some runs never reach zero unresolved dependencies (Kahn's algorithm).
  const pending = new Map<string, number>();
  const dependents = new Map<string, string[]>();
  for (const [id, on] of deps) {
    pending.set(id, on.length);
    for (const d of on) {
      const list = dependents.get(d);
      if (list) list.push(id);
      else dependents.set(d, [id]);
    }
  }
  const ready = [...pending].filter(([, n]) => n === 0).map(([id]) => id);
  let done = 0;
  while (ready.length) {
    const id = ready.pop() as string;
    done++;
    for (const t of dependents.get(id) ?? []) {
      const n = (pending.get(t) as number) - 1;
      pending.set(t, n);
      if (n === 0) ready.push(t);
    }
  }
  if (done < deps.size) {
    const inCycle = [...pending].filter(([, n]) => n > 0).map(([id]) => id);
    bad(`workflow ${wf.id}`, `has a cycle among ${inCycle.slice(0, 5).join(', ')}${inCycle.length > 5 ? ', ...' : ''}`);
  }
  return queues;
}

/**
 * The input of a dependent that became ready: `values[i]` is the result text of its i-th
 * dependency (`null`: none, or the dependency failed under a `continue` edge), `names[i]` its name.
 */
export function workflowInput(
  mode: string | null | undefined,
  given: string,
  values: readonly (string | null)[],
  names: readonly (string | null)[],
): string {
  const v = (x: string | null | undefined) => (x === null || x === undefined || x === '' ? 'null' : x);
  switch (mode) {
    case 'value':
      return v(values[0]);
    case 'list':
      return `[${values.map(v).join(',')}]`;
    case 'object':
      return `{${values.map((x, i) => `${JSON.stringify(names[i] ?? '')}:${v(x)}`).join(',')}}`;
    default:
      return given;
  }
}

/**
 * Checks a spawn settlement (dynamic fan-out) before anything is written: its runs as a workflow
 * (`checkWorkflow`), all in the spawning run's queue (the Redis broker keeps a workflow's runs in one
 * queue, and both brokers keep spawned runs with their parent), and `awaits` naming runs of it as
 * `resultFrom` needs. Throws `ConfigError` saying what is wrong.
 */
export function checkSpawn(s: SpawnSettlement): void {
  const where = `spawn from run ${s.id}:`;
  const queue = queueOfRunId(s.id);
  if (queue === null) throw new ConfigError(`${where} not a run id (<queue>.<ulid>)`);
  if (!Array.isArray(s.runs) || s.runs.length === 0) throw new ConfigError(`${where} no runs to spawn`);
  for (const run of s.runs) {
    if (run?.queue !== queue) {
      throw new ConfigError(
        `${where} run ${run?.id} is in queue "${run?.queue}"; spawned runs stay in their parent's queue "${queue}" (a spawn is one atomic step on its parent's queue: docs/workflows.md, "Dynamic fan-out")`,
      );
    }
    if (run.id === s.id) throw new ConfigError(`${where} a spawned run has the spawning run's own id`);
    if (run.idempotencyKey !== undefined) throw new ConfigError(`${where} run ${run.id} has an idempotency key: spawned runs take none`);
  }
  const queues = checkWorkflow({ id: s.id, runs: s.runs });
  if (queues.length !== 1) throw new ConfigError(`${where} its runs are in several queues`);
  const ids = new Set(s.runs.map((r) => r.id));
  const mode = s.resultFrom;
  if (mode !== 'value' && mode !== 'list' && mode !== 'object') {
    throw new ConfigError(`${where} resultFrom ${show(mode)} (known: value, list, object)`);
  }
  if (!Array.isArray(s.awaits) || s.awaits.length === 0) throw new ConfigError(`${where} awaits no run`);
  if (mode === 'value' && s.awaits.length !== 1) throw new ConfigError(`${where} takes the value of one run but awaits ${s.awaits.length}`);
  const seen = new Set<string>();
  const names = new Set<string>();
  for (const d of s.awaits) {
    if (!d || !ids.has(d.id)) throw new ConfigError(`${where} awaits ${show(d?.id)}, which is not one of the runs it spawns`);
    if (seen.has(d.id)) throw new ConfigError(`${where} awaits ${d.id} twice`);
    seen.add(d.id);
    if (d.onFailure !== undefined && !DEPENDENCY_POLICIES.includes(d.onFailure)) {
      throw new ConfigError(`${where} onFailure ${show(d.onFailure)} for ${d.id} (known: ${DEPENDENCY_POLICIES.join(', ')})`);
    }
    if (mode === 'object') {
      if (typeof d.name !== 'string' || d.name === '') throw new ConfigError(`${where} builds an object but ${d.id} has no name`);
      if (names.has(d.name)) throw new ConfigError(`${where} names two awaited runs "${d.name}"`);
      names.add(d.name);
    }
  }
  if (!Number.isFinite(s.retentionMs)) throw new ConfigError(`${where} retentionMs is not a number`);
}

/** `checkSpawn` for each spawn among settlements (the others pass as they are). */
export function checkSpawns(settlements: readonly Settlement[]): void {
  for (const s of settlements) if (s.outcome === 'spawned') checkSpawn(s);
}
