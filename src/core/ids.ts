import { randomBytes } from 'node:crypto';
import { ConfigError } from './errors.ts';
import { show } from './show.ts';

/** Crockford base32, as in ULID: sortable as text, no ambiguous letters. */
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const ULID_LENGTH = 26;

/** Value of each Crockford character by char code, -1 for any other character. */
const VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) VALUE[ALPHABET.charCodeAt(i)] = i;

let lastTime = -1;
/** The 16 random digits (0-31) of the last id, incremented for ids of the same millisecond. */
const lastRandom = new Uint8Array(16);
/** Random bytes drawn 4 KiB at a time (one call to the CSPRNG per 256 milliseconds with ids). */
let pool = randomBytes(4096);
let poolAt = 0;

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
    let i = 15;
    while (i >= 0 && lastRandom[i] === 31) {
      lastRandom[i] = 0;
      i--;
    }
    if (i >= 0) lastRandom[i]!++;
  } else {
    lastTime = now;
    if (poolAt + 16 > pool.length) {
      pool = randomBytes(4096);
      poolAt = 0;
    }
    for (let k = 0; k < 16; k++) lastRandom[k] = pool[poolAt + k]! & 31;
    poolAt += 16;
  }
  let out = encodeTime(lastTime);
  for (let k = 0; k < 16; k++) out += ALPHABET[lastRandom[k]!];
  return out;
}

/** Queue names: letters, digits, `_` and `-`, 1 to 64 characters. */
export const QUEUE_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** `queue` when it is a queue name; else a ConfigError naming `where` (a task, a worker, a broker method). */
export function checkQueueName(queue: unknown, where: string): string {
  if (typeof queue !== 'string' || !QUEUE_NAME.test(queue)) {
    throw new ConfigError(`${where}: queue name ${show(queue)} is invalid: use 1 to 64 letters, digits, "_" or "-"`);
  }
  return queue;
}

/** A run id is `<queue>.<ulid>`, so that any broker can find a run's queue (and its keys) from its id alone. */
export function newRunId(queue: string, now = Date.now()): string {
  return `${queue}.${ulid(now)}`;
}

/** The queue a run id belongs to, or null when the text is not a run id. */
export function queueOfRunId(id: string): string | null {
  if (typeof id !== 'string' || id.length < ULID_LENGTH + 2) return null;
  const dot = id.length - ULID_LENGTH - 1;
  if (id[dot] !== '.') return null;
  for (let i = dot + 1; i < id.length; i++) {
    const c = id.charCodeAt(i);
    if (c >= 128 || VALUE[c] === -1) return null;
  }
  const queue = id.slice(0, dot);
  return QUEUE_NAME.test(queue) ? queue : null;
}

export function isRunId(id: string): boolean {
  return queueOfRunId(id) !== null;
}

/** Time (epoch ms) encoded in a run id. */
export function timeOfRunId(id: string): number {
  let t = 0;
  for (let i = id.length - ULID_LENGTH; i < id.length - 16; i++) {
    const c = id.charCodeAt(i);
    t = t * 32 + (c < 128 ? VALUE[c]! : -1);
  }
  return t;
}
