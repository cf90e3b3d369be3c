/** The check of an options object's shape that every public surface shares (ConfigError naming the field). */
import { ConfigError } from './errors.ts';
import { MAX_TIMER_MS, show, unknownKey } from './show.ts';

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

/**
 * A duration that becomes a timer (a wait's timeout, a grace period): a number of ms from 0 to
 * `MAX_TIMER_MS`, since Node fires a longer timer after 1 ms. A ConfigError otherwise.
 */
export function checkTimerMs(value: unknown, where: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > MAX_TIMER_MS) {
    throw new ConfigError(`${where} must be a non-negative number of milliseconds up to ${MAX_TIMER_MS}, got ${show(value)}`);
  }
  return value;
}
