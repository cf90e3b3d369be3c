/**
 * How the Redis broker's transitions split a batch into script calls: grouped by queue (one
 * hash tag, one slot per call), then chunked so that no call holds Redis for long.
 */
import { splitRunId } from './codec.ts';

/** Runs per script call (larger batches are split, in order). */
export const CHUNK_RUNS = 500;
/** Payload bytes per script call, roughly (a call of several MB would hold Redis for too long). */
export const CHUNK_BYTES = 4 * 1024 * 1024;
/** Splits `items` into chunks of at most CHUNK_RUNS items and about CHUNK_BYTES. */
export function chunk<T>(items: readonly T[], size: (item: T) => number): T[][] {
  const out: T[][] = [];
  let cur: T[] = [];
  let bytes = 0;
  for (const item of items) {
    const b = size(item);
    if (cur.length && (cur.length >= CHUNK_RUNS || bytes + b > CHUNK_BYTES)) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(item);
    bytes += b;
  }
  if (cur.length) out.push(cur);
  return out;
}

/** Groups items by the queue of their run id, keeping their indexes; items with an invalid id go to `invalid`. */
export function byQueue<T extends { id: string }>(
  items: readonly T[],
): { groups: Map<string, { item: T; rid: string; index: number }[]>; invalid: number[] } {
  const groups = new Map<string, { item: T; rid: string; index: number }[]>();
  const invalid: number[] = [];
  items.forEach((item, index) => {
    const parts = splitRunId(item.id);
    if (!parts) {
      invalid.push(index);
      return;
    }
    let g = groups.get(parts.queue);
    if (!g) groups.set(parts.queue, (g = []));
    g.push({ item, rid: parts.rid, index });
  });
  return { groups, invalid };
}
