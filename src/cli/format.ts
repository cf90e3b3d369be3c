/** Text output of the admin commands: tables, times, durations, safe terminal text. */

/**
 * Text made safe for a terminal: control characters (ANSI escapes from a handler's error message,
 * say) are shown as `\xNN` escapes instead of acting. Newlines are kept only when `multiline`.
 */
export function clean(text: string, multiline = false): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: matching them is the point
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (ch) =>
    multiline && ch === '\n' ? ch : `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
}

/** `text` cut to `max` characters with an ellipsis. */
export function cut(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** Columns padded to their widest cell, two spaces apart; numbers right-aligned when `numeric` says so. */
export function table(headers: string[], rows: string[][], numeric: ReadonlySet<number> = new Set()): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => {
        const last = i === cells.length - 1;
        if (numeric.has(i)) return c.padStart(widths[i]!);
        return last ? c : c.padEnd(widths[i]!);
      })
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

/** A duration in ms, short: `850ms`, `12.3s`, `4m 05s`, `2h 10m`, `3d 4h`. */
export function duration(ms: number): string {
  const neg = ms < 0;
  ms = Math.abs(ms);
  let out: string;
  if (ms < 1000) out = `${Math.round(ms)}ms`;
  else if (ms < 60_000) out = `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)}s`;
  else if (ms < 3_600_000) out = `${Math.floor(ms / 60_000)}m ${String(Math.floor((ms % 60_000) / 1000)).padStart(2, '0')}s`;
  else if (ms < 86_400_000) out = `${Math.floor(ms / 3_600_000)}h ${String(Math.floor((ms % 3_600_000) / 60_000)).padStart(2, '0')}m`;
  else out = `${Math.floor(ms / 86_400_000)}d ${Math.floor((ms % 86_400_000) / 3_600_000)}h`;
  return neg ? `-${out}` : out;
}

/** `3m 05s ago`, or `in 2h 10m` for a time ahead. */
export function relative(at: number, now: number): string {
  const d = now - at;
  if (Math.abs(d) < 1000) return 'now';
  return d > 0 ? `${duration(d)} ago` : `in ${duration(-d)}`;
}

/** ISO 8601 (UTC) and how long ago, e.g. `2026-11-25T10:00:07.120Z (3m 05s ago)`. */
export function when(at: number | undefined | null, now: number): string {
  if (at === undefined || at === null || !Number.isFinite(at)) return '-';
  return `${new Date(at).toISOString()} (${relative(at, now)})`;
}

/** A JSON value, pretty-printed and indented by `indent` spaces. */
export function prettyJson(value: unknown, indent = 2): string {
  const text = JSON.stringify(value, null, 2) ?? 'undefined';
  const pad = ' '.repeat(indent);
  return clean(text, true)
    .split('\n')
    .map((l) => pad + l)
    .join('\n');
}

/** Lines indented by `indent` spaces. */
export function indentLines(text: string, indent: number): string {
  const pad = ' '.repeat(indent);
  return clean(text, true)
    .split('\n')
    .map((l) => pad + l)
    .join('\n');
}

/**
 * The message of an error from `util.parseArgs`, as one balanced sentence. Node's own for an
 * unknown option ends with an unclosed quote (`... as in '-- "--jsno"`).
 */
export function argsErrorMessage(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown } | undefined;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  if (e?.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    const option = /^Unknown option '(.*?)'\./.exec(message)?.[1];
    if (option !== undefined)
      return `Unknown option '${option}'. To pass an argument that starts with "-", put it after "--", as in: -- ${JSON.stringify(option)}`;
  }
  return message;
}
