/** What was enqueued, as the testing helpers show it, and how `enqueued()` matches and describes it. */
import type { z } from 'zod';
import { ConfigError } from '../core/errors.ts';
import { timeOfRunId } from '../core/ids.ts';
import { show as given, unknownKey } from '../core/show.ts';
import type { JournalEntry } from './test-broker.ts';

// ---- what was enqueued --------------------------------------------------------------------------

/** One enqueue of one run, as the code under test asked for it. */
export interface EnqueuedRun<I = unknown> {
  id: string;
  task: string;
  queue: string;
  /** The input as given to `enqueue` (as stored: JSON). */
  input: I;
  priority: number;
  /** When the run may start. */
  runAt: Date;
  /** `runAt` minus the time of the enqueue, in ms: 0 unless `delay` or a future `runAt` was given. */
  delay: number;
  idempotencyKey?: string;
  traceparent?: string;
  /** False when an idempotency key matched an earlier run: no new run was made (`id` is the earlier run's). */
  created: boolean;
}

/** Every field optional: an object in `input` matches when each of its keys matches (recursively); arrays and values must be equal. */
export type DeepPartial<T> = T extends readonly unknown[] ? T : T extends object ? { [K in keyof T]?: DeepPartial<T[K]> } : T;

/** What `enqueued`, `assertEnqueued` and `refuteEnqueued` look for; every field is optional. */
export interface EnqueuedMatch<I = unknown> {
  /** A subset of the input (objects match by their keys, recursively), or a predicate. */
  input?: DeepPartial<I> | ((input: I) => boolean);
  queue?: string;
  priority?: number;
  /** Exact delay in ms (`enqueue(input, { delay })`); 0 matches runs due at once. */
  delay?: number;
  /** Exact start time (`enqueue(input, { runAt })`). */
  runAt?: Date | number;
  idempotencyKey?: string;
  /** For `assertEnqueued`: exactly this many matching enqueues (default: at least one). */
  count?: number;
}

/** A task (what `errand.task()` returns), for the helpers that only need its name and schema. */
export type AnyTask = { readonly name: string; readonly schema: z.ZodType };
export type InputOf<T> = T extends { readonly schema: infer S extends z.ZodType } ? z.input<S> : unknown;

// ---- checking what a test asks for ----------------------------------------------------------------

/** The keys of an `EnqueuedMatch`; `count` only for `assertEnqueued`. */
const MATCH_KEYS = ['input', 'queue', 'priority', 'delay', 'runAt', 'idempotencyKey'] as const;

/**
 * Checks the `match` a helper was given (`where`: the helper, e.g. `t.assertEnqueued()`): an object
 * of known keys (`count` where `withCount`) whose values can match something. A misspelled key, or a
 * value of the wrong type, would match every enqueue or none, and an assertion would pass unseen.
 */
export function checkMatch(match: unknown, where: string, withCount: boolean): EnqueuedMatch {
  if (match === undefined) return {};
  const keys: readonly string[] = withCount ? [...MATCH_KEYS, 'count'] : MATCH_KEYS;
  if (match === null || typeof match !== 'object' || Array.isArray(match)) {
    throw new ConfigError(`${where}: match must be an object ({ ${keys.join(', ')} }), got ${given(match)}`);
  }
  const m = match as Record<string, unknown>;
  if (!withCount && m.count !== undefined) throw new ConfigError(`${where}: match.count is for t.assertEnqueued() only`);
  checkKeys(m, keys, where, 'match');
  const bad = (key: string, want: string) => new ConfigError(`${where}: match.${key} must be ${want}, got ${given(m[key])}`);
  for (const key of ['queue', 'idempotencyKey'] as const)
    if (m[key] !== undefined && typeof m[key] !== 'string') throw bad(key, 'a string');
  for (const key of ['priority', 'delay'] as const)
    if (m[key] !== undefined && (typeof m[key] !== 'number' || !Number.isFinite(m[key]))) throw bad(key, 'a number');
  if (m.runAt !== undefined && !(m.runAt instanceof Date ? Number.isFinite(m.runAt.getTime()) : Number.isFinite(m.runAt))) {
    throw bad('runAt', 'a valid Date or epoch milliseconds');
  }
  if (m.count !== undefined && (typeof m.count !== 'number' || !Number.isInteger(m.count) || m.count < 0)) {
    throw bad('count', 'a non-negative integer');
  }
  return m as EnqueuedMatch;
}

/** Refuses a key of `obj` not in `known` (`where`: the helper; `what`: the argument, e.g. `match`). */
export function checkKeys(obj: object, known: readonly string[], where: string, what: string): void {
  const unknown = unknownKey(obj, known, `a key of ${what}`);
  if (unknown) throw new ConfigError(`${where}: ${unknown}`);
}

/**
 * The name of the task a helper was given (`where`: the helper): a task (what `errand.task()`
 * returns) or its name, one of `tasks` (the app's). `undefined` (a missing or misspelled import)
 * is refused unless `optional` (then: any task). A name no task of the app has is refused too: no run
 * of it can have been enqueued, so an assertion on it says nothing.
 */
export function taskNameOf(task: unknown, where: string, tasks: ReadonlyMap<string, unknown>, optional: boolean): string | undefined {
  if (task === undefined && optional) return undefined;
  const name = typeof task === 'string' ? task : typeof task === 'object' && task !== null ? (task as { name?: unknown }).name : undefined;
  if (typeof name !== 'string') {
    throw new ConfigError(
      `${where}: the task must be a task (what errand.task() returns) or its name, got ${given(task)}${task === undefined ? ' (a missing or misspelled import?)' : ''}`,
    );
  }
  if (!tasks.has(name)) {
    const known = [...tasks.keys()].map((n) => JSON.stringify(n)).join(', ') || 'none';
    throw new ConfigError(`${where}: no task named ${JSON.stringify(name)} is defined on this app (tasks: ${known})`);
  }
  return name;
}

// ---- matching -----------------------------------------------------------------------------------

export function toEnqueued({ run, result }: JournalEntry): EnqueuedRun {
  const at = timeOfRunId(run.id);
  const e: EnqueuedRun = {
    id: result.id,
    task: run.task,
    queue: run.queue,
    input: JSON.parse(run.input) as unknown,
    priority: run.priority,
    runAt: new Date(run.runAt),
    delay: Math.max(0, run.runAt - at),
    created: result.created,
  };
  if (run.idempotencyKey !== undefined) e.idempotencyKey = run.idempotencyKey;
  if (run.traceparent !== undefined) e.traceparent = run.traceparent;
  return e;
}

export function matches(e: EnqueuedRun, m: EnqueuedMatch): boolean {
  if (m.queue !== undefined && e.queue !== m.queue) return false;
  if (m.priority !== undefined && e.priority !== m.priority) return false;
  if (m.delay !== undefined && e.delay !== m.delay) return false;
  if (m.runAt !== undefined && e.runAt.getTime() !== (m.runAt instanceof Date ? m.runAt.getTime() : m.runAt)) return false;
  if (m.idempotencyKey !== undefined && e.idempotencyKey !== m.idempotencyKey) return false;
  if (m.input !== undefined) {
    if (typeof m.input === 'function') return Boolean((m.input as (i: unknown) => boolean)(e.input));
    return subset(e.input, m.input);
  }
  return true;
}

/** `expected` within `actual`: objects by their keys (recursively), arrays element by element, values equal. */
export function subset(actual: unknown, expected: unknown): boolean {
  if (Array.isArray(expected)) {
    return Array.isArray(actual) && actual.length === expected.length && expected.every((x, i) => subset(actual[i], x));
  }
  if (expected !== null && typeof expected === 'object') {
    if (actual === null || typeof actual !== 'object' || Array.isArray(actual)) return false;
    const a = actual as Record<string, unknown>;
    return Object.entries(expected).every(([k, v]) => (v === undefined ? !(k in a) || a[k] === undefined : k in a && subset(a[k], v)));
  }
  return Object.is(actual, expected);
}

export function describeMatch(m: EnqueuedMatch): string {
  const parts: string[] = [];
  if (m.input !== undefined) parts.push(typeof m.input === 'function' ? 'input matching the predicate' : `input ${show(m.input)}`);
  for (const key of ['queue', 'priority', 'delay', 'idempotencyKey'] as const)
    if (m[key] !== undefined) parts.push(`${key} ${show(m[key])}`);
  if (m.runAt !== undefined) parts.push(`runAt ${new Date(m.runAt).toISOString()}`);
  return parts.length ? ` with ${parts.join(', ')}` : '';
}

export function describeEnqueued(e: EnqueuedRun): string {
  const extra = [
    `queue ${show(e.queue)}`,
    e.priority !== 0 ? `priority ${e.priority}` : '',
    e.delay ? `delay ${e.delay}` : '',
    e.idempotencyKey !== undefined ? `idempotencyKey ${show(e.idempotencyKey)}` : '',
    e.created ? '' : 'not created (idempotency key matched)',
  ].filter(Boolean);
  return `${e.task} ${show(e.input)} (${extra.join(', ')})`;
}

export function show(v: unknown): string {
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 200 ? `${text.slice(0, 200)}...` : text;
}
