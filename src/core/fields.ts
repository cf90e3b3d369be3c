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
 * A number of ms, floored; a ConfigError otherwise. `max`: the largest accepted (`MAX_TIMER_MS` for
 * a duration that becomes a timer: Node fires a longer one after 1 ms).
 */
export function checkDuration(value: unknown, where: string, { allowZero = true, max = Number.MAX_SAFE_INTEGER } = {}): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (!allowZero && value === 0) || value > max) {
    const upTo = max < Number.MAX_SAFE_INTEGER ? ` up to ${max}` : '';
    throw new ConfigError(
      `${where} must be a ${allowZero ? 'non-negative' : 'positive'} number of milliseconds${upTo}, got ${show(value)}`,
    );
  }
  return Math.floor(value);
}

/** A duration that becomes a timer (a wait's timeout, a grace period): 0 to `MAX_TIMER_MS` ms. */
export function checkTimerMs(value: unknown, where: string): number {
  return checkDuration(value, where, { max: MAX_TIMER_MS });
}
