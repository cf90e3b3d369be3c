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
