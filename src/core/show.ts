/**
 * What every options check shares: a value shown as the user gave it (strings quoted), the refusal
 * of unknown option names (with a "did you mean"), and Node's longest timer.
 */

/** Node's longest timer, in ms: `setTimeout` with a longer delay fires after 1 ms (TimeoutOverflowWarning). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * A value for an error message, as the user gave it: strings quoted as JSON (`"5"`, cut at 60
 * characters), numbers, booleans, null and undefined as they print, a Date as its ISO time,
 * arrays and plain objects as JSON (cut), an instance of a class by its class (`a Map`), anything
 * else by its kind (`a function`).
 */
export function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 60)}...` : v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null || v === undefined) return String(v);
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'function') return 'a function';
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? 'Invalid Date' : `Date(${v.toISOString()})`;
  if (typeof v === 'object') {
    const proto = Object.getPrototypeOf(v);
    if (!Array.isArray(v) && proto !== Object.prototype && proto !== null) {
      const name = (v as { constructor?: { name?: string } }).constructor?.name || 'object';
      return `${/^[AEIOU]/i.test(name) ? 'an' : 'a'} ${name}`;
    }
    try {
      const json = JSON.stringify(v);
      if (json !== undefined) return json.length > 80 ? `${json.slice(0, 80)}...` : json;
    } catch {
      // A cycle or a BigInt inside: by its kind below.
    }
    return Array.isArray(v) ? 'an array' : 'an object';
  }
  return typeof v;
}

/**
 * The first of `names` that an unknown option name `key` probably meant: the same letters in
 * another case, a name it starts with or that starts or ends with it (`timeoutMs`, `brokerUrl`,
 * `graceMs`), or one
 * within two edits (a missing, extra, wrong or swapped letter).
 */
export function closestName(key: string, names: Iterable<string>): string | undefined {
  const lower = key.toLowerCase();
  let best: string | undefined;
  let bestDistance = 3;
  for (const name of names) {
    const n = name.toLowerCase();
    if (n === lower) return name;
    const prefix = Math.min(n.length, lower.length) >= 3 && (lower.startsWith(n) || n.startsWith(lower) || n.endsWith(lower));
    const d = prefix ? 2 : editDistance(lower, n);
    if (d < bestDistance) {
      best = name;
      bestDistance = d;
    }
  }
  return best;
}

/**
 * The message for the first own key of `value` not in `known`, else undefined:
 * `"timeOut" is not a task option (did you mean "timeout"? known: ...)`. `what` names the kind of
 * option ("a task option", "a retries field").
 */
export function unknownKey(value: object, known: readonly string[], what: string): string | undefined {
  for (const key of Object.keys(value)) {
    if (known.includes(key)) continue;
    const guess = closestName(key, known);
    return `${JSON.stringify(key)} is not ${what} (${guess ? `did you mean ${JSON.stringify(guess)}? ` : ''}known: ${known.join(', ')})`;
  }
  return undefined;
}

/** Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours. */
function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2) return 3;
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 0; j <= b.length; j++) (d[0] as number[])[j] = j;
  for (let i = 1; i <= a.length; i++) {
    const row = d[i] as number[];
    const up = d[i - 1] as number[];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min((up[j] as number) + 1, (row[j - 1] as number) + 1, (up[j - 1] as number) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        row[j] = Math.min(row[j] as number, ((d[i - 2] as number[])[j - 2] as number) + 1);
      }
    }
  }
  return (d[a.length] as number[])[b.length] as number;
}
