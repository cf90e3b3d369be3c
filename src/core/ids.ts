import { randomBytes } from 'node:crypto';

/** Crockford base32, as in ULID: sortable as text, no ambiguous letters. */
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const ULID_LENGTH = 26;

let lastTime = -1;
let lastRandom: number[] = [];

function encodeTime(time: number): string {
  let out = '';
  for (let i = 0; i < 10; i++) {
    out = ALPHABET[time % 32] + out;
    time = Math.floor(time / 32);
  }
  return out;
}

/**
 * A ULID: 48 bits of milliseconds then 80 random bits, 26 characters. Ids made in the same
 * millisecond by one process increase monotonically, so ids sort in creation order.
 */
export function ulid(now = Date.now()): string {
  if (now <= lastTime) {
    // Same (or earlier: clock went back) millisecond: increment the random part.
    let i = lastRandom.length - 1;
    while (i >= 0 && lastRandom[i] === 31) {
      lastRandom[i] = 0;
      i--;
    }
    if (i >= 0) lastRandom[i] = (lastRandom[i] ?? 0) + 1;
  } else {
    lastTime = now;
    const bytes = randomBytes(16);
    lastRandom = Array.from({ length: 16 }, (_, k) => (bytes[k] ?? 0) & 31);
  }
  return encodeTime(lastTime) + lastRandom.map((d) => ALPHABET[d]).join('');
}

/** Queue names: letters, digits, `_` and `-`, 1 to 64 characters. */
export const QUEUE_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** A run id is `<queue>.<ulid>`, so that any broker can find a run's queue (and its keys) from its id alone. */
export function newRunId(queue: string, now = Date.now()): string {
  return `${queue}.${ulid(now)}`;
}

/** The queue a run id belongs to, or null when the text is not a run id. */
export function queueOfRunId(id: string): string | null {
  if (typeof id !== 'string' || id.length < ULID_LENGTH + 2) return null;
  const dot = id.length - ULID_LENGTH - 1;
  if (id[dot] !== '.') return null;
  const queue = id.slice(0, dot);
  if (!QUEUE_NAME.test(queue)) return null;
  const tail = id.slice(dot + 1);
  for (const ch of tail) if (!ALPHABET.includes(ch)) return null;
  return queue;
}

export function isRunId(id: string): boolean {
  return queueOfRunId(id) !== null;
}

/** Time (epoch ms) encoded in a run id. */
export function timeOfRunId(id: string): number {
  const tail = id.slice(id.length - ULID_LENGTH, id.length - 16);
  let t = 0;
  for (const ch of tail) t = t * 32 + ALPHABET.indexOf(ch);
  return t;
}
