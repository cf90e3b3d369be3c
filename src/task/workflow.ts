/**
 * Workflows, typed (docs/workflows.md): the shapes `chain`, `group`, `chord` and `dag`, built from
 * steps of tasks (`task.step(input)`, `task.next()`, `task.join({...})`), and their compilation
 * into the runs and edges of `Broker.createWorkflow`.
 *
 * A shape is data: tasks by name, inputs as JSON, dependencies by run id. No function is stored.
 * The types carry what flows: a `Flow<R>` yields R (a chain: its last step's result; a chord: its
 * callback's; a group: the list of its members' results, `GroupFlow`); a `Pending<I, R>` is a step
 * whose input I comes from the flow before it, so `chain(a, b)` compiles only when a's result is
 * assignable to b's input; `dag` checks each `join` against the results of the nodes it names.
 */
import {
  DEPENDENCY_POLICIES,
  type Dependency,
  type DependencyPolicy,
  type FlowSpec,
  type NewWorkflowRun,
  type SpawnSettlement,
} from '../broker/types.ts';
import { countText as count, MAX_WORKFLOW_BYTES, MAX_WORKFLOW_RUNS } from '../broker/shared/workflow.ts';
import { ConfigError } from '../core/errors.ts';
import { checkQueueName, newRunId } from '../core/ids.ts';
import { show } from '../core/show.ts';
import { checkPriority } from './options.ts';

/** The task-layer view of a task a step runs (TaskDefinition has it). */
export interface StepTask {
  readonly name: string;
  readonly queue: string;
  readonly priority: number;
  readonly retention: { readonly cancelled: number };
  /**
   * Flow-control limits (docs/flow-control.md): a step carries them as an enqueued run does. Its key
   * is computed from its input when the workflow is created, so a task whose `limits.key` reads the
   * input can be a step with its own input (`task.step(input)`), not one whose input comes from the
   * steps before it (`next()`, `join()`).
   */
  readonly limits?: { readonly key?: unknown } | undefined;
  /** The flow spec of a run of this task whose input is not known yet: its task's limits, no key (undefined: no limits). */
  flowWithoutInput?(): FlowSpec | undefined;
  /** A deadline to start (`expiresIn`): not carried by workflow steps yet, so such a task cannot be one. */
  readonly expiresIn?: number | undefined;
  /** Throttle and debounce: not for workflow steps yet either. */
  readonly timing?: { throttle?: unknown; debounce?: unknown };
  /** Validates an input and builds its run (options: `EnqueueOptions`, typed where `task.step` takes them). */
  prepare(input: unknown, options: object | undefined, now: number, maxInputBytes: number): NewWorkflowRun;
}

/** Options of a step whose input comes from other steps. */
export interface StepOptions {
  /** Overrides the task's queue. */
  queue?: string;
  /** Overrides the task's priority. */
  priority?: number;
  /** When a step this one waits for ends without succeeding: `cancel` (default), `skip`, or `continue` (run anyway, with null for it). */
  onFailure?: DependencyPolicy;
}

const STEP_OPTION_KEYS: readonly (keyof StepOptions)[] = ['queue', 'priority', 'onFailure'];

/**
 * Checks the options of `task.next(options)` or `task.join(deps, options)` where they are given
 * (`ConfigError` naming the task and the step). The broker checks a workflow's runs again, but by
 * run id: too late for the user to see which step was wrong.
 */
function checkStepOptions(options: unknown, where: string): StepOptions {
  if (options === undefined) return {};
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new ConfigError(`${where}: options must be an object ({ queue?, priority?, onFailure? }), got ${show(options)}`);
  }
  const o = options as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!(STEP_OPTION_KEYS as readonly string[]).includes(key))
      throw new ConfigError(`${where}: ${JSON.stringify(key)} is not an option of a step (known: ${STEP_OPTION_KEYS.join(', ')})`);
  }
  if (o.queue !== undefined) checkQueueName(o.queue, where);
  if (o.priority !== undefined) checkPriority(o.priority, where);
  if (o.onFailure !== undefined && !DEPENDENCY_POLICIES.includes(o.onFailure as DependencyPolicy)) {
    throw new ConfigError(
      `${where}: onFailure must be one of ${DEPENDENCY_POLICIES.map((p) => `"${p}"`).join(', ')}, got ${show(o.onFailure)}`,
    );
  }
  return { ...(o as StepOptions) };
}

/** @internal What a shape is at run time. */
export type Node =
  | { kind: 'step'; task: StepTask; input: unknown; options: object | undefined }
  | { kind: 'next'; task: StepTask; options: StepOptions }
  | { kind: 'join'; task: StepTask; deps: Record<string, string>; options: StepOptions }
  | { kind: 'chain'; items: Node[] }
  | { kind: 'group'; items: Node[] }
  | { kind: 'dag'; nodes: Record<string, Node> };

/** A shape that yields one value of type R. */
export interface Flow<R> {
  readonly node: Node;
  /** @internal phantom: the value this flow yields. */
  readonly __result?: R;
  /** @internal phantom: yields one value (a group yields a list). */
  readonly __many?: false;
}

/** A group: yields the list of its members' values. */
export interface GroupFlow<R extends unknown[]> {
  readonly node: Node;
  /** @internal */
  readonly __result?: R;
  /** @internal */
  readonly __many?: true;
}

/** A step whose input (of type I) is the value of what comes before it. */
export interface Pending<I, R> extends Flow<R> {
  /** @internal phantom, contravariant: what it accepts. */
  readonly __input?: (input: I) => void;
}

/** A DAG step whose input is an object of the results of the nodes named in M (input key -> node name). */
export interface Join<M extends Record<string, string>, I, R> extends Flow<R> {
  /** @internal the names it joins (required: what tells a join from a step in `DagCheck`). */
  readonly __deps: M;
  /** @internal */
  readonly __input?: (input: I) => void;
}

/** A DAG: yields an object of every node's value, by name. */
export interface DagFlow<R extends Record<string, unknown>> {
  readonly node: Node;
  /** @internal */
  readonly __result?: R;
  /** @internal */
  readonly __dag?: true;
}

/** The value a shape yields. */
export type ResultOf<F> = F extends { readonly __result?: infer R } ? R : never;

/** Any shape `errand.workflow` takes. */
export type AnyFlow = Flow<unknown> | GroupFlow<unknown[]> | DagFlow<Record<string, unknown>>;

/** @internal A step with its own input (`task.step(input)`): it accepts anything before it and ignores it. */
export function stepOf<R>(task: StepTask, input: unknown, options?: object): Pending<unknown, R> {
  return { node: { kind: 'step', task, input, options } };
}

/** @internal A step whose input is the value before it (`task.next()`). */
export function nextOf<I, R>(task: StepTask, options?: StepOptions): Pending<I, R> {
  return { node: { kind: 'next', task, options: checkStepOptions(options, `Task "${task.name}": next()`) } };
}

/** @internal A DAG step whose input is `{ key: result of node }` (`task.join({ key: 'node' })`). */
export function joinOf<M extends Record<string, string>, I, R>(task: StepTask, deps: M, options?: StepOptions): Join<M, I, R> {
  if (!deps || typeof deps !== 'object' || Object.keys(deps).length === 0) {
    throw new ConfigError(`Task "${task.name}": join() needs at least one dependency, as { inputKey: 'nodeName' }`);
  }
  const seen = new Map<string, string>();
  for (const [k, v] of Object.entries(deps)) {
    if (typeof v !== 'string') throw new ConfigError(`Task "${task.name}": join(): ${k} must name a node of the dag, got ${show(v)}`);
    // One edge per node: the broker keeps one dependency on each run.
    const other = seen.get(v);
    if (other !== undefined)
      throw new ConfigError(`Task "${task.name}": join(): ${other} and ${k} both name node ${JSON.stringify(v)}; join a node once`);
    seen.set(v, k);
  }
  const checked = checkStepOptions(options, `Task "${task.name}": join()`);
  return { node: { kind: 'join', task, deps: { ...deps }, options: checked }, __deps: deps };
}

/** Steps one after another: each gets the previous one's value (a group's value is its list). */
export function chain<A>(a: Flow<A>): Flow<A>;
export function chain<A, B>(a: Flow<A> | GroupFlow<A & unknown[]>, b: Pending<A, B>): Flow<B>;
export function chain<A, B, C>(a: Flow<A> | GroupFlow<A & unknown[]>, b: Pending<A, B>, c: Pending<B, C>): Flow<C>;
export function chain<A, B, C, D>(a: Flow<A> | GroupFlow<A & unknown[]>, b: Pending<A, B>, c: Pending<B, C>, d: Pending<C, D>): Flow<D>;
export function chain<A, B, C, D, E>(
  a: Flow<A> | GroupFlow<A & unknown[]>,
  b: Pending<A, B>,
  c: Pending<B, C>,
  d: Pending<C, D>,
  e: Pending<D, E>,
): Flow<E>;
export function chain<A, B, C, D, E, F>(
  a: Flow<A> | GroupFlow<A & unknown[]>,
  b: Pending<A, B>,
  c: Pending<B, C>,
  d: Pending<C, D>,
  e: Pending<D, E>,
  f: Pending<E, F>,
): Flow<F>;
export function chain<A, B, C, D, E, F, G>(
  a: Flow<A> | GroupFlow<A & unknown[]>,
  b: Pending<A, B>,
  c: Pending<B, C>,
  d: Pending<C, D>,
  e: Pending<D, E>,
  f: Pending<E, F>,
  g: Pending<F, G>,
): Flow<G>;
export function chain(...items: { node: Node }[]): Flow<unknown> {
  if (items.length === 0) throw new ConfigError('chain() needs at least one step');
  return { node: { kind: 'chain', items: items.map((i) => nodeOf(i, 'chain')) } };
}

/** Flows side by side; its value is the list of their values, in order. */
export function group<T extends unknown[]>(...flows: { [K in keyof T]: Flow<T[K]> }): GroupFlow<T> {
  if (flows.length === 0) throw new ConfigError('group() needs at least one flow');
  return { node: { kind: 'group', items: flows.map((f) => nodeOf(f, 'group')) } };
}

/** A group, then one step that gets the list of its values. */
export function chord<T extends unknown[], R>(header: GroupFlow<T>, callback: Pending<T, R>): Flow<R> {
  return { node: { kind: 'chain', items: [nodeOf(header, 'chord'), nodeOf(callback, 'chord')] } };
}

type DagError<K, Msg, Expected, Got> = { 'dag node': K; error: Msg; expected: Expected; got: Got };

/** What each join of `T` is checked against: the results of the nodes it names. */
export type DagCheck<T extends Record<string, Flow<unknown>>> = {
  [K in keyof T]: T[K] extends Join<infer M, infer I, infer _R>
    ? [Exclude<M[keyof M], keyof T>] extends [never]
      ? { [P in keyof M]: ResultOf<T[M[P] & keyof T]> } extends I
        ? T[K]
        : DagError<K, 'the results of the nodes it joins do not fit its input', I, { [P in keyof M]: ResultOf<T[M[P] & keyof T]> }>
      : DagError<K, 'it joins a node the dag does not have', keyof T, Exclude<M[keyof M], keyof T>>
    : T[K];
};

/** A DAG of named nodes: flows (a step, a chain, a chord) and joins of other nodes' results. */
export function dag<T extends Record<string, Flow<unknown>>>(nodes: T & DagCheck<T>): DagFlow<{ [K in keyof T]: ResultOf<T[K]> }> {
  if (!nodes || typeof nodes !== 'object' || Object.keys(nodes).length === 0) throw new ConfigError('dag() needs at least one node');
  const out: Record<string, Node> = {};
  for (const [name, f] of Object.entries(nodes)) out[name] = nodeOf(f as Flow<unknown>, `dag node "${name}"`);
  return { node: { kind: 'dag', nodes: out } };
}

function nodeOf(f: { node?: Node } | undefined, where: string): Node {
  if (!f || typeof f !== 'object' || !f.node || typeof f.node !== 'object') {
    throw new ConfigError(
      `${where}: expected a step (task.step(input), task.next(), task.join(...)) or a shape (chain, group, chord), got ${typeof f}`,
    );
  }
  return f.node;
}

// ---------------------------------------------------------------------------------------------
// Compilation

/** What a compiled shape leaves for what follows it: the runs whose values form its value. */
interface Out {
  ids: string[];
  /** Its value is the list of those runs' values (a group), rather than the one run's value. */
  many: boolean;
}

/** A compiled workflow: its runs, and how to read its value back. */
export interface CompiledWorkflow {
  id: string;
  runs: NewWorkflowRun[];
  /** The value: one run's (`one`), a list of runs' (`many`), or an object by dag node name (`dag`). */
  value: { kind: 'one'; id: string } | { kind: 'many'; ids: string[] } | { kind: 'dag'; ids: Record<string, string> };
}

const noExpiry = (name: string) =>
  new ConfigError(
    `workflow: task "${name}" has a deadline to start (expiresIn, expiresAt): workflow steps do not expire yet (docs/flow-control.md), so it cannot be a step`,
  );

const noTiming = (name: string) =>
  new ConfigError(
    `workflow: task "${name}" throttles or debounces its runs: workflow steps do not yet (docs/flow-control.md), so it cannot be a step`,
  );

/**
 * Whether `task` is the very task that `tasks` (an app's, by name) holds: the one check of
 * `errand.schedule`, `errand.workflow` and `ctx.spawn`. A task of another app (even of the same
 * name) would have its runs stored on this app's broker, where this app's workers fail them as an
 * unknown task (or run this app's task of that name).
 */
export function isOwnTask(tasks: ReadonlyMap<string, unknown>, task: unknown): boolean {
  return typeof task === 'object' && task !== null && tasks.get((task as { name?: unknown }).name as string) === task;
}

/** How many runs a shape compiles into (one per step, next and join). */
const stepsIn = (node: Node): number =>
  node.kind === 'chain' || node.kind === 'group'
    ? node.items.reduce((n, item) => n + stepsIn(item), 0)
    : node.kind === 'dag'
      ? Object.values(node.nodes).reduce((n, item) => n + stepsIn(item), 0)
      : 1;

/**
 * Compiles a shape into the runs and edges of `Broker.createWorkflow`. `tasks`: the tasks of the
 * app creating it, by name; a step of any other task is refused (`isOwnTask`). A shape over the
 * size limits (`MAX_WORKFLOW_RUNS` steps, `MAX_WORKFLOW_BYTES` of step inputs in all) is refused
 * (`ConfigError`) before anything is stored; the broker checks the number of dependencies.
 */
export function compileWorkflow(flow: AnyFlow, now: number, maxInputBytes: number, tasks?: ReadonlyMap<string, unknown>): CompiledWorkflow {
  const root = nodeOf(flow, 'workflow');
  const steps = stepsIn(root);
  if (steps > MAX_WORKFLOW_RUNS) {
    throw new ConfigError(
      `workflow: the shape has ${count(steps)} steps, over the limit of ${count(MAX_WORKFLOW_RUNS)} steps per workflow (docs/workflows.md, "Limits"); split the work into several workflows`,
    );
  }
  const runs: NewWorkflowRun[] = [];
  let bytes = 0;

  // `at`: where the step is, for the error (a dag node's name).
  const checkOwn = (task: StepTask, at: string) => {
    if (tasks && !isOwnTask(tasks, task)) {
      throw new ConfigError(
        `workflow: the step of task "${task.name}"${at} is not of this app: the task must be one defined on this app with errand.task() (a task of another createErrand() app would be stored on this app's broker and fail there as an unknown task)`,
      );
    }
  };

  const pendingRun = (task: StepTask, options: StepOptions): NewWorkflowRun => {
    // Its input (and so a key computed from it) comes from the steps before it only once they are
    // done, and the broker never runs code: the key of a limited run is fixed when it is created.
    if (task.limits?.key !== undefined) {
      throw new ConfigError(
        `workflow: task "${task.name}" computes its limits key from its input (limits.key), which a next() or join() step gets only from the steps before it once they are done: make it a step with its own input (task.step(input), which waits for the steps before it in a chain without taking their values), or give the task limits without a key (global, globalRate) (docs/flow-control.md)`,
      );
    }
    if (task.expiresIn !== undefined) throw noExpiry(task.name);
    if (task.timing?.throttle || task.timing?.debounce) throw noTiming(task.name);
    const queue = options.queue ?? task.queue;
    const run: NewWorkflowRun = {
      id: newRunId(queue, now),
      task: task.name,
      queue,
      input: 'null',
      priority: options.priority ?? task.priority,
      runAt: now,
      cancelledRetentionMs: task.retention.cancelled,
    };
    // A task limited in total only (global, globalRate): its runs have no key, whatever their input.
    const flow = task.limits !== undefined ? task.flowWithoutInput?.() : undefined;
    if (flow) run.flow = flow;
    return run;
  };

  const edges = (from: Out | null, onFailure: DependencyPolicy | undefined) =>
    (from?.ids ?? []).map((id) => (onFailure ? { id, onFailure } : { id }));

  const compile = (node: Node, before: Out | null, at: string): Out => {
    switch (node.kind) {
      case 'step': {
        checkOwn(node.task, at);
        if (node.task.timing?.throttle || node.task.timing?.debounce) throw noTiming(node.task.name);
        // The key a task derives from its input (its idempotencyKey option) holds for its steps too:
        // a workflow whose step's key is held by a stored run is not created (created: false).
        const run = node.task.prepare(node.input, node.options, now, maxInputBytes);
        if (run.startBy !== undefined) throw noExpiry(node.task.name);
        bytes += Buffer.byteLength(run.input);
        if (bytes > MAX_WORKFLOW_BYTES) {
          throw new ConfigError(
            `workflow: the inputs of its first ${count(runs.length + 1)} steps (of ${count(steps)}) are ${count(bytes)} bytes of JSON, over the limit of ${count(MAX_WORKFLOW_BYTES)} bytes of step inputs per workflow (docs/workflows.md, "Limits"; the last, of task "${node.task.name}"${at}, is ${count(Buffer.byteLength(run.input))} bytes): pass large data by reference (a key or a URL) instead`,
          );
        }
        if (before) run.dependsOn = edges(before, undefined);
        runs.push(run);
        return { ids: [run.id], many: false };
      }
      case 'next': {
        if (!before)
          throw new ConfigError(
            `Task "${node.task.name}": next() takes the value of a step before it; put it after one in a chain or chord`,
          );
        checkOwn(node.task, at);
        const run = pendingRun(node.task, node.options);
        run.dependsOn = edges(before, node.options.onFailure);
        run.inputFrom = before.many ? 'list' : 'value';
        runs.push(run);
        return { ids: [run.id], many: false };
      }
      case 'join':
        throw new ConfigError(`Task "${node.task.name}": join() names nodes of a dag; use it as a node of dag({...})`);
      case 'chain': {
        let out = before;
        for (const item of node.items) out = compile(item, out, at);
        return out as Out;
      }
      case 'group': {
        const ids: string[] = [];
        for (const item of node.items) {
          const out = compile(item, before, at);
          if (out.many || out.ids.length !== 1)
            throw new ConfigError('group(): a group inside a group has no single value; use a chord, or one group');
          ids.push(out.ids[0] as string);
        }
        return { ids, many: true };
      }
      case 'dag':
        throw new ConfigError('dag(): a dag is a whole workflow; it cannot be nested in another shape');
    }
  };

  let value: CompiledWorkflow['value'];
  if (root.kind === 'dag') {
    const done = new Map<string, string>();
    const visiting = new Set<string>();
    const visit = (name: string): string => {
      const got = done.get(name);
      if (got) return got;
      const node = root.nodes[name];
      if (!node) throw new ConfigError(`dag(): a join names node "${name}", which the dag does not have`);
      if (visiting.has(name)) throw new ConfigError(`dag(): node "${name}" depends on itself through its joins (a cycle)`);
      visiting.add(name);
      let id: string;
      if (node.kind === 'join') {
        checkOwn(node.task, ` (dag node "${name}")`);
        const deps = Object.entries(node.deps).map(([key, dep]) => ({ key, id: visit(dep) }));
        const run = pendingRun(node.task, node.options);
        run.dependsOn = deps.map((d) => ({
          id: d.id,
          name: d.key,
          ...(node.options.onFailure ? { onFailure: node.options.onFailure } : {}),
        }));
        run.inputFrom = 'object';
        runs.push(run);
        id = run.id;
      } else {
        const out = compile(node, null, ` (dag node "${name}")`);
        if (out.many || out.ids.length !== 1)
          throw new ConfigError(`dag(): node "${name}" is a group; make it a chord, or one node per member`);
        id = out.ids[0] as string;
      }
      visiting.delete(name);
      done.set(name, id);
      return id;
    };
    for (const name of Object.keys(root.nodes)) visit(name);
    value = { kind: 'dag', ids: Object.fromEntries(done) };
  } else {
    const out = compile(root, null, '');
    value = out.many ? { kind: 'many', ids: out.ids } : { kind: 'one', id: out.ids[0] as string };
  }
  const first = runs[0];
  if (!first) throw new ConfigError('workflow: the shape has no steps');
  return { id: newRunId(first.queue, now), runs, value };
}

// ---------------------------------------------------------------------------------------------
// Dynamic fan-out: a handler ends its attempt by spawning a shape (`ctx.spawn`)

/**
 * What `ctx.spawn(shape)` returns and the handler returns in turn: the attempt ends by creating the
 * shape's runs, and the run waits for them (holding no worker slot); its result is the shape's value
 * (`R`). Built, checked and compiled when `ctx.spawn` is called; stored by the worker.
 */
export class Spawn<R> {
  /** @internal phantom: the value the run finishes with. */
  declare readonly __result?: R;
  readonly runs: readonly NewWorkflowRun[];
  readonly awaits: readonly Dependency[];
  readonly resultFrom: SpawnSettlement['resultFrom'];
  /** @internal */
  constructor(runs: readonly NewWorkflowRun[], awaits: readonly Dependency[], resultFrom: SpawnSettlement['resultFrom']) {
    this.runs = runs;
    this.awaits = awaits;
    this.resultFrom = resultFrom;
  }
}

/**
 * Compiles a shape spawned by run `parentId` (`ctx.spawn`): its runs as `errand.workflow` builds
 * them (`tasks`: the worker's, as `compileWorkflow` takes them), and what the parent awaits (the
 * shape's value: one run's, a group's list, a dag's object).
 */
export function compileSpawn<F extends AnyFlow>(
  flow: F,
  now: number,
  maxInputBytes: number,
  tasks?: ReadonlyMap<string, unknown>,
): Spawn<ResultOf<F>> {
  const compiled = compileWorkflow(flow, now, maxInputBytes, tasks);
  // Spawned runs take no idempotency keys (each spawn is applied once, under the spawning lease).
  for (const run of compiled.runs) {
    delete run.idempotencyKey;
    delete run.idempotencyTtl;
  }
  const v = compiled.value;
  if (v.kind === 'one') return new Spawn(compiled.runs, [{ id: v.id }], 'value');
  if (v.kind === 'many')
    return new Spawn(
      compiled.runs,
      v.ids.map((id) => ({ id })),
      'list',
    );
  return new Spawn(
    compiled.runs,
    Object.entries(v.ids).map(([name, id]) => ({ id, name })),
    'object',
  );
}
