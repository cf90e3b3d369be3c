// Where a task's handler runs: in the worker's own thread (`none`), in a worker thread (`thread`) or
// in a child process (`process`). This file checks a task's isolation options and keeps the one
// piece of state an isolate needs at this layer: while an isolate imports the module that defines
// an isolated task, every task defined during that import is recorded here, so that the isolate can
// find the task's handler by name (a handler is a function: it cannot cross to another thread).
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ConfigError } from '../core/errors.ts';
import { show } from '../core/show.ts';

/** Where a task's handler runs. */
export type Isolation = 'none' | 'thread' | 'process';

export const ISOLATIONS: readonly Isolation[] = ['none', 'thread', 'process'];

/** The isolation options of a task, checked. */
export interface IsolationSettings {
  isolation: Isolation;
  /** The file URL of the module an isolate imports to find the handler (for `thread` and `process`). */
  module: string | undefined;
  /** The isolate's heap limit in MB (V8's old generation); undefined: Node's default. */
  memoryLimitMb: number | undefined;
}

/** Checks `isolation`, `module` and `memoryLimitMb` of a task's options. */
export function checkIsolation(
  options: { isolation?: unknown; module?: unknown; memoryLimitMb?: unknown },
  where: string,
): IsolationSettings {
  const isolation = options.isolation ?? 'none';
  if (typeof isolation !== 'string' || !ISOLATIONS.includes(isolation as Isolation)) {
    throw new ConfigError(`${where}: isolation must be "none", "thread" or "process", got ${show(isolation)}`);
  }
  const limit = options.memoryLimitMb;
  if (limit !== undefined && (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 16 || limit > 1_048_576)) {
    throw new ConfigError(`${where}: memoryLimitMb must be an integer number of MB from 16 to 1048576, got ${show(limit)}`);
  }
  if (isolation === 'none') {
    if (limit !== undefined)
      throw new ConfigError(`${where}: memoryLimitMb applies to isolated handlers only: set isolation to "thread" or "process"`);
    return { isolation: 'none', module: undefined, memoryLimitMb: undefined };
  }
  const module = options.module;
  if (module === undefined) {
    throw new ConfigError(
      `${where}: isolation "${isolation}" needs module: import.meta.url (or __filename), the file that defines this task; ` +
        'each isolate imports it to find the handler',
    );
  }
  return { isolation: isolation as Isolation, module: moduleUrl(module, where), memoryLimitMb: limit as number | undefined };
}

/** A module given as a file URL (string or URL) or an absolute path, as a file URL. */
function moduleUrl(module: unknown, where: string): string {
  const text = module instanceof URL ? module.href : module;
  if (typeof text === 'string') {
    if (text.startsWith('file:')) {
      try {
        fileURLToPath(text);
        return text;
      } catch {
        // reported below
      }
    } else if (text.startsWith('/') || /^[A-Za-z]:[\\/]/.test(text)) return pathToFileURL(text).href;
  }
  throw new ConfigError(
    `${where}: module must be a file URL (import.meta.url) or an absolute path (__filename), got ${JSON.stringify(typeof text === 'string' ? text : typeof module)}`,
  );
}

// ---------------------------------------------------------------------------------------------
// Inside an isolate
// ---------------------------------------------------------------------------------------------

/** Shared through `globalThis` so that every copy of Errand loaded in an isolate (src and dist, say) sees it. */
const REGISTRY = Symbol.for('errand.isolate.tasks');

interface Registered {
  name: string;
  handler: (...args: never[]) => unknown;
}

type Registry = Map<string, Registered[]>;

/** Whether this thread or process is an isolate that runs handlers for a worker. */
export function inIsolate(): boolean {
  return (globalThis as { [REGISTRY]?: Registry })[REGISTRY] !== undefined;
}

/** Marks this thread or process as an isolate: from now on, tasks defined here are recorded. */
export function becomeIsolate(): void {
  (globalThis as { [REGISTRY]?: Registry })[REGISTRY] ??= new Map();
}

/** Records a task defined in an isolate (a no-op elsewhere). */
export function recordTask(task: Registered): void {
  const registry = (globalThis as { [REGISTRY]?: Registry })[REGISTRY];
  if (!registry) return;
  const list = registry.get(task.name) ?? [];
  list.push(task);
  registry.set(task.name, list);
}

/** The tasks named `name` defined in this isolate so far. */
export function recordedTasks(name: string): readonly Registered[] {
  return (globalThis as { [REGISTRY]?: Registry })[REGISTRY]?.get(name) ?? [];
}
