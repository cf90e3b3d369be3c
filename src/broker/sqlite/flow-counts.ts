/**
 * The SQLite broker's flow-control counts (docs/flow-control.md): where a run stands for flow
 * control (`FlowPlace`, read from a row by `flowOf`, or made from a new run's spec by `flowPlace`),
 * and the moves of a run into or out of queued and active that keep the `flow_keys` and
 * `flow_groups` counts (`flowMove`, gathered over a batch by `FlowGroups`). Apart from flow.ts
 * (reserve's part) so that every transition can move counts, the workflows' fan-in included
 * (workflows.ts, which flow.ts imports).
 */
import { rateText } from '../shared/flow.ts';
import type { FlowSpec } from '../types.ts';
import type { SqliteCore } from './core.ts';
import { num, type Row } from './statements.ts';

/** Where a run stands for flow control: its queue, group, key and the limits it carries. */
export interface FlowPlace {
  queue: string;
  grp: string;
  key: string;
  kc: number;
  gc: number;
  /** Rates as stored (`rateText`): '' for none. */
  kr: string;
  gr: string;
  /** The key's weight: runs in a row per turn (1: plain round robin). */
  kw: number;
}

/** The flow place of a row read with `flow_group, flow_key, flow_kc, flow_gc` (and `queue`, unless given); undefined without a flow spec. */
export function flowOf(row: Row, queue?: string): FlowPlace | undefined {
  if (typeof row.flow_key !== 'string' || typeof row.flow_group !== 'string') return undefined;
  return {
    queue: queue ?? String(row.queue),
    grp: row.flow_group,
    key: row.flow_key,
    kc: num(row.flow_kc) ?? 0,
    gc: num(row.flow_gc) ?? 0,
    kr: typeof row.flow_krate === 'string' ? row.flow_krate : '',
    gr: typeof row.flow_grate === 'string' ? row.flow_grate : '',
    kw: num(row.flow_kw) ?? 1,
  };
}

/**
 * Within a transaction: a run of `f` moved, `dq` into (+1) or out of (-1) queued, `da` into or out
 * of active. A run becoming queued brings its limits (the latest ones win) and makes its key (and
 * group) known, at the back of the rings.
 */
export function flowMove(c: SqliteCore, f: FlowPlace, dq: number, da: number, groupToo = true): void {
  if (dq > 0 && da === 0) {
    // The common case (enqueue, promotion, replay): one statement for the key.
    if (groupToo) c.s.flowGroupPut.run(f.queue, f.grp, f.gc, f.gr || null, c.takeSeq(0));
    c.s.flowKeyQueued.run({ queue: f.queue, grp: f.grp, key: f.key, conc: f.kc, rate: f.kr || null, weight: f.kw, turn: c.takeSeq(0), dq });
    return;
  }
  if (dq > 0) {
    const turn = c.takeSeq(0);
    c.s.flowGroupPut.run(f.queue, f.grp, f.gc, f.gr || null, turn);
    c.s.flowKeyPut.run(f.queue, f.grp, f.key, f.kc, f.kr || null, turn, f.kw);
  }
  if (da !== 0 && groupToo) c.s.flowGroupCount.run(da, f.queue, f.grp);
  // A key out of its ring that this move may make ready (a run queued, a slot freed) joins it at the
  // back: a turn after every turn given so far.
  const turn = dq > 0 || da < 0 ? c.takeSeq(1) + 1 : c.takeSeq(0);
  c.s.flowKeyCount.run({ queue: f.queue, grp: f.grp, key: f.key, dq, da, conc: dq > 0 ? f.kc : null, rate: f.kr || null, turn });
}

/**
 * Changes gathered over a batch (enqueue, settle), each written once at `flush`: each group's limits
 * (its latest run's) and active count; the runs queued per key (enqueue: one count per key, its
 * latest run's limits, all keys in one statement, `flowKeysQueued`); and the slots freed of keys
 * whose queued runs stay as they were (a settlement that queues nothing again: one active count per
 * key, all keys in one statement, `flowKeysActive`). Counts add up, so gathering them changes no
 * outcome; and nothing between reads the keys. A run queued again by a settlement moves its key at
 * once (`flowMove`).
 */
export class FlowGroups {
  readonly #puts = new Map<string, FlowPlace>();
  readonly #active = new Map<string, { f: FlowPlace; da: number }>();
  readonly #queued = new Map<string, { f: FlowPlace; dq: number }>();
  readonly #freed = new Map<string, { f: FlowPlace; da: number }>();

  move(c: SqliteCore, f: FlowPlace, dq: number, da: number): void {
    const id = `${f.queue}\u0000${f.grp}`;
    // The group's row first (a key's readiness counts in it); its limits again at flush (the latest).
    if (dq > 0 && !this.#puts.has(id)) c.s.flowGroupPut.run(f.queue, f.grp, f.gc, f.gr || null, c.takeSeq(0));
    const kid = `${id}\u0000${f.key}`;
    if (dq > 0 && da === 0) {
      const e = this.#queued.get(kid);
      if (e) {
        e.dq += dq;
        e.f = f; // the latest run's limits win
      } else this.#queued.set(kid, { f, dq });
    } else if (dq === 0 && da !== 0) {
      const e = this.#freed.get(kid);
      if (e) e.da += da;
      else this.#freed.set(kid, { f, da });
    } else flowMove(c, f, dq, da, false);
    if (dq > 0) this.#puts.set(id, f);
    if (da !== 0) {
      const e = this.#active.get(id);
      if (e) e.da += da;
      else this.#active.set(id, { f, da });
    }
  }

  flush(c: SqliteCore): void {
    for (const f of this.#puts.values()) c.s.flowGroupPut.run(f.queue, f.grp, f.gc, f.gr || null, c.takeSeq(0));
    if (this.#queued.size) {
      const keys = [...this.#queued.values()].map(({ f, dq }) => [f.queue, f.grp, f.key, f.kc, f.kr || null, f.kw, dq]);
      c.s.flowKeysQueued.run(c.takeSeq(0), JSON.stringify(keys));
    }
    if (this.#freed.size) {
      // Keys that a freed slot makes ready join their rings at the back, in the order freed (each a
      // turn of its own, taken only when a key has a concurrency limit: no other leaves its ring at one).
      const freed = [...this.#freed.values()];
      const base = c.takeSeq(freed.some(({ f }) => f.kc > 0) ? freed.length : 0);
      c.s.flowKeysActive.run(JSON.stringify(freed.map(({ f, da }) => [f.queue, f.grp, f.key, da])), base);
    }
    for (const { f, da } of this.#active.values()) if (da !== 0) c.s.flowGroupCount.run(da, f.queue, f.grp);
    this.#puts.clear();
    this.#active.clear();
    this.#queued.clear();
    this.#freed.clear();
  }
}

/** `flowMove` for each row of a bulk statement that returned the flow columns. */
export function flowMoveRows(c: SqliteCore, rows: readonly Row[], dq: number, da: number, queue?: string): void {
  for (const row of rows) {
    const f = flowOf(row, queue);
    if (f) flowMove(c, f, dq, da);
  }
}

/** Where a new run of `queue` with flow spec `f` stands for flow control (as enqueue places one). */
export function flowPlace(queue: string, f: FlowSpec): FlowPlace {
  return {
    queue,
    grp: f.group,
    key: f.key,
    kc: f.concurrency ?? 0,
    gc: f.groupConcurrency ?? 0,
    kr: rateText(f.rate),
    gr: rateText(f.groupRate),
    kw: f.weight ?? 1,
  };
}
