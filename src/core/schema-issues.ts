/**
 * A value checked by a zod schema, its problems as `InputIssue`s: one place for every check of a
 * task's input, an HTTP request part, a dashboard form or a Celery message against a user's schema.
 *
 * A required field that is absent reads as FastAPI says it: message "Field required", code
 * `missing` (zod's own message, "Invalid input: expected string, received undefined", says what was
 * expected of a value that is not there). A message the schema sets itself for that field is kept;
 * the code is `missing` whenever the value is absent.
 */
import type { InputIssue } from './errors.ts';

export const FIELD_REQUIRED = 'Field required';

/** What the checks need of a schema: zod's `safeParse`, with its per-parse error option. */
export interface CheckableSchema<T = unknown> {
  safeParse(
    value: unknown,
    params?: { error?: (issue: { code?: string; input?: unknown }) => string | undefined },
  ): { success: true; data: T } | { success: false; error: { issues: readonly SchemaIssue[] } };
}

interface SchemaIssue {
  path: readonly PropertyKey[];
  message: string;
  code: string;
}

/** The issue codes zod gives a value that is not there: of a plain type, a union, an enum or a literal. */
const ABSENT_CODES = new Set(['invalid_type', 'invalid_union', 'invalid_value']);

const requiredMessage = (issue: { code?: string; input?: unknown }) =>
  issue.input === undefined && ABSENT_CODES.has(issue.code ?? '') ? FIELD_REQUIRED : undefined;

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

/** `value` checked by `schema`: the parsed value, or the issues, each with its path. */
export function checkSchema<T>(schema: CheckableSchema<T>, value: unknown): { ok: true; value: T } | { ok: false; issues: InputIssue[] } {
  const r = schema.safeParse(value, { error: requiredMessage });
  if (r.success) return { ok: true, value: r.data };
  return {
    ok: false,
    issues: (r.error?.issues ?? []).map((i) => {
      const path = i.path.map((p) => (typeof p === 'symbol' ? String(p) : p));
      return { path, message: i.message, code: ABSENT_CODES.has(i.code) && absentAt(value, path) ? 'missing' : i.code };
    }),
  };
}
