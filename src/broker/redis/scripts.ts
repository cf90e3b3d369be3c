/**
 * The Lua scripts of the Redis broker: one per state transition, in `./lua/*.lua`. Each file starts
 * with a comment documenting its KEYS, ARGV and return value, followed by its directives:
 *
 *   --!keys 4
 *   --!include common.lua: rcall, notify
 *   --!include runs.lua: finish
 *
 * - `--!keys N` (required): how many of its arguments are KEYS (the other keys a script touches
 *   share their hash tag). The loader checks it against the `KEYS[i]` the header documents and the
 *   code reads.
 * - `--!include <library>: names` (optional, one line per library of LUA_LIBRARIES): the helpers
 *   of a library that the script uses. The lines are replaced by those definitions and the ones
 *   they use in turn, of any library: each library's opening comment then its definitions kept, in
 *   file order, the libraries each after those it uses. The lists must be exact: a name the library
 *   does not define, a name listed twice or not used, or a helper of any library the script uses
 *   without listing it fails the load; so do libraries that define one name twice, use a name
 *   before its definition, or use each other in a cycle.
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

/**
 * The helper libraries of `./lua/` (the other files there are scripts), each opening with a
 * comment of the keys and fields it owns. Listed so that a library may use those of the files
 * before it; the loader checks that no two define a name and that no two use each other.
 */
export const LUA_LIBRARIES = [
  'common.lua',
  'stats.lua',
  'flow.lua',
  'runs.lua',
  'workflow.lua',
  'spawn.lua',
  'outcomes.lua',
  'leasing.lua',
] as const;

/** Loads a script of `./lua/`. */
export function loadScript(name: ScriptName): LoadedScript {
  return { name, ...expandScript(`${name}.lua`, read(`${name}.lua`)) };
}

/** One top-level definition of a library: `local name = ...` or `local function name(...)`, up to the next one. */
interface Unit {
  file: string;
  name: string;
  text: string;
  /** The names of other definitions (of any library) it uses. */
  uses: string[];
}

/** The libraries parsed: their opening comments, their definitions by name, the files in the order to paste them. */
export interface Libraries {
  heads: Map<string, string>;
  units: Map<string, Unit>;
  order: string[];
}

let defaultLibraries: Libraries | undefined;

/**
 * Parses libraries (file name -> text, in the order given) and checks them: each definition names
 * one thing, no name is defined twice (in one file or two), a definition uses only those before it
 * in its file, and files do not use each other in a cycle. Throws an Error naming the file and what is wrong.
 */
export function parseLibraries(texts: Record<string, string>): Libraries {
  const heads = new Map<string, string>();
  const units = new Map<string, Unit>();
  const files = Object.keys(texts);
  for (const file of files) {
    const fail = (why: string) => new Error(`Redis Lua library ${file}: ${why}`);
    let head = '';
    let last: Unit | undefined;
    for (const line of texts[file]!.split('\n')) {
      // Each definition names one thing, so that a script naming it gets all of it.
      if (/^local [A-Za-z_]\w*\s*,/.test(line)) throw fail(`defines two names on one line: ${line}`);
      const m = /^local (?:function )?([A-Za-z_]\w*)/.exec(line);
      if (m) {
        const other = units.get(m[1]!);
        if (other) throw fail(`defines ${m[1]}, which ${other.file} defines too (a helper name must say where it is)`);
        last = { file, name: m[1]!, text: '', uses: [] };
        units.set(last.name, last);
      }
      if (last) last.text += `${line}\n`;
      else head += `${line}\n`;
    }
    heads.set(file, head);
  }
  const position = new Map([...units.keys()].map((name, i) => [name, i]));
  const fileDeps = new Map(files.map((f) => [f, new Set<string>()]));
  for (const unit of units.values()) {
    for (const n of identifiers(unit.text)) {
      const used = units.get(n);
      if (!used || n === unit.name) continue;
      unit.uses.push(n);
      if (used.file !== unit.file) fileDeps.get(unit.file)!.add(used.file);
      else if (position.get(n)! > position.get(unit.name)!) {
        throw new Error(`Redis Lua library ${unit.file}: ${unit.name} uses ${n}, defined after it`);
      }
    }
  }
  // Files in an order where each comes after those it uses (depth first, in the order given).
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (file: string, path: string[]) => {
    if (state.get(file) === 'done') return;
    if (state.get(file) === 'visiting') {
      const cycle = [...path.slice(path.indexOf(file)), file].join(' -> ');
      throw new Error(`Redis Lua libraries use each other in a cycle: ${cycle}`);
    }
    state.set(file, 'visiting');
    for (const dep of files) if (fileDeps.get(file)!.has(dep)) visit(dep, [...path, file]);
    state.set(file, 'done');
    order.push(file);
  };
  for (const file of files) visit(file, []);
  return { heads, units, order };
}

function libraries(): Libraries {
  defaultLibraries ??= parseLibraries(Object.fromEntries(LUA_LIBRARIES.map((f) => [f, read(f)])));
  return defaultLibraries;
}

/**
 * Reads a script's directives, expands its includes (from `libs`, the broker's libraries unless
 * given) and checks what it declares. Throws an Error naming the file and what is wrong.
 */
export function expandScript(file: string, body: string, libs: Libraries = libraries()): { keys: number; lua: string } {
  const fail = (why: string) => new Error(`Redis script ${file}: ${why}`);

  const keyLines = [...body.matchAll(/^--!keys (\d+)\s*$/gm)];
  if (keyLines.length !== 1) throw fail('needs exactly one `--!keys N` line after its header comment');
  const keys = Number(keyLines[0]![1]);
  const header = /^--\[\[[\s\S]*?\]\]/.exec(body)?.[0] ?? '';
  if (maxKey(header) !== keys) throw fail(`declares ${keys} KEYS, its header documents ${maxKey(header)}`);
  if (maxKey(code(body)) > keys) throw fail(`reads KEYS[${maxKey(code(body))}] but declares ${keys} KEYS`);

  for (const line of body.match(/^--!include.*$/gm) ?? []) {
    if (!/^--!include [\w.-]+\.lua:[^\n]*$/.test(line)) throw fail('an include line must read `--!include <file>.lua: name, name, ...`');
  }
  const listed: string[] = [];
  const includes = [...body.matchAll(/^--!include ([\w.-]+\.lua):([^\n]*)$/gm)];
  for (const [, included, list] of includes) {
    const failIn = (why: string) => fail(`${included}: ${why}`);
    if (!libs.heads.has(included!)) throw failIn(`no such library (the libraries: ${[...libs.heads.keys()].join(', ')})`);
    for (const name of list!.split(/[\s,]+/).filter(Boolean)) {
      const unit = libs.units.get(name);
      if (!unit) throw failIn(`does not define ${name}`);
      if (unit.file !== included) throw failIn(`does not define ${name} (${unit.file} does)`);
      if (listed.includes(name)) throw failIn(`${name} listed twice`);
      listed.push(name);
    }
  }
  const own = identifiers(body.replace(/^--!.*$/gm, ''));
  const unused = listed.filter((n) => !own.has(n));
  if (unused.length) throw fail(`${unused.map((n) => `${libs.units.get(n)!.file}: ${n}`).join(', ')} listed but not used`);
  const unlisted = [...own].filter((n) => libs.units.has(n) && !listed.includes(n));
  if (unlisted.length) {
    const where = unlisted.map((n) => `${n} is in ${libs.units.get(n)!.file}`).join(', ');
    throw fail(`uses ${unlisted.join(', ')} without listing them (${where})`);
  }

  let first = true;
  const lua = body
    .replace(/^--!include [\w.-]+\.lua:[^\n]*(?:\n|$)/gm, () => {
      if (!first) return '';
      first = false;
      return `${includedPart(libs, listed)}\n`;
    })
    .replace('{ 0 } --!buckets', `{ ${LATENCY_BUCKETS_MS.join(', ')} }`);
  return { keys, lua };
}

/** The text of a script with its includes expanded. */
export function scriptSource(name: ScriptName): string {
  return loadScript(name).lua;
}

/**
 * The helpers a script asks for: those listed and those they use in turn (in any library), each
 * library's part being its opening comment then its definitions so kept, in file order; the
 * libraries in `order` (each after those it uses). Redis runs a script's whole text on every call,
 * so every helper defined costs a closure or a table per call: all of the helpers cost 2.3 µs
 * per call, more than the whole of a small script's own work.
 */
function includedPart(libs: Libraries, listed: string[]): string {
  const used = new Set<string>();
  const pending = [...listed];
  while (pending.length) {
    const name = pending.pop()!;
    if (used.has(name)) continue;
    used.add(name);
    pending.push(...libs.units.get(name)!.uses);
  }
  let text = '';
  for (const file of libs.order) {
    const kept = [...libs.units.values()].filter((u) => u.file === file && used.has(u.name));
    if (kept.length) text += libs.heads.get(file)! + kept.map((u) => u.text).join('');
  }
  return text;
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
