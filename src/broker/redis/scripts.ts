/**
 * The Lua scripts of the Redis broker: one per state transition, in `./lua/*.lua`. Each file starts
 * with a comment documenting its KEYS, ARGV and return value, followed by its directives:
 *
 *   --!keys 4
 *   --!include common.lua: rcall, finish, notify
 *
 * - `--!keys N` (required): how many of its arguments are KEYS (the other keys a script touches
 *   share their hash tag). The loader checks it against the `KEYS[i]` the header documents and the
 *   code reads.
 * - `--!include <file>: names` (optional): the helpers of a shared file that the script uses. The
 *   line is replaced by the file's opening comment and those definitions, with the ones they use in
 *   turn, in file order. The list must be exact: a name the file does not define, a listed name the
 *   script does not use, or a name of the file the script uses without listing it fails the load.
 *
 * They are registered with ioredis `defineCommand`: the first call on a connection sends the
 * script (EVAL), later ones only its SHA1 (EVALSHA); after a `SCRIPT FLUSH` (or a failover to a
 * server that never saw it) ioredis gets NOSCRIPT and sends the script again by itself.
 */
import { readFileSync } from 'node:fs';
import type { Cluster, Redis } from 'ioredis';
import { runErrorsLua } from '../shared/run-errors.ts';
import { LATENCY_BUCKETS_MS } from '../types.ts';

/** The scripts (`./lua/<name>.lua`), each registered as `errand_<name>`. */
export const SCRIPT_NAMES = [
  'enqueue',
  'reserve',
  'settle',
  'renew',
  'release',
  'progress',
  'cancel',
  'retry',
  'prune',
  'counts',
  'watch',
  'wake',
  'list',
  'purge',
  'retryfailed',
  'record',
  'migrate',
  'layout',
  'wfcreate',
  'wfcancel',
  'wfmulti',
  'wfrelay',
  'schedupsert',
  'schedfire',
  'schedadmin',
  'flowkeys',
] as const;

export type ScriptName = (typeof SCRIPT_NAMES)[number];

/** A script ready to register: its text with includes expanded, and its number of KEYS. */
export interface LoadedScript {
  name: ScriptName;
  keys: number;
  lua: string;
}

const LUA_DIR = new URL('./lua/', import.meta.url);

function read(file: string): string {
  // `--!run-errors`: the run errors a broker stores, from their one definition (shared/run-errors.ts).
  return readFileSync(new URL(file, LUA_DIR), 'utf8').replace(/^--!run-errors$/m, () => runErrorsLua());
}

/** Lua text without its comments (names in comments are not uses). */
function code(text: string): string {
  return text.replace(/--\[\[[\s\S]*?\]\]/g, '').replace(/--.*$/gm, '');
}

function identifiers(text: string): Set<string> {
  return new Set(code(text).match(/[A-Za-z_]\w*/g) ?? []);
}

function maxKey(text: string): number {
  let max = 0;
  for (const m of text.matchAll(/KEYS\[(\d+)\]/g)) max = Math.max(max, Number(m[1]));
  return max;
}

/** Loads a script of `./lua/`. */
export function loadScript(name: ScriptName): LoadedScript {
  return { name, ...expandScript(`${name}.lua`, read(`${name}.lua`)) };
}

/**
 * Reads a script's directives, expands its includes (`readFile` gives an included file's text) and
 * checks what it declares. Throws an Error naming the file and what is wrong.
 */
export function expandScript(file: string, body: string, readFile: (file: string) => string = read): { keys: number; lua: string } {
  const fail = (why: string) => new Error(`Redis script ${file}: ${why}`);

  const keyLines = [...body.matchAll(/^--!keys (\d+)\s*$/gm)];
  if (keyLines.length !== 1) throw fail('needs exactly one `--!keys N` line after its header comment');
  const keys = Number(keyLines[0]![1]);
  const header = /^--\[\[[\s\S]*?\]\]/.exec(body)?.[0] ?? '';
  if (maxKey(header) !== keys) throw fail(`declares ${keys} KEYS, its header documents ${maxKey(header)}`);
  if (maxKey(code(body)) > keys) throw fail(`reads KEYS[${maxKey(code(body))}] but declares ${keys} KEYS`);

  const lua = body
    .replace(/^--!include ([\w.-]+\.lua):([^\n]*)$/gm, (_, included: string, list: string) =>
      includedPart(readFile(included), list.split(/[\s,]+/).filter(Boolean), body, (why) => fail(`${included}: ${why}`)),
    )
    .replace('{ 0 } --!buckets', `{ ${LATENCY_BUCKETS_MS.join(', ')} }`);
  if (/^--!include/m.test(lua)) throw fail('an include line must read `--!include <file>.lua: name, name, ...`');
  return { keys, lua };
}

/** The text of a script with its includes expanded. */
export function scriptSource(name: ScriptName): string {
  return loadScript(name).lua;
}

/**
 * The part of an included file that a script asks for: the file's opening comment, then each
 * top-level definition (`local name = ...` or `local function name(...)`, up to the next one) that
 * is listed, or that a kept definition uses, in file order. Redis runs a script's whole text on
 * every call, so every helper defined costs a closure or a table per call: all of common.lua cost
 * 2.3 µs per call, more than the whole of a small script's own work.
 */
function includedPart(file: string, listed: string[], body: string, fail: (why: string) => Error): string {
  const units: { name: string; text: string }[] = [];
  let head = '';
  for (const line of file.split('\n')) {
    // Each definition names one thing, so that a script naming it gets all of it.
    if (/^local [A-Za-z_]\w*\s*,/.test(line)) throw fail(`defines two names on one line: ${line}`);
    const m = /^local (?:function )?([A-Za-z_]\w*)/.exec(line);
    if (m) units.push({ name: m[1]!, text: '' });
    const last = units[units.length - 1];
    if (last) last.text += `${line}\n`;
    else head += `${line}\n`;
  }
  const defined = new Set(units.map((u) => u.name));
  const own = identifiers(body.replace(/^--!.*$/gm, ''));
  const unknown = listed.filter((n) => !defined.has(n));
  if (unknown.length) throw fail(`does not define ${unknown.join(', ')}`);
  const unused = listed.filter((n) => !own.has(n));
  if (unused.length) throw fail(`${unused.join(', ')} listed but not used`);
  const unlisted = [...own].filter((n) => defined.has(n) && !listed.includes(n));
  if (unlisted.length) throw fail(`uses ${unlisted.join(', ')} without listing them`);

  const used = new Set<string>();
  const pending = [...listed];
  while (pending.length) {
    const name = pending.pop()!;
    const unit = units.find((u) => u.name === name);
    if (!unit || used.has(name)) continue;
    used.add(name);
    for (const n of identifiers(unit.text)) if (n !== name) pending.push(n);
  }
  const kept = units.filter((u) => used.has(u.name)).map((u) => u.text);
  return head + kept.join('');
}

let loaded: LoadedScript[] | undefined;

/** Registers every script on a client (as `errand_<name>`). */
export function defineScripts(client: Redis | Cluster): void {
  loaded ??= SCRIPT_NAMES.map(loadScript);
  for (const { name, keys, lua } of loaded) {
    client.defineCommand(`errand_${name}`, { numberOfKeys: keys, lua });
  }
}

type ScriptFn = (...args: (string | number)[]) => Promise<unknown>;

/** Runs a script: `keys` must have exactly the number of KEYS the script declares. */
export function runScript(
  client: Redis | Cluster,
  name: ScriptName,
  keys: readonly string[],
  args: readonly (string | number)[],
): Promise<unknown> {
  const fn = (client as unknown as Record<string, ScriptFn>)[`errand_${name}`];
  if (!fn) throw new Error(`Redis script ${name} is not defined on this client`);
  return fn.call(client, ...keys, ...args);
}
