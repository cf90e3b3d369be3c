/** The check of an options object's shape that every public surface shares (ConfigError naming the field). */
import { ConfigError } from './errors.ts';
import { show, unknownKey } from './show.ts';

export function isPlainObject(v: unknown): v is object {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Throws a ConfigError when `value` is not an object or has a key not in `known`: `<where>: "timeOut"
 * is not a task option (did you mean "timeout"? known: ...)`.
 */
export function checkFields(value: unknown, known: readonly string[], where: string, what: string): void {
  if (!isPlainObject(value)) throw new ConfigError(`${where} must be an object, got ${show(value)}`);
  const unknown = unknownKey(value, known, what);
  if (unknown) throw new ConfigError(`${where}: ${unknown}`);
}
