/**
 * The relay between queues (slots) of workflows over several queues (docs/workflows.md, "Redis
 * Cluster"). A script that ends a run whose dependent is in another queue cannot touch that queue's
 * keys (CROSSSLOT on a Cluster): it records the edge in an outbox of its own queue, in the same
 * script (see wfRelayOut in lua/workflow.lua). `drainRelays` empties outboxes: it reads a queue's
 * entries, applies them with one `wfrelay` script per dependent queue, then removes them from the
 * outbox (LREM of each entry: entries are unique by their token, and another drainer may be at
 * work on the same list). A crash between applying and removing leaves entries that a later drain
 * applies again, which changes nothing (the dependent's slot keeps the entries it applied, by
 * dependency and token). Applying may write entries to the dependent queue's outbox (a cascade of
 * failures, a retry): that queue is drained next, a bounded number of rounds per call.
 *
 * Drained by the broker right after the call that wrote entries (settle, reserve, cancel, retry,
 * purge, retryFailed, createWorkflow), and by the periodic prune (each worker's sweep) for every
 * queue: entries left by a crash are applied by whichever comes first.
 */
import { splitRunId } from './codec.ts';
import type { RedisCore } from './core.ts';
import { runScript } from './scripts.ts';

/** Entries read from an outbox per round. */
const BATCH = 200;
/** Rounds per call (a cascade through more queues than this is finished by a later drain). */
const ROUNDS = 32;

/** The key of a queue's relay outbox (see lua/workflow.lua). */
export function outboxKey(c: RedisCore, queue: string): string {
  return `${c.k(queue).base}wo`;
}

/** Drains in progress in this process, per broker and queue: `again` once asked for while it ran. */
const inFlight = new WeakMap<RedisCore, Map<string, { again: boolean; done: Promise<void> }>>();

/**
 * Drains the relay outboxes of `queues`, and of the queues their entries reach. Calls for a queue
 * whose drain is in progress in this process join it (it goes round once more for them), rather
 * than reading and applying the same entries beside it.
 */
export async function drainRelays(c: RedisCore, queues: Iterable<string>, now: number): Promise<void> {
  let mine = inFlight.get(c);
  if (!mine) inFlight.set(c, (mine = new Map()));
  const running = mine;
  await Promise.all(
    [...new Set(queues)].map((queue) => {
      const cur = running.get(queue);
      if (cur) {
        cur.again = true;
        return cur.done;
      }
      const state = { again: false, done: Promise.resolve() };
      state.done = (async () => {
        try {
          do {
            state.again = false;
            await drainRounds(c, [queue], now);
          } while (state.again);
        } finally {
          running.delete(queue);
        }
      })();
      running.set(queue, state);
      return state.done;
    }),
  );
}

/** Rounds of draining: `queues`, then the queues their entries wrote to, and so on (ROUNDS at most). */
async function drainRounds(c: RedisCore, queues: Iterable<string>, now: number): Promise<void> {
  const redis = await c.ready();
  let todo = new Set(queues);
  for (let round = 0; todo.size > 0 && round < ROUNDS; round++) {
    const next = new Set<string>();
    await Promise.all(
      [...todo].map(async (queue) => {
        const outbox = outboxKey(c, queue);
        const entries = await redis.lrange(outbox, 0, BATCH - 1);
        if (entries.length === 0) return;
        const byTarget = new Map<string, string[]>();
        for (const e of entries) {
          // token TAB dependent run id TAB ...: an entry naming no run of a valid queue is dropped.
          const parts = splitRunId(e.split('\t', 3)[1] ?? '');
          if (!parts) continue;
          const list = byTarget.get(parts.queue);
          if (list) list.push(e);
          else byTarget.set(parts.queue, [e]);
        }
        await Promise.all(
          [...byTarget].map(async ([target, list]) => {
            const k = c.k(target);
            const reply = (await runScript(
              redis,
              'wfrelay',
              [`${k.base}wo`],
              [k.base, now, c.eventsChannel, k.idPrefix, ...list],
            )) as unknown[];
            if (reply?.[1] === 1) next.add(target);
          }),
        );
        const pipe = redis.pipeline();
        for (const e of entries) pipe.lrem(outbox, 1, e);
        await pipe.exec();
        if (entries.length === BATCH) next.add(queue);
      }),
    );
    todo = next;
  }
}

/**
 * `drainRelays`, for a call whose own work is done and stored: a failure is logged, not thrown (the
 * entries stay in their outbox for a later drain).
 */
export async function drainAfter(c: RedisCore, queues: Iterable<string>, now: number): Promise<void> {
  try {
    await drainRelays(c, queues, now);
  } catch (err) {
    c.logger?.warn({ err }, 'Redis broker: draining the workflow relay failed; a later reserve or prune drains it');
  }
}
