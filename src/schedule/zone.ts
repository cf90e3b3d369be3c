// Time-zone arithmetic for schedules, from the platform's own zone data (Intl, i.e. ICU's copy of
// the IANA database) and nothing else: no `Date` method that reads the host's `TZ` is used here,
// so every result is the same on every machine whatever its local zone.
//
// A zone's timeline is cut into segments of constant UTC offset by its transitions. Within a
// segment, local wall-clock time = instant + offset, so a wall time maps to an instant by a
// subtraction; at a transition the wall clock jumps forward (a gap: some wall times never happen)
// or back (an overlap: some wall times happen twice). The transitions of one zone in one UTC year
// are found once (sampling the offset every 6 hours, then bisecting each change to the second) and
// kept. Limitation, stated honestly: two transitions less than 6 hours apart that cancel each other
// would not be seen; the IANA data for the years schedules care about has none.

/** The first and last instants schedules work with: fire times outside are never produced. */
export const MIN_TIME = Date.UTC(1900, 0, 1);
export const MAX_TIME = Date.UTC(9000, 0, 1);

const SAMPLE_MS = 6 * 3600_000;
const READING = /^(\d+)\/(\d+)\/(\d+), (\d+):(\d+):(\d+)$/;

export interface Transition {
  /** The first instant (epoch ms) of the new offset. */
  at: number;
  /** The offsets (ms, local minus UTC) in force before and from `at`. */
  before: number;
  after: number;
}

interface YearInfo {
  /** The offset in force at the first instant of the UTC year. */
  first: number;
  transitions: Transition[];
}

const formatters = new Map<string, Intl.DateTimeFormat>();
const years = new Map<string, YearInfo>();

function formatter(zone: string): Intl.DateTimeFormat {
  let f = formatters.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formatters.set(zone, f);
  }
  return f;
}

/**
 * The zone's canonical name if the platform knows it (`utc` gives `UTC`), else undefined. Only
 * named zones are accepted: a fixed offset such as `+05:30` is refused (use `Etc/GMT-5` style names
 * or a real zone).
 */
export function canonicalZone(zone: string): string | undefined {
  if (!/^[A-Za-z]/.test(zone)) return undefined;
  try {
    return new Intl.DateTimeFormat('en-US', { timeZone: zone }).resolvedOptions().timeZone;
  } catch {
    return undefined;
  }
}

/** The offset (ms) in force at instant `t`, asked of Intl directly. */
function rawOffset(zone: string, t: number): number {
  const s = Math.floor(t / 1000) * 1000;
  // `format` is several times faster than `formatToParts`; en-US with h23 reads "M/D/YYYY, HH:MM:SS".
  const m = READING.exec(formatter(zone).format(s));
  if (!m) throw new Error(`Unexpected date format from Intl for zone ${zone}`);
  const local = Date.UTC(Number(m[3]), Number(m[1]) - 1, Number(m[2]), Number(m[4]), Number(m[5]), Number(m[6]));
  // Date.UTC maps years 0-99 to 1900-1999; never reached within MIN_TIME..MAX_TIME.
  return local - s;
}

function yearInfo(zone: string, year: number): YearInfo {
  const key = `${zone}\u0000${year}`;
  const cached = years.get(key);
  if (cached) return cached;
  const start = Date.UTC(year, 0, 1);
  const end = Date.UTC(year + 1, 0, 1);
  const first = rawOffset(zone, start);
  const transitions: Transition[] = [];
  let prevT = start;
  let prevO = first;
  for (let t = Math.min(start + SAMPLE_MS, end); ; t = Math.min(t + SAMPLE_MS, end)) {
    const o = rawOffset(zone, t);
    // One or more transitions in (prevT, t]: find each in turn by bisection to the second.
    let lo = prevT;
    let loO = prevO;
    while (loO !== o) {
      let hi = t;
      let hiO = o;
      while (hi - lo > 1000) {
        const mid = lo + Math.floor((hi - lo) / 2000) * 1000;
        const m = rawOffset(zone, mid);
        if (m === loO) lo = mid;
        else {
          hi = mid;
          hiO = m;
        }
      }
      transitions.push({ at: hi, before: loO, after: hiO });
      lo = hi;
      loO = hiO;
    }
    prevT = t;
    prevO = o;
    if (t >= end) break;
  }
  const info = { first, transitions };
  years.set(key, info);
  return info;
}

function utcYear(t: number): number {
  return new Date(t).getUTCFullYear();
}

/** The offset (ms, local minus UTC) in force at instant `t`. */
export function offsetAt(zone: string, t: number): number {
  const info = yearInfo(zone, utcYear(t));
  let o = info.first;
  for (const tr of info.transitions) {
    if (tr.at > t) break;
    o = tr.after;
  }
  return o;
}

/** The first transition strictly after `t` and at or before `until`, or undefined. */
export function transitionAfter(zone: string, t: number, until: number): Transition | undefined {
  const last = utcYear(Math.min(until, MAX_TIME));
  for (let y = utcYear(t); y <= last; y++) {
    for (const tr of yearInfo(zone, y).transitions) {
      if (tr.at > t && tr.at <= until) return tr;
      if (tr.at > until) return undefined;
    }
  }
  return undefined;
}

/** The last transition at or before `t`, looking back no further than `since`, or undefined. */
export function transitionAtOrBefore(zone: string, t: number, since: number): Transition | undefined {
  for (let y = utcYear(t); y >= utcYear(since); y--) {
    const trs = yearInfo(zone, y).transitions;
    for (let i = trs.length - 1; i >= 0; i--) {
      const tr = trs[i]!;
      if (tr.at <= t) return tr.at >= since ? tr : undefined;
    }
  }
  return undefined;
}

/** Local wall-clock time at `t`, as epoch ms of the same reading on a UTC clock. */
export function wallTime(zone: string, t: number): number {
  return t + offsetAt(zone, t);
}
