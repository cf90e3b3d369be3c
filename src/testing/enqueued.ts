/** What was enqueued, as the testing helpers show it, and how `enqueued()` matches and describes it. */
import type { z } from 'zod';
import { timeOfRunId } from '../core/ids.ts';
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
