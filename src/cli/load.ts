import { existsSync } from 'node:fs';
import { resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ConfigError } from '../core/errors.ts';
import { Errand } from '../errand.ts';

/**
 * Imports a module of tasks and returns the Errand app it defines: its default export, an export
 * named `errand` or `app`, or the only Errand among its exports.
 */
export async function loadApp(modulePath: string): Promise<Errand> {
  if (!modulePath) throw new ConfigError('Give the module that defines your tasks, e.g. errand worker ./tasks.ts');
  const abs = resolve(modulePath);
  if (!existsSync(abs)) throw new ConfigError(`Task module not found: ${modulePath} (looked at ${abs})`);
  if (/\.[cm]?ts$/.test(abs) && !(process.features as { typescript?: unknown }).typescript) {
    // Every supported Node.js (bin/node-version.js) strips types by default: this one was told not to.
    throw new ConfigError(
      `${modulePath} is TypeScript, and this Node.js (${process.version}) runs with type stripping turned off: drop --no-experimental-strip-types (from the command line or NODE_OPTIONS), or give the compiled .js module`,
    );
  }
  let mod: Record<string, unknown>;
  try {
    mod = await import(pathToFileURL(abs).href);
  } catch (err) {
    const what = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    const at = errorLocation(err);
    throw new ConfigError(`Could not load the task module ${abs}: ${what}${at ? ` (at ${at})` : ''}`);
  }
  const candidates = [mod.default, mod.errand, mod.app].filter((v) => v instanceof Errand) as Errand[];
  if (candidates[0]) return candidates[0];
  const all = Object.values(mod).filter((v) => v instanceof Errand) as Errand[];
  if (all.length === 1) return all[0]!;
  if (all.length > 1) throw new ConfigError(`${abs} exports several Errand apps; export the one to run as default or as "errand"`);
  throw new ConfigError(`${abs} exports no Errand app: export the result of createErrand() (as default, or named "errand")`);
}

/** Errand's own code (src/ or dist/): frames there are not where a user's error is. */
const OWN = fileURLToPath(new URL('../', import.meta.url));

/** A stack's `file:///x.ts:2` or `/x.ts:2` as a path. */
const toPath = (file: string) => (file.startsWith('file://') ? fileURLToPath(file) : file);

/**
 * Where an error thrown while importing a task module comes from, as `file:line:column`: for a
 * SyntaxError, the place Node.js names above its stack (line, and the column of its caret; Node.js
 * gives none for a syntax error in a JavaScript ES module); otherwise the first stack frame in the
 * user's code (not Node.js's, Errand's or a package's in node_modules), else the first in any file.
 */
export function errorLocation(err: unknown): string | undefined {
  const stack = err instanceof Error && typeof err.stack === 'string' ? err.stack : '';
  const lines = stack.split('\n');
  const header = /^((?:file:\/\/)?\/.*):(\d+)$/.exec(lines[0] ?? '');
  if (header?.[1] && header[2]) {
    const caret = lines.findIndex((l, i) => i > 1 && /^\s*\^+\s*$/.test(l));
    const column = caret > 0 ? `:${(lines[caret] ?? '').indexOf('^') + 1}` : '';
    return `${toPath(header[1])}:${header[2]}${column}`;
  }
  const frames: { file: string; at: string }[] = [];
  for (const line of lines) {
    const m = /^\s+at (?:.* \()?((?:file:\/\/)?\/[^()]*?):(\d+):(\d+)\)?$/.exec(line);
    if (!m?.[1]) continue;
    const file = toPath(m[1]);
    frames.push({ file, at: `${file}:${m[2]}:${m[3]}` });
  }
  const user = frames.find((f) => !f.file.startsWith(OWN) && !f.file.includes(`${sep}node_modules${sep}`));
  return (user ?? frames[0])?.at;
}
