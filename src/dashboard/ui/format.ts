// How numbers, times and durations read on the dashboard.

const nf = new Intl.NumberFormat('en-US');

export function num(n: number): string {
  return nf.format(n);
}

/** A duration in ms, short: `840 ms`, `12.4 s`, `3m 05s`, `2h 07m`, `3d 4h`. */
export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(2) : s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(hr / 24)}d ${hr % 24}h`;
}

/** How long ago (or from now) `at` is, relative to `now`. */
export function ago(at: number, now = Date.now()): string {
  const d = now - at;
  if (Math.abs(d) < 1000) return 'just now';
  return d > 0 ? `${duration(d)} ago` : `in ${duration(-d)}`;
}

const sameDay = (a: Date, b: Date) => a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();

/** A time of day today, else a short date and time; local time. */
export function time(at: number | undefined, now = Date.now()): string {
  if (at === undefined) return '–';
  const d = new Date(at);
  const t = d.toLocaleTimeString('en-GB', { hour12: false });
  if (sameDay(d, new Date(now))) return t;
  return `${d.toLocaleDateString('en-CA')} ${t}`;
}

/** Full timestamp for tooltips: ISO 8601 in UTC and the local time. */
export function fullTime(at: number | undefined): string {
  if (at === undefined) return '';
  const d = new Date(at);
  return `${d.toISOString()} (local ${d.toLocaleString()})`;
}

/** A count with its noun: `1 schedule`, `2 schedules`, `1,000 runs` (`many` when not noun + s). */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${num(n)} ${n === 1 ? one : many}`;
}

export function percent(x: number | null | undefined): string {
  if (x === null || x === undefined) return '–';
  if (x === 0) return '0%';
  if (x < 0.001) return '<0.1%';
  return `${(x * 100).toFixed(x < 0.1 ? 1 : 0)}%`;
}

export function rate(perMin: number): string {
  if (perMin === 0) return '0';
  if (perMin < 10) return perMin.toFixed(1);
  return num(Math.round(perMin));
}

/** JSON for display: pretty, and cut when enormous so the page stays responsive. */
export function json(value: unknown, max = 200_000): string {
  let text: string;
  try {
    text = JSON.stringify(value, null, 2) ?? 'undefined';
  } catch {
    text = String(value);
  }
  return text.length > max ? `${text.slice(0, max)}\n… (${num(text.length - max)} more characters)` : text;
}
