/**
 * Flow control in the SQLite broker (schema v8, docs/flow-control.md): the counts of queued and
 * active runs of each key and group, kept by the transitions themselves for the runs that have a
 * flow spec (a run without one costs nothing here). The tables' `ready` columns follow the counts,
 * and triggers on `flow_keys` keep each group's number of ready keys; reserve reads the rings as
 * index ranges (`flowGroupNext`, `flowKeysNext`).
 */
import { gcra, parseRate } from '../shared/flow.ts';
import { runErrorText } from '../shared/run-errors.ts';
import type { FlowRate, Reservation, Settlement, SettleStatus } from '../types.ts';
import type { SqliteCore } from './core.ts';
import { type CorruptRows, failCorruptRow } from './corrupt.ts';
import { num, type Row, toReservation } from './statements.ts';
import { resolveIn } from './workflows.ts';

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
  corrupt: CorruptRows,
  queues: Set<string>,
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
      // A key of weight w (> 1) is served what is left of its w runs in a row (its streak) in one go,
      // when its turn comes: the keys before it in this batch are served first, one run each.
      const weighted = keys.findIndex((k) => (num(k.weight) ?? 1) > 1);
      const onlyKey = keys.length === 1;
      if (weighted > 0) keys.length = weighted;
      if (weighted === 0 || (onlyKey && want > 1)) {
        // The only ready key of the group: as many runs in one go as the slots, its limit and the rates allow.
        const k = keys[0]!;
        const w = num(k.weight) ?? 1;
        const take = w > 1 ? Math.max(1, Math.min(want, w - (num(k.streak) ?? 0))) : want;
        const r = leaseOneKey(c, { queue, grp, worker, now, leaseMs, want: take, k, groupRate, gtat }, reserved, changed, corrupt, queues);
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
        const r = toReservation(row, now);
        if (Array.isArray(r)) {
          c.s.flowKeyServed.run({ queue, grp, key, turn, dq: 1, da: 0 });
          failCorruptRow(c, queue, row, r, now, corrupt, changed, queues);
          continue;
        }
        const stat = c.stat(queue, now);
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
  corrupt: CorruptRows,
  queues: Set<string>,
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
    const r = toReservation(row, now);
    if (Array.isArray(r)) {
      failCorruptRow(c, o.queue, row, r, now, corrupt, changed, queues);
      continue;
    }
    const stat = c.stat(queue, now);
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

/**
 * Within settleIn: a handler backed off (docs/flow-control.md). The run is queued again at the head
 * of its key (attempt not counted) and its key or group waits until `until`; a run without a flow
 * spec is scheduled at `until` itself.
 */
export function backOffIn(
  c: SqliteCore,
  workerId: string,
  s: Extract<Settlement, { outcome: 'backoff' }>,
  now: number,
  changed: string[],
  queues: Set<string>,
  groups: FlowGroups,
): SettleStatus {
  const row = c.row('backOff', s.id, s.attempt, workerId, now, s.until);
  if (!row) return 'lost';
  changed.push(s.id);
  queues.add(String(row.queue));
  const f = flowOf(row);
  if (f) {
    groups.move(c, f, 1, -1);
    if (s.scope === 'group' || f.key === '') c.change('flowGroupBackOff', s.until, f.queue, f.grp);
    else c.change('flowKeyBackOff', s.until, f.queue, f.grp, f.key);
  }
  return 'ok';
}

/** How many expired runs one reserve fails per queue at most (the rest: by the next call). */
const EXPIRED_PER_CALL = 1000;

/**
 * Within reserve: the queued runs of `queue` past their deadline to start (`NewRun.startBy`) are
 * failed with reason `expired`, never started (no attempt counted), wherever they are in the queue
 * (also while it is paused), their flow slot (queued) given
 * back and, for a workflow's run, their dependents told (docs/workflows.md). Counted as failed.
 */
export function failExpired(c: SqliteCore, queue: string, now: number, changed: string[], queues: Set<string>): void {
  const rows = c.rows('expiredDue', queue, now, EXPIRED_PER_CALL);
  if (rows.length === 0) return;
  const stat = c.stat(queue, now);
  for (const row of rows) {
    const error = runErrorText('expired', { at: String(num(row.start_by) ?? '') });
    c.s.failExpired.run({ rid: row.rid ?? null, now, expires: now + c.failedRetentionMs, error });
    stat.failed++;
    const f = flowOf(row, queue);
    if (f) flowMove(c, f, -1, 0);
    const id = String(row.id);
    changed.push(id);
    if (typeof row.workflow === 'string') resolveIn(c, id, false, null, now, changed, queues);
  }
}

/**
 * When the first never-started queued run of `queue` expires (its deadline + 1 ms: a run exactly at
 * its deadline may still start), for reserve's nextAt; undefined when none has a deadline.
 */
export function nextExpiry(c: SqliteCore, queue: string): number | undefined {
  const at = num(c.row('nextStartBy', queue)?.start_by);
  return at === undefined ? undefined : at + 1;
}
