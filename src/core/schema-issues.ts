/**
 * A value checked by a zod schema, its problems as `InputIssue`s: one place for every check of a
 * task's input, an HTTP request part, a dashboard form or a Celery message against a user's schema.
 *
 * Where zod's default words are unclear, they read as FastAPI's (a message the schema sets itself
 * is kept):
 * - a required field that is absent: "Field required", code `missing` (zod: "Invalid input:
 *   expected string, received undefined"); the code is `missing` whenever the value is absent;
 * - a value out of several bounds at once, the same way (zod's `.int()` holds a number to the safe
 *   integers, so 1e20 against `.int().max(1000)` is too big twice): one issue, the tightest bound's;
 * - a key a strict object does not know: one issue per key, at the key, "Extra inputs are not
 *   permitted", code `extra_forbidden` (zod: one issue at the object naming every key);
 * - a number that is not one (a query value "abc" coerced): "Input should be a valid number"
 *   (zod: "received NaN"); one out of range of a double (1e400): "Input should be a finite number".
 */
import { z } from 'zod';
import type { InputIssue } from './errors.ts';

export const FIELD_REQUIRED = 'Field required';

/** What the checks need of a schema: zod's `safeParse`, with its per-parse error option. */
export interface CheckableSchema<T = unknown> {
  safeParse(
    value: unknown,
    params?: { error?: (issue: { code?: string; input?: unknown; expected?: unknown }) => string | undefined },
  ): { success: true; data: T } | { success: false; error: { issues: readonly SchemaIssue[] } };
}

export interface SchemaIssue {
  path: readonly PropertyKey[];
  message: string;
  code: string;
  /** `unrecognized_keys`: the keys. */
  keys?: readonly string[];
  /** `too_big`, `too_small`: the bound. */
  maximum?: number | bigint;
  minimum?: number | bigint;
}

/**
 * The bound of a `too_big` or `too_small` issue, as a number to compare (a smaller maximum or a greater
 * minimum is tighter), else undefined.
 */
function boundOf(i: SchemaIssue): number | undefined {
  if (i.code === 'too_big' && i.maximum !== undefined) return Number(i.maximum);
  if (i.code === 'too_small' && i.minimum !== undefined) return -Number(i.minimum);
  return undefined;
}

/** The issue codes zod gives a value that is not there: of a plain type, a union, an enum or a literal. */
const ABSENT_CODES = new Set(['invalid_type', 'invalid_union', 'invalid_value']);

const EXTRA = 'Extra inputs are not permitted';

/**
 * zod's per-parse messages (below a schema's own): FastAPI's words where zod's are unclear, unless
 * the app set its own messages for every schema (`z.config({ customError })`, e.g. translated ones).
 */
function messageOf(issue: { code?: string; input?: unknown; expected?: unknown }): string | undefined {
  if (z.config().customError) return undefined;
  if (issue.input === undefined && ABSENT_CODES.has(issue.code ?? '')) return FIELD_REQUIRED;
  if (issue.code === 'invalid_type' && issue.expected === 'number' && typeof issue.input === 'number') {
    if (Number.isNaN(issue.input)) return 'Input should be a valid number';
    if (!Number.isFinite(issue.input)) return 'Input should be a finite number';
  }
  if (issue.code === 'unrecognized_keys') return EXTRA;
  return undefined;
}

/** Whether `path` leads to nothing in `value`: a key its object lacks (or holds undefined), or no value at all. */
function absentAt(value: unknown, path: readonly (string | number)[]): boolean {
  let v = value;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return false; // not a missing key: a wrong value above it
    if (!Object.hasOwn(v, p)) return true;
    v = (v as Record<string | number, unknown>)[p];
  }
  return v === undefined;
}

/**
 * The issues of a request part that Fastify handed over as null because it was absent: refused as a
 * whole for being null, it is missing (as FastAPI says of a required body that is absent or null).
 */
export function nullAsMissing(value: unknown, issues: InputIssue[]): InputIssue[] {
  const only = issues.length === 1 ? issues[0]! : undefined;
  if (value !== null || !only || only.path.length > 0 || only.code !== 'invalid_type') return issues;
  return [{ path: [], message: FIELD_REQUIRED, code: 'missing' }];
}

/**
 * The issues with one per bound broken: of several `too_big` (or `too_small`) issues at one path, the
 * tightest bound's, in the place of the first (zod's `.int()` adds the safe-integer bounds to a
 * schema's own, so 1e20 against `.int().max(1000)` is too big twice).
 */
export function tightestBounds<T extends SchemaIssue>(issues: readonly T[]): T[] {
  const out: T[] = [];
  const seen = new Map<string, { index: number; bound: number }>();
  for (const i of issues) {
    const bound = boundOf(i);
    if (bound === undefined) {
      out.push(i);
      continue;
    }
    const key = JSON.stringify([i.code, i.path.map((p) => (typeof p === 'symbol' ? String(p) : p))]);
    const first = seen.get(key);
    if (!first) {
      seen.set(key, { index: out.length, bound });
      out.push(i);
    } else if (bound < first.bound) {
      out[first.index] = i;
      first.bound = bound;
    }
  }
  return out;
}

/** `value` checked by `schema`: the parsed value, or the issues, each with its path. */
export function checkSchema<T>(schema: CheckableSchema<T>, value: unknown): { ok: true; value: T } | { ok: false; issues: InputIssue[] } {
  const r = schema.safeParse(value, { error: messageOf });
  if (r.success) return { ok: true, value: r.data };
  const issues: InputIssue[] = [];
  for (const i of tightestBounds(r.error?.issues ?? [])) {
    const path = i.path.map((p) => (typeof p === 'symbol' ? String(p) : p));
    if (i.code === 'unrecognized_keys' && i.keys?.length) {
      for (const key of i.keys) issues.push({ path: [...path, key], message: i.message, code: 'extra_forbidden' });
    } else {
      issues.push({ path, message: i.message, code: ABSENT_CODES.has(i.code) && absentAt(value, path) ? 'missing' : i.code });
    }
  }
  return { ok: false, issues };
}
