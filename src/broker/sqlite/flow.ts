/**
 * Flow control in the SQLite broker (schema v8, docs/flow-control.md): the counts of queued and
 * active runs of each key and group, kept by the transitions themselves for the runs that have a
 * flow spec (a run without one costs nothing here). The tables' `ready` columns follow the counts,
 * and triggers on `flow_keys` keep each group's number of ready keys; reserve reads the rings as
 * index ranges (`flowGroupNext`, `flowKeysNext`).
 */
import { gcra, parseRate } from '../shared/flow.ts';
import type { FlowRate, Reservation } from '../types.ts';
import type { SqliteCore } from './core.ts';
import { corruptError, num, type Row, toReservation } from './statements.ts';

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
    c.s.flowKeyQueued.run({ queue: f.queue, grp: f.grp, key: f.key, conc: f.kc, rate: f.kr || null, turn: c.takeSeq(0), dq });
    return;
  }
  if (dq > 0) {
    const turn = c.takeSeq(0);
    c.s.flowGroupPut.run(f.queue, f.grp, f.gc, f.gr || null, turn);
    c.s.flowKeyPut.run(f.queue, f.grp, f.key, f.kc, f.kr || null, turn);
  }
  if (da !== 0 && groupToo) c.s.flowGroupCount.run(da, f.queue, f.grp);
  c.s.flowKeyCount.run({ queue: f.queue, grp: f.grp, key: f.key, dq, da, conc: dq > 0 ? f.kc : null, rate: f.kr || null });
}

/**
 * Group-level changes gathered over a batch (`flowMove` with `groupToo` false for each run): each
 * group's limits (its latest run's) and active count written once.
 */
export class FlowGroups {
  readonly #puts = new Map<string, FlowPlace>();
  readonly #active = new Map<string, { f: FlowPlace; da: number }>();

  move(c: SqliteCore, f: FlowPlace, dq: number, da: number): void {
    const id = `${f.queue}\u0000${f.grp}`;
    // The group's row first (a key's readiness counts in it); its limits again at flush (the latest).
    if (dq > 0 && !this.#puts.has(id)) c.s.flowGroupPut.run(f.queue, f.grp, f.gc, f.gr || null, c.takeSeq(0));
    flowMove(c, f, dq, da, false);
    if (dq > 0) this.#puts.set(id, f);
    if (da !== 0) {
      const e = this.#active.get(id);
      if (e) e.da += da;
      else this.#active.set(id, { f, da });
    }
  }

  flush(c: SqliteCore): void {
    for (const f of this.#puts.values()) c.s.flowGroupPut.run(f.queue, f.grp, f.gc, f.gr || null, c.takeSeq(0));
    for (const { f, da } of this.#active.values()) if (da !== 0) c.s.flowGroupCount.run(da, f.queue, f.grp);
    this.#puts.clear();
    this.#active.clear();
  }
}

/** `flowMove` for each row of a bulk statement that returned the flow columns. */
export function flowMoveRows(c: SqliteCore, rows: readonly Row[], dq: number, da: number, queue?: string): void {
  for (const row of rows) {
    const f = flowOf(row, queue);
    if (f) flowMove(c, f, dq, da);
  }
}

/**
 * Leases up to `max` runs under flow control in `queue`: the first ready group serves its keys in
 * turn (each key's first run, the key then to the back of the group's ring: `turn`) until the
 * slots are taken or the group is at its limit, over its rate or out of ready keys; the group then
 * goes to the back of the queue's ring (its `ready` follows its counts; see schema.ts v8). Group
 * counters are written once per group and call. Returns how many runs were leased.
 */
export function leaseFlow(
  c: SqliteCore,
  queue: string,
  worker: string,
  now: number,
  leaseMs: number,
  max: number,
  reserved: Reservation[],
  changed: string[],
  corrupt: { id: string; problems: string[] }[],
): number {
  let n = 0;
  while (n < max) {
    const g = c.row('flowGroupNext', queue);
    if (!g) break;
    const grp = String(g.grp);
    const groupRate = parseRate(g.rate);
    let gtat = num(g.tat);
    let ga = num(g.active) ?? 0;
    const gc = num(g.conc) ?? 0;
    let started = 0;
    let held: number | undefined;
    // The ring's next keys are read as many at once as the call (and the group) has slots for, and
    // their first runs leased in one statement; each key served one run goes to the back of the ring
    // in turn order (a key comes round again within a call only after every other ready key, as one
    // key at a time would have it); then the next keys.
    let stop = false;
    while (!stop && n < max && (gc <= 0 || ga < gc)) {
      const want = gc > 0 ? Math.min(max - n, gc - ga) : max - n;
      const keys = c.rows('flowKeysNext', queue, grp, want);
      if (keys.length === 0) break;
      if (keys.length === 1 && want > 1) {
        // The only ready key of the group: as many runs in one go as the slots, its limit and the rates allow.
        const r = leaseOneKey(c, { queue, grp, worker, now, leaseMs, want, k: keys[0]!, groupRate, gtat }, reserved, changed, corrupt);
        ga += r.done;
        started += r.done;
        n += r.done;
        gtat = r.gtat;
        if (r.held !== undefined) {
          held = r.held;
          stop = true;
        }
        continue;
      }
      // The plan: keys within their rate, in turn order, while the group's rate admits one more start.
      const plan: { key: string; tat: number | undefined }[] = [];
      const gtats: (number | undefined)[] = [gtat]; // the group's GCRA time after i starts
      let until: number | undefined;
      for (const k of keys) {
        const key = String(k.key);
        const keyRate = parseRate(k.rate);
        const kStep = keyRate && gcra(num(k.tat), now, keyRate);
        if (kStep && !kStep.ok) {
          c.change('flowKeyWait', kStep.until, queue, grp, key);
          continue;
        }
        if (groupRate) {
          const step = gcra(gtats[gtats.length - 1], now, groupRate);
          if (!step.ok) {
            until = step.until;
            break;
          }
          gtats.push(step.tat);
        } else gtats.push(undefined);
        plan.push({ key, tat: kStep ? kStep.tat : undefined });
      }
      if (plan.length === 0) {
        if (until !== undefined) {
          held = until;
          break;
        }
        continue;
      }
      const rows = c.rows('flowLeaseMany', { queue, grp, keys: JSON.stringify(plan.map((p) => p.key)), now, worker, until: now + leaseMs });
      const byKey = new Map(rows.map((row) => [String(row.flow_key), row]));
      let s = 0;
      for (const { key, tat } of plan) {
        const row = byKey.get(key);
        const turn = c.takeSeq(1) + 1;
        if (!row) {
          // The count said queued, but no run is: repaired (cannot happen while the counts hold).
          c.s.flowKeyCount.run({ queue, grp, key, dq: -1_000_000_000, da: 0, conc: null, rate: null });
          continue;
        }
        const stat = c.stat(queue, now);
        const r = toReservation(row, now);
        if (Array.isArray(r)) {
          c.s.flowKeyServed.run({ queue, grp, key, turn, dq: 1, da: 0 });
          const id = typeof row.id === 'string' ? row.id : `rowid ${String(row.rid)}`;
          c.s.failCorrupt.run({ rid: row.rid ?? null, now, expires: now + c.failedRetentionMs, error: corruptError(id, r) });
          corrupt.push({ id, problems: r });
          stat.failed++;
          if (typeof row.id === 'string') changed.push(row.id);
          continue;
        }
        // A start: the counts and the GCRA times move.
        c.s.flowKeyServed.run({ queue, grp, key, turn, dq: 1, da: 1 });
        s++;
        if (tat !== undefined) c.change('flowKeyTatPut', queue, grp, key, tat);
        reserved.push(r);
        changed.push(r.id);
        c.observe(stat, 'wait', now - Math.max(r.enqueuedAt, num(row.run_at) ?? r.enqueuedAt));
      }
      ga += s;
      started += s;
      n += s;
      // The group's time moves by the starts made (a GCRA step depends on their number only).
      if (groupRate) gtat = gtats[s];
      // Held by the group's rate only when every start planned was made; else there is room again.
      if (until !== undefined && s === plan.length) {
        held = until;
        stop = true;
      }
    }
    c.s.flowGroupServed.run({ queue, grp, da: started, tat: gtat ?? null, turn: c.takeSeq(1) + 1, wait: held ?? null });
  }
  return n;
}

/**
 * Leases up to `want` runs of one key, the only ready key of its group (turns would serve it alone
 * anyway): as many as its concurrency limit and the key's and the group's rates allow, each start a
 * GCRA step, in one statement. Returns the runs started, the group's GCRA time after them, and
 * until when the group's rate holds it if it ran out (every start planned made).
 */
function leaseOneKey(
  c: SqliteCore,
  o: {
    queue: string;
    grp: string;
    worker: string;
    now: number;
    leaseMs: number;
    want: number;
    k: Row;
    groupRate: FlowRate | undefined;
    gtat: number | undefined;
  },
  reserved: Reservation[],
  changed: string[],
  corrupt: { id: string; problems: string[] }[],
): { done: number; gtat: number | undefined; held?: number } {
  const { queue, grp, now, k, groupRate } = o;
  const key = String(k.key);
  const keyRate = parseRate(k.rate);
  const conc = num(k.conc) ?? 0;
  let take = Math.min(o.want, Math.max(1, num(k.queued) ?? 1));
  if (conc > 0) take = Math.min(take, Math.max(1, conc - (num(k.active) ?? 0)));
  // The plan: each start a GCRA step of the key's rate and the group's.
  let kt = num(k.tat);
  const kts: number[] = [];
  const gts: (number | undefined)[] = [o.gtat];
  let keyUntil: number | undefined;
  let groupUntil: number | undefined;
  let planned = 0;
  while (planned < take) {
    let kNext: number | undefined;
    if (keyRate) {
      const st = gcra(kt, now, keyRate);
      if (!st.ok) {
        keyUntil = st.until;
        break;
      }
      kNext = st.tat;
    }
    if (groupRate) {
      const st = gcra(gts[gts.length - 1], now, groupRate);
      if (!st.ok) {
        groupUntil = st.until;
        break;
      }
      gts.push(st.tat);
    } else gts.push(undefined);
    if (kNext !== undefined) {
      kt = kNext;
      kts.push(kNext);
    }
    planned++;
  }
  if (planned === 0) {
    if (keyUntil !== undefined) c.change('flowKeyWait', keyUntil, queue, grp, key);
    return { done: 0, gtat: o.gtat, ...(keyUntil === undefined && groupUntil !== undefined ? { held: groupUntil } : {}) };
  }
  const rows = c
    .rows('flowLeaseKey', { queue, grp, key, n: planned, now, worker: o.worker, until: now + o.leaseMs })
    .sort((a, b) => (num(a.seq) ?? 0) - (num(b.seq) ?? 0));
  if (rows.length === 0) {
    // The count said queued, but no run is: repaired (cannot happen while the counts hold).
    c.s.flowKeyCount.run({ queue, grp, key, dq: -1_000_000_000, da: 0, conc: null, rate: null });
    return { done: 0, gtat: o.gtat };
  }
  let done = 0;
  for (const row of rows) {
    const stat = c.stat(queue, now);
    const r = toReservation(row, now);
    if (Array.isArray(r)) {
      const id = typeof row.id === 'string' ? row.id : `rowid ${String(row.rid)}`;
      c.s.failCorrupt.run({ rid: row.rid ?? null, now, expires: now + c.failedRetentionMs, error: corruptError(id, r) });
      corrupt.push({ id, problems: r });
      stat.failed++;
      if (typeof row.id === 'string') changed.push(row.id);
      continue;
    }
    done++;
    reserved.push(r);
    changed.push(r.id);
    c.observe(stat, 'wait', now - Math.max(r.enqueuedAt, num(row.run_at) ?? r.enqueuedAt));
  }
  c.s.flowKeyServed.run({ queue, grp, key, turn: c.takeSeq(1) + 1, dq: rows.length, da: done });
  if (keyRate && done > 0) c.change('flowKeyTatPut', queue, grp, key, kts[done - 1]!);
  // Every start planned made, and a rate stopped the plan: the key (or the group) waits for it now.
  const full = done === planned && rows.length === planned;
  if (full && keyUntil !== undefined) c.change('flowKeyWait', keyUntil, queue, grp, key);
  return { done, gtat: gts[done], ...(full && groupUntil !== undefined ? { held: groupUntil } : {}) };
}
