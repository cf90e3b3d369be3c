import type { InputIssue } from './errors.ts';

function describe(value: unknown): string {
  if (typeof value === 'function') return `a function${value.name ? ` (${value.name})` : ''}`;
  if (typeof value === 'bigint') return 'a BigInt';
  if (typeof value === 'symbol') return 'a Symbol';
  if (typeof value === 'number') return String(value);
  if (value instanceof Date) return 'a Date (send an ISO string, e.g. date.toISOString())';
  if (value instanceof Map) return 'a Map (send an object or an array of entries)';
  if (value instanceof Set) return 'a Set (send an array)';
  const ctor = (value as object)?.constructor?.name;
  return ctor ? `an instance of ${ctor}` : 'a non-plain object';
}

/** Deepest nesting accepted in inputs, results and progress values. */
export const MAX_DEPTH = 256;

/**
 * Checks that `value` survives a JSON round trip unchanged, and returns every place where it would
 * not: functions, symbols, BigInt, NaN and infinities, class instances (Date, Map, Buffer...),
 * cycles, and undefined inside arrays. Object properties that are undefined are fine (JSON omits
 * them, which reads back as absent).
 */
export function jsonIssues(value: unknown, limit = 20, maxDepth = MAX_DEPTH): InputIssue[] {
  // Most values are plain JSON: checked without building paths; the walk below says what is wrong.
  if (value === undefined || plainJson(value, 0, maxDepth)) return [];
  const issues: InputIssue[] = [];
  const stack = new Set<object>();
  const walk = (v: unknown, path: (string | number)[], inArray: boolean): void => {
    if (issues.length >= limit) return;
    if (path.length > maxDepth) {
      issues.push({ path: path.slice(0, 8), message: `is nested deeper than ${maxDepth} levels`, code: 'too_deep' });
      return;
    }
    if (v === null || typeof v === 'string' || typeof v === 'boolean') return;
    if (typeof v === 'number') {
      if (!Number.isFinite(v))
        issues.push({ path, message: `${describe(v)} is not valid JSON (it would become null)`, code: 'not_serializable' });
      return;
    }
    if (v === undefined) {
      if (inArray)
        issues.push({ path, message: 'undefined inside an array does not survive JSON (it would become null)', code: 'not_serializable' });
      return;
    }
    if (typeof v !== 'object') {
      issues.push({ path, message: `${describe(v)} cannot be sent as JSON`, code: 'not_serializable' });
      return;
    }
    if (stack.has(v)) {
      issues.push({ path, message: 'a circular reference cannot be sent as JSON', code: 'not_serializable' });
      return;
    }
    if (Array.isArray(v)) {
      stack.add(v);
      for (let i = 0; i < v.length; i++) walk(v[i], [...path, i], true);
      stack.delete(v);
      return;
    }
    const proto = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) {
      issues.push({
        path,
        message: `${describe(v)} cannot be sent as JSON: use plain objects, arrays, strings, numbers, booleans and null`,
        code: 'not_serializable',
      });
      return;
    }
    stack.add(v);
    for (const key of Object.keys(v)) walk((v as Record<string, unknown>)[key], [...path, key], false);
    for (const sym of Object.getOwnPropertySymbols(v)) {
      issues.push({ path: [...path, String(sym)], message: 'symbol keys cannot be sent as JSON', code: 'not_serializable' });
    }
    stack.delete(v);
  };
  walk(value, [], false);
  return issues;
}

/** JSON.parse that never throws: `{ ok: false }` for text that is not JSON. */
export function safeParse(text: string | undefined | null): { ok: true; value: unknown } | { ok: false; error: string } {
  if (text === undefined || text === null) return { ok: true, value: undefined };
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
}

/**
 * Whether a value survives JSON as it is, checked without allocating: false for anything the walk
 * in jsonIssues would report (and, conservatively, for any nesting past maxDepth, cycles included).
 */
function plainJson(v: unknown, depth: number, maxDepth: number): boolean {
  if (v === null) return true;
  switch (typeof v) {
    case 'string':
    case 'boolean':
      return true;
    case 'number':
      return Number.isFinite(v);
    case 'object':
      break;
    default:
      return false;
  }
  if (depth >= maxDepth) return false;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const x = v[i];
      if (x === undefined || !plainJson(x, depth + 1, maxDepth)) return false;
    }
    return true;
  }
  const proto = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) return false;
  const o = v as Record<string, unknown>;
  for (const key in o) {
    if (!Object.hasOwn(o, key)) return false;
    const x = o[key];
    if (x !== undefined && !plainJson(x, depth + 1, maxDepth)) return false;
  }
  return Object.getOwnPropertySymbols(o).length === 0;
}
