/**
 * Redaction of secrets in task inputs, for everything that shows a run: the HTTP run JSON, the
 * dashboard's API, `errand inspect` and error reports.
 *
 * Storage keeps the real input (the handler needs it); what is shown is a copy in which the values
 * at the configured paths are replaced by `"[redacted]"`. The values found there are also scrubbed
 * (as text) from the run's error messages and stacks, its attempt history, its result, its progress
 * and its idempotency key, since a handler often repeats its input in what it throws or returns.
 * That second part catches the value only when it appears verbatim: an error that embeds a
 * transformed secret (its last four digits, a hash, a base64 of it) cannot be recognised.
 *
 * Path syntax (one path per string):
 * - `password`        the key `password` at the top of the input;
 * - `card.number`     a key inside a key; a name applied to an array applies to each element, so
 *                     `cards.number` covers `{ cards: [{ number }, ...] }`;
 * - `*`               any one key (or array index): `*.token` is `token` one level down anywhere;
 * - `**`              any depth, zero levels included: `**.password` is every `password` key;
 * - `items.0.secret`  a number is an array index (and also a key of that name in an object).
 * Keys are compared exactly (case-sensitive); a key containing a dot cannot be named.
 */
import type { AttemptRecord, RunRecord } from './run.ts';
import { ConfigError } from './errors.ts';
import { safeParse } from './json.ts';
import type { RunInfo } from './run-info.ts';

/** What a redacted value is replaced with. */
export const REDACTED = '[redacted]';

/** Secrets shorter than this are not scrubbed from free text (too many false hits); they are still redacted at their path. */
export const MIN_SCRUB_LENGTH = 4;

const MAX_PATHS = 256;
const MAX_PATH_LENGTH = 512;

/**
 * Checks redaction paths and returns them normalised (trimmed, duplicates removed). Throws
 * `ConfigError` naming `where` for anything that is not a usable path.
 */
export function checkRedactPaths(paths: unknown, where: string): string[] {
  if (paths === undefined) return [];
  if (!Array.isArray(paths)) throw new ConfigError(`${where}: redact must be an array of paths like ["password", "card.number"]`);
  if (paths.length > MAX_PATHS) throw new ConfigError(`${where}: redact has ${paths.length} paths, more than ${MAX_PATHS}`);
  const out = new Set<string>();
  for (const raw of paths) {
    if (typeof raw !== 'string') throw new ConfigError(`${where}: redact paths must be strings, got ${typeof raw}`);
    const path = raw.trim();
    const problem = pathProblem(path);
    if (problem) throw new ConfigError(`${where}: redact path ${JSON.stringify(raw)} ${problem}`);
    out.add(path);
  }
  return [...out];
}

function pathProblem(path: string): string | undefined {
  if (path === '') return 'is empty';
  if (path.length > MAX_PATH_LENGTH) return `is longer than ${MAX_PATH_LENGTH} characters`;
  const segs = path.split('.');
  if (segs.some((s) => s === '')) return 'has an empty segment (two dots, or a dot at an end)';
  if (segs.some((s) => s.trim() !== s)) return 'has spaces around a segment';
  if (segs.some((s) => s !== '**' && s.includes('**'))) return 'uses ** inside a segment: ** stands alone, as in **.token';
  if (segs.at(-1) === '**') return 'ends with **: name what to redact after it, as in **.token';
  return undefined;
}

/**
 * Paths from the environment variable `ERRAND_REDACT` (comma-separated), checked. Empty entries are
 * ignored, so `ERRAND_REDACT=""` means none.
 */
export function redactPathsFromEnv(env: NodeJS.ProcessEnv = process.env, name = 'ERRAND_REDACT'): string[] {
  const text = env[name];
  if (!text) return [];
  const paths = text
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  return checkRedactPaths(paths, name);
}

/** The union of several lists of (already checked) paths, without duplicates. */
export function mergeRedactPaths(...lists: (readonly string[] | undefined)[]): string[] {
  const out = new Set<string>();
  for (const list of lists) for (const p of list ?? []) out.add(p);
  return [...out];
}

// ---------------------------------------------------------------------------------------------------

const compiled = new Map<string, string[]>();
function segments(path: string): string[] {
  let segs = compiled.get(path);
  if (!segs) {
    segs = path.split('.');
    if (compiled.size > 10_000) compiled.clear();
    compiled.set(path, segs);
  }
  return segs;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isIndex = (s: string) => /^(0|[1-9]\d{0,9})$/.test(s);

function setOwn(obj: Record<string, unknown>, key: string, value: unknown): void {
  // defineProperty, not assignment: a "__proto__" key from JSON.parse is an own data property.
  Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
}

/**
 * Returns `node` with `replace` applied at every place `segs[i..]` matches, copying only what
 * changes (the original is never modified).
 */
function rewrite(node: unknown, segs: readonly string[], i: number, replace: (old: unknown) => unknown): unknown {
  if (i === segs.length) return replace(node);
  const seg = segs[i]!;
  if (seg === '**') {
    // Zero levels here, then the same `**` one level further down.
    let out = rewrite(node, segs, i + 1, replace);
    out = mapChildren(out, (child) => rewrite(child, segs, i, replace));
    return out;
  }
  if (Array.isArray(node)) {
    if (seg === '*') return mapChildren(node, (child) => rewrite(child, segs, i + 1, replace));
    if (isIndex(seg)) {
      const k = Number(seg);
      if (k >= node.length) return node;
      const child = rewrite(node[k], segs, i + 1, replace);
      if (child === node[k]) return node;
      const copy = node.slice();
      copy[k] = child;
      return copy;
    }
    // A name at an array: it applies to each element.
    return mapChildren(node, (child) => rewrite(child, segs, i, replace));
  }
  if (isPlainObject(node)) {
    if (seg === '*') return mapChildren(node, (child) => rewrite(child, segs, i + 1, replace));
    if (!Object.hasOwn(node, seg)) return node;
    const child = rewrite(node[seg], segs, i + 1, replace);
    if (child === node[seg]) return node;
    const copy = { ...node };
    setOwn(copy, seg, child);
    return copy;
  }
  return node;
}

function mapChildren(node: unknown, fn: (child: unknown) => unknown): unknown {
  if (Array.isArray(node)) {
    let copy: unknown[] | undefined;
    for (let k = 0; k < node.length; k++) {
      const child = fn(node[k]);
      if (child !== node[k]) {
        copy ??= node.slice();
        copy[k] = child;
      }
    }
    return copy ?? node;
  }
  if (isPlainObject(node)) {
    let copy: Record<string, unknown> | undefined;
    for (const key of Object.keys(node)) {
      const child = fn(node[key]);
      if (child !== node[key]) {
        copy ??= { ...node };
        setOwn(copy, key, child);
      }
    }
    return copy ?? node;
  }
  return node;
}

/**
 * A copy of `value` with the value at every path replaced by `"[redacted]"` (paths that match
 * nothing are ignored; a path never adds a key). `value` itself is not modified.
 */
export function redactValue(value: unknown, paths: readonly string[]): unknown {
  let out = value;
  for (const path of paths) out = rewrite(out, segments(path), 0, () => REDACTED);
  return out;
}

/**
 * The values found at `paths` in `value`, as the texts a message could contain them as: strings,
 * and numbers written out; for an object or array found at a path, every string and number inside.
 * Texts shorter than `MIN_SCRUB_LENGTH` are left out.
 */
export function secretsAt(value: unknown, paths: readonly string[]): string[] {
  const found = new Set<string>();
  const collect = (v: unknown, depth: number): void => {
    if (typeof v === 'string') {
      if (v.length >= MIN_SCRUB_LENGTH) found.add(v);
    } else if (typeof v === 'number' || typeof v === 'bigint') {
      const s = String(v);
      if (s.length >= MIN_SCRUB_LENGTH) found.add(s);
    } else if (v && typeof v === 'object' && depth < 64) {
      for (const child of Array.isArray(v) ? v : Object.values(v)) collect(child, depth + 1);
    }
  };
  for (const path of paths)
    rewrite(value, segments(path), 0, (old) => {
      collect(old, 0);
      return old;
    });
  return [...found];
}

/** `text` with every occurrence of every secret (also as it reads inside a JSON string) replaced by `"[redacted]"`. */
export function scrubText(text: string, secrets: readonly string[]): string {
  if (secrets.length === 0 || text.length === 0) return text;
  const forms = new Set<string>();
  for (const s of secrets) {
    forms.add(s);
    const escaped = JSON.stringify(s).slice(1, -1);
    if (escaped !== s) forms.add(escaped);
  }
  let out = text;
  // Longest first, so that a secret containing another is replaced whole.
  for (const s of [...forms].sort((a, b) => b.length - a.length)) if (out.includes(s)) out = out.replaceAll(s, REDACTED);
  return out;
}

/** A copy of a JSON-like value with every string scrubbed (see `scrubText`); object keys are scrubbed too. */
export function scrubValue(value: unknown, secrets: readonly string[], depth = 0): unknown {
  if (secrets.length === 0) return value;
  if (typeof value === 'string') return scrubText(value, secrets);
  if (typeof value === 'number') return secrets.includes(String(value)) ? REDACTED : value;
  if (depth > 256 || !value || typeof value !== 'object') return value;
  if (Array.isArray(value)) {
    const out = value.map((v) => scrubValue(v, secrets, depth + 1));
    return out.every((v, k) => v === value[k]) ? value : out;
  }
  if (!isPlainObject(value)) return value;
  let changed = false;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    const key = scrubText(k, secrets);
    const child = scrubValue(v, secrets, depth + 1);
    if (key !== k || child !== v) changed = true;
    setOwn(out, key, child);
  }
  return changed ? out : value;
}

/** Scrubs JSON text: parsed, scrubbed and written back when it is JSON, scrubbed as text when not. */
function scrubJsonText(text: string | undefined, secrets: readonly string[]): string | undefined {
  if (text === undefined || text === null || secrets.length === 0) return text;
  const parsed = safeParse(text);
  if (!parsed.ok) return scrubText(text, secrets);
  const out = scrubValue(parsed.value, secrets);
  return out === parsed.value ? text : JSON.stringify(out);
}

function scrubError<E extends { message: string; stack?: string; name: string; reason?: string }>(e: E, secrets: readonly string[]): E {
  const out = { ...e, name: scrubText(e.name, secrets), message: scrubText(e.message, secrets) };
  if (typeof e.stack === 'string') out.stack = scrubText(e.stack, secrets);
  return out;
}

/**
 * A run (as decoded by `decodeRun`, or as `errand.getRun` returns it) with its input redacted at
 * `paths`, and the secrets found there scrubbed from its error, history, result, progress and
 * idempotency key. The run given is not modified; with no paths it is returned as is.
 *
 * An input that could not be decoded (`corrupt` lists `input`) is replaced whole by `"[redacted]"`:
 * its raw text might hold a secret that no path can find.
 */
export function redactRun<R = unknown>(info: RunInfo<R>, paths: readonly string[]): RunInfo<R> {
  if (!paths.length) return info;
  const out: RunInfo<R> = { ...info };
  if (info.corrupt?.includes('input')) {
    out.input = REDACTED;
    return out;
  }
  out.input = redactValue(info.input, paths);
  const secrets = secretsAt(info.input, paths);
  if (!secrets.length) return out;
  if (info.error) out.error = scrubError(info.error, secrets);
  if (info.result !== undefined) out.result = scrubValue(info.result, secrets) as R;
  if (info.progress !== undefined) out.progress = scrubValue(info.progress, secrets);
  if (info.idempotencyKey !== undefined) out.idempotencyKey = scrubText(info.idempotencyKey, secrets);
  out.history = scrubHistory(info.history, secrets);
  return out;
}

function scrubHistory(history: AttemptRecord[] | undefined, secrets: readonly string[]): AttemptRecord[] {
  return (history ?? []).map((h) => {
    const error = scrubJsonText(h.error, secrets);
    return error === h.error ? h : { ...h, error };
  });
}

/**
 * The same as `redactRun` on a run as stored (a `RunRecord`, JSON fields as text), for code that
 * formats stored runs itself: the HTTP layer's `runToJson`, the dashboard's `runDetail`.
 */
export function redactRecord(rec: RunRecord, paths: readonly string[]): RunRecord {
  if (!paths.length) return rec;
  const parsed = safeParse(rec.input);
  if (!parsed.ok) return { ...rec, input: JSON.stringify(REDACTED) };
  const redacted = redactValue(parsed.value, paths);
  const out: RunRecord = { ...rec, input: redacted === parsed.value ? rec.input : JSON.stringify(redacted) };
  const secrets = secretsAt(parsed.value, paths);
  if (!secrets.length) return out;
  if (rec.error !== undefined) out.error = scrubJsonText(rec.error, secrets);
  if (rec.result !== undefined) out.result = scrubJsonText(rec.result, secrets);
  if (rec.progress !== undefined) out.progress = scrubJsonText(rec.progress, secrets);
  if (rec.idempotencyKey !== undefined) out.idempotencyKey = scrubText(rec.idempotencyKey, secrets);
  out.history = scrubHistory(rec.history, secrets);
  return out;
}

/**
 * A copy of a thrown value with the secrets scrubbed from its message, stack and string properties
 * (and those of its `cause` chain), for logging and storing it. Anything that is not an Error is
 * scrubbed as a JSON-like value. Returns `err` itself when nothing changes.
 */
export function scrubThrown(err: unknown, secrets: readonly string[], depth = 0): unknown {
  if (!secrets.length) return err;
  if (!(err instanceof Error)) return scrubValue(err, secrets);
  let changed = false;
  const copy = Object.create(Object.getPrototypeOf(err)) as Error;
  for (const key of Reflect.ownKeys(err)) {
    const desc = Object.getOwnPropertyDescriptor(err, key)!;
    let value: unknown;
    try {
      // `stack` is an accessor on V8 errors: read it from the original, copy it as a plain value.
      value = 'value' in desc ? desc.value : (err as unknown as Record<PropertyKey, unknown>)[key];
    } catch {
      continue;
    }
    let v = value;
    if (typeof v === 'string') v = scrubText(v, secrets);
    else if (key === 'cause' && depth < 8) v = scrubThrown(v, secrets, depth + 1);
    else if (v && typeof v === 'object' && !(v instanceof Error)) v = scrubValue(v, secrets);
    if (v !== value) changed = true;
    Object.defineProperty(copy, key, { value: v, writable: true, enumerable: desc.enumerable ?? false, configurable: true });
  }
  return changed ? copy : err;
}
