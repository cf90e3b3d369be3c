/**
 * Loads `node:sqlite` without its ExperimentalWarning.
 *
 * Node 24 releases before the module was marked a release candidate print "ExperimentalWarning: SQLite
 * is an experimental feature" once, when the module is first loaded. Errand uses it on purpose, so the
 * warning only worries newcomers. While loading (synchronously), `process.emitWarning` drops that one
 * warning and passes every other warning on; it is restored before this function returns. Nothing
 * else is hidden, before or after.
 */
import type * as Sqlite from 'node:sqlite';
import { ConfigError } from '../../core/errors.ts';

export function loadSqlite(): typeof Sqlite {
  const original = process.emitWarning;
  const filtered = (warning: string | Error, ...rest: unknown[]): void => {
    const opt = rest[0];
    const type = warning instanceof Error ? warning.name : typeof opt === 'string' ? opt : (opt as { type?: string } | undefined)?.type;
    const message = warning instanceof Error ? warning.message : String(warning);
    if (type === 'ExperimentalWarning' && /sqlite/i.test(message)) return;
    (original as (...args: unknown[]) => void).call(process, warning, ...rest);
  };
  process.emitWarning = filtered as typeof process.emitWarning;
  try {
    return process.getBuiltinModule('node:sqlite');
  } finally {
    process.emitWarning = original;
  }
}

/** What `requireNumberedParameters` found, once per module (process). */
const bindsNumbered = new WeakMap<object, boolean>();

/**
 * Throws a ConfigError saying what to do when this Node.js's node:sqlite cannot bind numbered
 * parameters (`?1`), as in Node.js 22.13 to 22.19 and 24.0 to 24.6 ("column index out of range"
 * on the first statement): every statement of the SQLite broker uses them. Checked once per
 * process, on a database in memory, before the broker opens its file.
 */
export function requireNumberedParameters(mod: Pick<typeof Sqlite, 'DatabaseSync'>, version = process.version): void {
  let ok = bindsNumbered.get(mod);
  if (ok === undefined) {
    const db = new mod.DatabaseSync(':memory:');
    try {
      ok = (db.prepare('SELECT ?1 AS v').get(7) as { v?: unknown } | undefined)?.v === 7;
    } catch {
      ok = false;
    } finally {
      db.close();
    }
    bindsNumbered.set(mod, ok);
  }
  if (!ok) {
    throw new ConfigError(
      `The SQLite broker needs Node.js 22.20 or newer (22 LTS), or 24.7 or newer: the node:sqlite of Node.js ${version} cannot bind ` +
        'numbered parameters (?1). Upgrade Node.js, or use the Redis broker (REDIS_URL).',
    );
  }
}
