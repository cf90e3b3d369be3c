// A slow, independent oracle for the schedule property tests: zone arithmetic by brute force from
// Intl's `formatToParts` (src/schedule uses `format` and cached transitions), no croner. It answers
// "which instants show this wall-clock reading" and "where does a gap end" directly.

const MIN = 60_000;
const HOUR = 3_600_000;
const parts = new Map<string, Intl.DateTimeFormat>();
const transitionCache = new Map<string, { at: number; shift: number }[]>();

function fmt(zone: string): Intl.DateTimeFormat {
  let f = parts.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-GB', {
      timeZone: zone,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    });
    parts.set(zone, f);
  }
  return f;
}

/** The wall-clock reading at instant t, as epoch ms of the same reading on a UTC clock. */
export function wall(zone: string, t: number): number {
  const s = Math.floor(t / 1000) * 1000;
  const p: Record<string, number> = {};
  for (const x of fmt(zone).formatToParts(s)) if (x.type !== 'literal') p[x.type] = Number(x.value);
  return Date.UTC(p.year!, p.month! - 1, p.day!, p.hour!, p.minute!, p.second!) + (t - s);
}

/** Every instant whose wall reading is `reading`, in order (0, 1 or 2 of them). */
export function instantsOf(zone: string, reading: number): number[] {
  const offsets = new Set<number>();
  for (let d = -27 * HOUR; d <= 27 * HOUR; d += 3 * HOUR) offsets.add(wall(zone, reading + d) - (reading + d));
  const out = [...offsets].map((o) => reading - o).filter((t) => wall(zone, t) === reading);
  return [...new Set(out)].sort((a, b) => a - b);
}

/** For a reading that no instant shows (in a gap): the first instant whose reading is later. */
export function gapEnd(zone: string, reading: number): number {
  let lo = reading - 30 * HOUR;
  let hi = lo;
  while (wall(zone, hi) <= reading) {
    lo = hi;
    hi += 15 * MIN;
  }
  while (hi - lo > 1000) {
    const mid = lo + Math.floor((hi - lo) / 2000) * 1000;
    if (wall(zone, mid) <= reading) lo = mid;
    else hi = mid;
  }
  return hi;
}

/** Offset changes of a zone between two instants (sampled every 6 h, bisected to the second). */
export function transitions(zone: string, from: number, to: number): { at: number; shift: number }[] {
  const key = `${zone} ${from} ${to}`;
  const cached = transitionCache.get(key);
  if (cached) return cached;
  const off = (t: number) => wall(zone, t) - t;
  const out: { at: number; shift: number }[] = [];
  let prev = from;
  for (let t = from + 6 * HOUR; t <= to; t += 6 * HOUR) {
    if (off(t) !== off(prev)) {
      let lo = prev;
      let hi = t;
      while (hi - lo > 1000) {
        const mid = lo + Math.floor((hi - lo) / 2000) * 1000;
        if (off(mid) === off(lo)) lo = mid;
        else hi = mid;
      }
      out.push({ at: hi, shift: off(hi) - off(lo) });
    }
    prev = t;
  }
  transitionCache.set(key, out);
  return out;
}

/** The local calendar date (YYYY-MM-DD) at instant t. */
export function localDate(zone: string, t: number): string {
  return new Date(wall(zone, t)).toISOString().slice(0, 10);
}

/**
 * The expected fires of a daily fixed-time schedule (`M H * * *`) for local dates first..last
 * (UTC-clock ms of each date's midnight): each date's reading at its first occurrence, or the
 * gap's end if the reading never happens; duplicates (a gap end that is also a fire) once.
 */
export function dailyExpected(zone: string, hour: number, minute: number, firstDay: number, lastDay: number): number[] {
  const out: number[] = [];
  for (let d = firstDay; d <= lastDay; d += 24 * HOUR) {
    const reading = d + hour * HOUR + minute * MIN;
    const inst = instantsOf(zone, reading);
    const t = inst.length > 0 ? inst[0]! : gapEnd(zone, reading);
    if (out[out.length - 1] !== t) out.push(t);
  }
  return out;
}
