import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
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
    // Node 22.6 to 22.17 strip types only with a flag (22.18+ and 24 do it by default).
    throw new ConfigError(
      `${modulePath} is TypeScript, and this Node.js (${process.version}) does not strip types: use Node.js 22.18+ or 24, or run with NODE_OPTIONS=--experimental-strip-types (Node 22.6+), or give the compiled .js module`,
    );
  }
  let mod: Record<string, unknown>;
  try {
    mod = await import(pathToFileURL(abs).href);
  } catch (err) {
    const e = err as Error;
    throw new ConfigError(`Could not load the task module ${abs}: ${e.message}`);
  }
  const candidates = [mod.default, mod.errand, mod.app].filter((v) => v instanceof Errand) as Errand[];
  if (candidates[0]) return candidates[0];
  const all = Object.values(mod).filter((v) => v instanceof Errand) as Errand[];
  if (all.length === 1) return all[0]!;
  if (all.length > 1) throw new ConfigError(`${abs} exports several Errand apps; export the one to run as default or as "errand"`);
  throw new ConfigError(`${abs} exports no Errand app: export the result of createErrand() (as default, or named "errand")`);
}
