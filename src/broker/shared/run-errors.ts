/**
 * The errors a broker itself stores on a run (as opposed to the handler's errors, which the worker
 * sends in its settlements): each is defined here once, by name, reason and message, and every
 * broker stores exactly that. The SQLite broker and the Redis broker's TypeScript call `runError`
 * / `runErrorText`; the Redis broker's Lua scripts get the same definitions as generated Lua (see
 * `runErrorsLua`, included into `lua/common.lua` where it says `--!run-errors`).
 *
 * Messages are templates: `{name}` is replaced by the value of that variable.
 */
import type { RunError } from '../types.ts';

interface RunErrorDefinition {
  readonly name: string;
  /** The run error's `reason`: says that Errand, not the handler, failed the run. */
  readonly reason: string;
  readonly message: string;
  /** The variables the message names, in the order the generated Lua function takes them. */
  readonly vars: readonly string[];
}

export const RUN_ERRORS = {
  /** A run whose lease expired `maxLeaseLosses` times (its worker died or stalled each time). */
  leaseLost: {
    name: 'LeaseLostError',
    reason: 'lease_lost',
    message: 'The run lost its lease too many times (its worker died or stalled each time): failed instead of requeued',
    vars: [],
  },
  /** A run stored in a form that cannot be read (edited by hand, written by a broken client). */
  corrupt: {
    name: 'CorruptRunError',
    reason: 'corrupt',
    message: 'Run {id} is stored corrupt: {why}',
    vars: ['id', 'why'],
  },
  /** A run of a workflow cancelled because a dependency ended without succeeding (edge policy `cancel`). */
  dependencyFailed: {
    name: 'DependencyFailedError',
    reason: 'dependency_failed',
    message: 'Cancelled: its dependency {id} ended without succeeding',
    vars: ['id'],
  },
  /** A spawn (dynamic fan-out) that names a run id already taken: nothing was created, the spawning run failed. */
  spawnRefused: {
    name: 'SpawnRefusedError',
    reason: 'spawn_refused',
    message: 'The runs it spawned were not created: run id {id} is taken already',
    vars: ['id'],
  },
} as const satisfies Record<string, RunErrorDefinition>;

export type RunErrorKind = keyof typeof RUN_ERRORS;
type VarsOf<K extends RunErrorKind> = (typeof RUN_ERRORS)[K]['vars'][number];
export type RunErrorVars<K extends RunErrorKind> = [VarsOf<K>] extends [never] ? Record<string, never> : Record<VarsOf<K>, string>;

/** The run error of `kind`, its message filled in. */
export function runError<K extends RunErrorKind>(kind: K, vars: RunErrorVars<K>): RunError {
  const def: RunErrorDefinition = RUN_ERRORS[kind];
  const message = def.message.replace(/\{(\w+)\}/g, (_, v: string) => String((vars as Record<string, string>)[v] ?? ''));
  return { name: def.name, message, reason: def.reason };
}

/** The run error of `kind` as the JSON text a broker stores in the run's error. */
export function runErrorText<K extends RunErrorKind>(kind: K, vars: RunErrorVars<K>): string {
  return JSON.stringify(runError(kind, vars));
}

/** A Lua string literal of ASCII text. */
function luaString(text: string): string {
  if (!/^[\x20-\x7e]*$/.test(text)) throw new Error(`A run error template must be printable ASCII: ${JSON.stringify(text)}`);
  return `'${text.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/**
 * The run errors as Lua definitions, one per line group, each `local` (so that the script loader
 * includes only those a script uses): a kind without variables is a string constant
 * `<kind>Error`, one with variables a function `<kind>Error(<vars>)` returning the JSON text.
 * The text is the same as `runErrorText`'s (cjson may escape a `/` in a value as `\/`: the same
 * string once parsed).
 */
export function runErrorsLua(): string {
  const out: string[] = ['-- Run errors, generated from src/broker/shared/run-errors.ts (the one definition of each).'];
  for (const [kind, def] of Object.entries(RUN_ERRORS) as [RunErrorKind, RunErrorDefinition][]) {
    const head = `{"name":${JSON.stringify(def.name)},"message":`;
    const tail = `,"reason":${JSON.stringify(def.reason)}}`;
    if (def.vars.length === 0) {
      out.push(`local ${kind}Error = ${luaString(head + JSON.stringify(def.message) + tail)}`);
      continue;
    }
    const parts = def.message.split(/\{(\w+)\}/);
    const expr = parts
      .map((p, i) => {
        if (i % 2 === 0) return p === '' ? null : luaString(p);
        if (!def.vars.includes(p)) throw new Error(`Run error ${kind}: the message names {${p}}, which is not one of its vars`);
        return `tostring(${p})`;
      })
      .filter((p): p is string => p !== null)
      .join(' .. ');
    out.push(`local function ${kind}Error(${def.vars.join(', ')})`);
    out.push(`  return ${luaString(head)} .. cjson.encode(${expr}) .. ${luaString(tail)}`);
    out.push('end');
  }
  return out.join('\n');
}
