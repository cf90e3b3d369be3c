/**
 * Chords, as Celery's Redis result backend runs them (`RedisBackend.on_chord_part_return`), so that
 * a chord's header tasks may run on Errand workers, Python workers or both:
 *
 * - Celery's producer sets `celery-taskset-meta-<group>.s` to the header's size and sends each
 *   header task with the group id in its `group` header and the body in the embed's `chord`;
 * - each header task that ends (SUCCESS, FAILURE, REVOKED) adds `[1, id, state, result]` to the
 *   sorted set `celery-taskset-meta-<group>.j`, scored by its `group_index`; the one that makes the
 *   count reach the size (plus `.t`, Celery's adjustment) sends the body with the list of results
 *   prepended to its args, or, if a header task failed, stores the body FAILURE with `ChordError`
 *   and sends the body's errbacks.
 *
 * An Errand worker adds its part in the MULTI that stores the task's outcome and acknowledges it
 * (so a part is never lost nor added twice by a redelivery), and the completing script moves the
 * results to a pending entry of its own (`_errand.celery.chords`, field the group id) before the body
 * is sent: a worker killed in between leaves the entry, which any Errand worker sends once it is
 * older than the visibility timeout.
 */
import type { ChainableCommander, Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { ResultBackend } from './backend.ts';
import type { CelerySignature, CeleryTaskMessage } from './protocol.ts';

export const PENDING_CHORDS = '_errand.celery.chords';
const groupKey = (gid: string, suffix: string) => `celery-taskset-meta-${gid}${suffix}`;
const pendingResults = (gid: string) => `_errand.celery.chord.${gid}`;

// KEYS: .j, .t, .s, the pending hash, the pending results. ARGV: the part, its score, expiry (s), the
// group id, the pending entry. Returns 1 when this part completes the chord (the results then moved).
const PART = `
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local ready = redis.call('ZCOUNT', KEYS[1], '-inf', '+inf')
local diff = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local size = tonumber(redis.call('GET', KEYS[3]) or '')
local ex = tonumber(ARGV[3])
if ex > 0 then
  for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ex) end
end
if not size or ready ~= size + diff then return 0 end
redis.call('RENAME', KEYS[1], KEYS[5])
redis.call('PERSIST', KEYS[5])
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
return 1
`;

// KEYS[1] the pending hash. ARGV: group id, the entry as read, the entry claimed anew.
const RECLAIM = `
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
`;

interface PendingChord {
  body: CelerySignature;
  rootId: string;
  parentId: string;
  claimedAt: number;
}

/** The chord a header task belongs to, or undefined. */
export function chordOf(msg: CeleryTaskMessage): { gid: string; body: CelerySignature; score: string } | undefined {
  const gid = msg.envelope.headers.group;
  const index = msg.envelope.headers.group_index;
  if (!msg.embed.chord || typeof gid !== 'string' || gid.length === 0) return undefined;
  return { gid, body: msg.embed.chord, score: typeof index === 'number' ? String(index) : '+inf' };
}

/** Adds the part of `msg` (state, stored result) to `pipe`; its result in `exec()` is 1 if the chord is complete. */
export function addChordPart(
  pipe: ChainableCommander,
  msg: CeleryTaskMessage,
  state: 'SUCCESS' | 'FAILURE' | 'REVOKED',
  result: unknown,
  expiresSeconds: number,
): string | undefined {
  const chord = chordOf(msg);
  if (!chord) return undefined;
  const pending: PendingChord = { body: chord.body, rootId: msg.rootId, parentId: msg.id, claimedAt: Date.now() };
  pipe.eval(
    PART,
    5,
    groupKey(chord.gid, '.j'),
    groupKey(chord.gid, '.t'),
    groupKey(chord.gid, '.s'),
    PENDING_CHORDS,
    pendingResults(chord.gid),
    JSON.stringify([1, msg.id, state, result]),
    chord.score,
    String(expiresSeconds),
    chord.gid,
    JSON.stringify(pending),
  );
  return chord.gid;
}

export interface ChordSender {
  redis: Redis;
  backend: ResultBackend;
  /** Adds to `pipe` the sending of `sig` with `prepend` before its args, as a child of `parent`. */
  send(pipe: ChainableCommander, sig: CelerySignature, prepend: unknown[], parent: { id: string; rootId: string }): void;
}

function describe(info: unknown): string {
  const i = (info ?? {}) as { exc_type?: unknown; exc_message?: unknown };
  const args = Array.isArray(i.exc_message) ? i.exc_message : [i.exc_message];
  return `${String(i.exc_type ?? 'Exception')}(${args.map((a) => JSON.stringify(a) ?? 'None').join(', ')})`;
}

/** Sends the body of the completed chord `gid` (or its ChordError) and removes the pending entry. */
export async function fireChord(s: ChordSender, gid: string): Promise<void> {
  const raw = await s.redis.hget(PENDING_CHORDS, gid);
  if (raw === null) return;
  const p = JSON.parse(raw) as PendingChord;
  const parts = (await s.redis.zrange(pendingResults(gid), 0, -1)).map((m) => JSON.parse(m) as [number, string, string, unknown]);
  const pipe = s.redis.multi();
  const parent = { id: p.parentId, rootId: p.rootId };
  const failed = parts.find(([, , state]) => state === 'FAILURE' || state === 'REVOKED');
  // Celery saves the header's GroupResult only when it nests groups, to give the body nested lists;
  // the flat list kept here would be the wrong argument.
  const nested = (await s.redis.exists(groupKey(gid, ''))) === 1;
  if (failed || nested) {
    const bodyId = p.body.options?.task_id;
    if (typeof bodyId === 'string') {
      s.backend.storeIn(
        pipe,
        bodyId,
        'FAILURE',
        failed
          ? {
              exc_type: 'ChordError',
              exc_module: 'celery.exceptions',
              exc_message: [`Dependency ${failed[1]} raised ${describe(failed[3])}`],
            }
          : {
              exc_type: 'NotImplementedError',
              exc_module: 'builtins',
              exc_message: [
                `chord ${gid}: its header nests groups, whose results an Errand worker cannot shape for the body; run its last header tasks on Python workers`,
              ],
            },
      );
    }
    const errbacks = p.body.options?.link_error;
    for (const eb of Array.isArray(errbacks) ? errbacks : errbacks ? [errbacks] : [])
      s.send(pipe, eb as CelerySignature, typeof bodyId === 'string' ? [bodyId] : [], parent);
  } else {
    s.send(pipe, p.body, [parts.map(([, , , result]) => result)], parent);
  }
  pipe.hdel(PENDING_CHORDS, gid).del(pendingResults(gid));
  const results = await pipe.exec();
  const err = results?.find(([e]) => e)?.[0];
  if (!results || err) throw err ?? new Error('the chord transaction was aborted');
}

/** Sends the chords whose completing worker did not send them within `visibilityMs`. */
export async function recoverChords(s: ChordSender, visibilityMs: number, logger?: Logger): Promise<void> {
  const all = await s.redis.hgetall(PENDING_CHORDS);
  for (const [gid, raw] of Object.entries(all)) {
    let p: PendingChord;
    try {
      p = JSON.parse(raw) as PendingChord;
    } catch {
      continue;
    }
    if (!(p.claimedAt <= Date.now() - visibilityMs)) continue;
    const claimed = await s.redis.eval(RECLAIM, 1, PENDING_CHORDS, gid, raw, JSON.stringify({ ...p, claimedAt: Date.now() }));
    if (claimed !== 1) continue;
    logger?.warn({ group: gid }, 'celery worker: sending the body of a chord its completing worker left');
    await fireChord(s, gid);
  }
}
