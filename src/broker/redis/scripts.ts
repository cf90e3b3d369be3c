/**
 * The Lua scripts of the Redis broker: one per state transition, in `./lua/*.lua`, each starting
 * with a comment documenting its KEYS, ARGV and return value. A line `--!include common.lua` is
 * replaced by the shared helpers when the scripts are loaded.
 *
 * They are registered with ioredis `defineCommand`: the first call on a connection sends the
 * script (EVAL), later ones only its SHA1 (EVALSHA); after a `SCRIPT FLUSH` (or a failover to a
 * server that never saw it) ioredis gets NOSCRIPT and sends the script again by itself.
 */
import { readFileSync } from 'node:fs';
import type { Cluster, Redis } from 'ioredis';
import { runErrorsLua } from '../shared/run-errors.ts';
import { LATENCY_BUCKETS_MS } from '../types.ts';

/** Each script and the number of KEYS it declares (the other keys it touches share their hash tag). */
export const SCRIPT_KEYS = {
  enqueue: 1,
  reserve: 4,
  settle: 2,
  renew: 1,
  release: 1,
  progress: 1,
  cancel: 1,
  retry: 1,
  prune: 4,
  counts: 6,
  watch: 1,
  wake: 1,
  list: 6,
  purge: 2,
  retryfailed: 1,
} as const;

export type ScriptName = keyof typeof SCRIPT_KEYS;

const LUA_DIR = new URL('./lua/', import.meta.url);

function read(file: string): string {
  // `--!run-errors`: the run errors a broker stores, from their one definition (shared/run-errors.ts).
  return readFileSync(new URL(file, LUA_DIR), 'utf8').replace(/^--!run-errors$/m, () => runErrorsLua());
}

/** The text of a script with its includes expanded. */
export function scriptSource(name: ScriptName): string {
  const body = read(`${name}.lua`);
  return body
    .replace(/^--!include ([\w.-]+\.lua)\s*$/gm, (_, file: string) => usedPart(read(file), body))
    .replace('{ 0 } --!buckets', `{ ${LATENCY_BUCKETS_MS.join(', ')} }`);
}

/**
 * The part of an included file that `body` uses: the file's opening comment, then each top-level
 * definition (`local name = ...` or `local function name(...)`, up to the next one) that the body
 * names, or that a definition it uses names, in file order. Redis runs a script's whole text on
 * every call, so every helper defined costs a closure or a table per call: all of common.lua cost
 * 2.3 µs per call, more than the whole of a small script's own work.
 */
function usedPart(file: string, body: string): string {
  const lines = file.split('\n');
  const units: { name: string; text: string }[] = [];
  let head = '';
  for (const line of lines) {
    // Each definition names one thing, so that a script naming it gets all of it.
    if (/^local [A-Za-z_]\w*\s*,/.test(line)) throw new Error(`An included Lua file defines two names on one line: ${line}`);
    const m = /^local (?:function )?([A-Za-z_]\w*)/.exec(line);
    if (m) units.push({ name: m[1]!, text: '' });
    const last = units[units.length - 1];
    if (last) last.text += `${line}\n`;
    else head += `${line}\n`;
  }
  const code = (text: string) => text.replace(/--\[\[[\s\S]*?\]\]/g, '').replace(/--.*$/gm, '');
  const names = (text: string) => new Set(code(text).match(/[A-Za-z_]\w*/g) ?? []);
  const used = new Set<string>();
  const pending = [...names(body)];
  while (pending.length) {
    const name = pending.pop()!;
    const unit = units.find((u) => u.name === name);
    if (!unit || used.has(name)) continue;
    used.add(name);
    for (const n of names(unit.text)) if (n !== name) pending.push(n);
  }
  const kept = units.filter((u) => used.has(u.name)).map((u) => u.text);
  return head + kept.join('');
}

let sources: Map<ScriptName, string> | undefined;

/** Registers every script on a client (as `errand_<name>`). */
export function defineScripts(client: Redis | Cluster): void {
  sources ??= new Map((Object.keys(SCRIPT_KEYS) as ScriptName[]).map((name) => [name, scriptSource(name)]));
  for (const [name, lua] of sources) {
    client.defineCommand(`errand_${name}`, { numberOfKeys: SCRIPT_KEYS[name], lua });
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
