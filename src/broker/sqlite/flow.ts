/**
 * Flow control in the SQLite broker (schema v8, v16; docs/flow-control.md): the counts of queued and
 * active runs of each key and group, kept by the transitions themselves for the runs that have a
 * flow spec (a run without one costs nothing here). The tables' `ready` columns follow the counts,
 * and triggers on `flow_keys` keep each group's number of ready keys and the key's ring membership
 * (`ring`, rewritten only when readiness changes); reserve reads the rings as index ranges
 * (`flowGroupNext`, `flowKeysNext`). Per pass over a ring, reserve plans the GCRA steps
 * (`planStarts`), leases the keys' runs in one statement and writes the keys in one more; a settle
 * batch frees its slots, and an enqueue batch queues its keys, in one statement each (`FlowGroups`).
 * The counts' moves themselves (`flowMove`, `FlowGroups`) are in flow-counts.ts, which the
 * workflows' fan-in (workflows.ts) uses too; this file is reserve's part.
 */
import { gcra, parseRate } from '../shared/flow.ts';
import { runErrorText } from '../shared/run-errors.ts';
import type { FlowRate, Reservation, Settlement, SettleStatus } from '../types.ts';
import type { SqliteCore } from './core.ts';
import { type CorruptRows, failCorruptRow } from './corrupt.ts';
import { type FlowGroups, flowMove, flowOf } from './flow-counts.ts';
import { num, type Row, toReservation } from './statements.ts';
import { resolveIn } from './workflows.ts';

/**
 * Leases up to `max` runs under flow control in `queue`: the first ready group serves its keys in
 * turn (each key's first run, or its first runs up to its weight, the key then to the back of the
 * group's ring: `turn`) until the
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
    const pass: Pass = {
      queue,
      grp,
      worker,
      now,
      leaseMs,
      groupRate: parseRate(g.rate),
      gtat: num(g.tat),
      reserved,
      changed,
      corrupt,
      queues,
    };
    let ga = num(g.active) ?? 0;
    const gc = num(g.conc) ?? 0;
    let started = 0;
    let held: number | undefined;
    // The ring's next keys are read as many at once as the call (and the group) has slots for, and
    // their runs leased in one statement; each key served its turn's runs goes to the back of the
    // ring in turn order (a key comes round again within a call only after every other ready key, as
    // one key at a time would have it); then the next keys.
    while (held === undefined && n < max && (gc <= 0 || ga < gc)) {
      const want = gc > 0 ? Math.min(max - n, gc - ga) : max - n;
      const rows = c.rows('flowKeysNext', queue, grp, want);
      if (rows.length === 0) break;
      // Each key in turn is asked for its share of the slots left: a key of weight w (> 1) what is left
      // of its w runs in a row (its streak), a key of weight 1 one run; the only ready key of the group
      // as many runs as the slots allow (turns would serve it alone anyway: its turns of w runs in a
      // row one after the other, `flowKeysServed` counts its streak on). Every share is capped by the
      // key's queued runs and its limit, and the last one by the slots left (its streak then goes on
      // at its next turn). All of them are leased in one pass, as one key at a time in turn order
      // would have served them.
      const keys: PassKey[] = [];
      let left = want;
      for (const k of rows) {
        if (left <= 0) break;
        const w = num(k.weight) ?? 1;
        const share = rows.length === 1 ? left : w > 1 ? w - (num(k.streak) ?? 0) : 1;
        let take = Math.max(1, Math.min(left, share));
        take = Math.min(take, Math.max(1, num(k.queued) ?? 1));
        const conc = num(k.conc) ?? 0;
        if (conc > 0) take = Math.min(take, Math.max(1, conc - (num(k.active) ?? 0)));
        keys.push(passKey(k, take));
        left -= take;
      }
      const r = leasePass(c, pass, keys);
      ga += r.started;
      started += r.started;
      n += r.started;
      held = r.held;
    }
    c.s.flowGroupServed.run({ queue, grp, da: started, tat: pass.gtat ?? null, turn: c.takeSeq(1) + 1, wait: held ?? null });
  }
  return n;
}

/** One group's part of a reserve call: where it leases, its GCRA time so far, and where the leases go. */
interface Pass {
  queue: string;
  grp: string;
  worker: string;
  now: number;
  leaseMs: number;
  groupRate: FlowRate | undefined;
  gtat: number | undefined;
  reserved: Reservation[];
  changed: string[];
  corrupt: CorruptRows;
  queues: Set<string>;
}

/** A key of a pass, as `flowKeysNext` read it: `want` runs asked of it; its GCRA times once planned. */
interface PassKey {
  key: string;
  rate: FlowRate | undefined;
  tat: number | undefined;
  want: number;
  /** The key's GCRA time after each start planned (undefined without a rate). */
  tats: (number | undefined)[];
  /** When the key's rate stopped its plan: the time it may start again. */
  until?: number;
}

function passKey(k: Row, want: number): PassKey {
  return { key: String(k.key), rate: parseRate(k.rate), tat: num(k.tat), want, tats: [] };
}

/**
 * The GCRA plan of a pass: each key in turn takes up to its `want` starts, each start a step of the
 * key's rate and of the group's; a key out of rate stops (its `until`), and the group out of rate
 * stops the plan (`groupUntil`). `gtats[i]`: the group's GCRA time after i starts (a step depends
 * on their number only). One planner for a key served alone and for keys served their turn's runs each.
 */
function planStarts(
  keys: PassKey[],
  now: number,
  groupRate: FlowRate | undefined,
  gtat: number | undefined,
): { planned: number; gtats: (number | undefined)[]; groupUntil?: number } {
  const gtats = [gtat];
  for (const k of keys) {
    let kt = k.tat;
    for (let j = 0; j < k.want; j++) {
      let next: number | undefined;
      if (k.rate) {
        const st = gcra(kt, now, k.rate);
        if (!st.ok) {
          k.until = st.until;
          break;
        }
        next = st.tat;
      }
      if (groupRate) {
        const st = gcra(gtats[gtats.length - 1], now, groupRate);
        if (!st.ok) return { planned: gtats.length - 1, gtats, groupUntil: st.until };
        gtats.push(st.tat);
      } else gtats.push(undefined);
      kt = next;
      k.tats.push(next);
    }
  }
  return { planned: gtats.length - 1, gtats };
}

/**
 * One pass over `keys`: their starts planned, the runs planned leased in one statement, and every
 * key's counts, turn, GCRA time and wait written in one more (`flowKeysServed`). Returns the runs
 * started, and until when the group's rate holds it if it stopped the plan and every start planned
 * was made (otherwise there is room again).
 */
function leasePass(c: SqliteCore, p: Pass, keys: PassKey[]): { started: number; held?: number } {
  const { queue, grp, now } = p;
  const plan = planStarts(keys, p.now, p.groupRate, p.gtat);
  const lease = { queue, grp, now, worker: p.worker, until: now + p.leaseMs };
  let rows: Row[] = [];
  if (plan.planned > 0) {
    // One key: its first runs; keys of one start each: their first runs; else each key's first runs.
    const planned = keys.filter((k) => k.tats.length > 0);
    if (keys.length === 1) rows = c.rows('flowLeaseKey', { ...lease, key: keys[0]!.key, n: plan.planned }).sort(bySeq);
    else if (planned.every((k) => k.tats.length === 1))
      rows = c.rows('flowLeaseMany', { ...lease, keys: JSON.stringify(planned.map((k) => k.key)) });
    else rows = c.rows('flowLeaseKeys', { ...lease, keys: JSON.stringify(planned.map((k) => [k.key, k.tats.length])) }).sort(bySeq);
  }
  const byKey = new Map<string, Row[]>();
  for (const row of rows) {
    const key = keys.length === 1 ? keys[0]!.key : String(row.flow_key);
    const list = byKey.get(key);
    if (list) list.push(row);
    else byKey.set(key, [row]);
  }
  // Per key: [key, runs taken off its queue, runs started, its GCRA time, its wait] for flowKeysServed.
  const served: [string, number, number, number | null, number | null][] = [];
  let started = 0;
  let stat: ReturnType<SqliteCore['stat']> | undefined; // taken once a run starts (an entry is written at commit)
  for (const k of keys) {
    const planned = k.tats.length;
    if (planned === 0) {
      // Out of its rate before its first start: the key waits (leaves its ring) until then.
      if (k.until !== undefined) served.push([k.key, 0, 0, null, k.until]);
      continue;
    }
    const mine = byKey.get(k.key) ?? [];
    // The count said queued, but no run is: repaired (cannot happen while the counts hold).
    if (mine.length === 0) served.push([k.key, 1_000_000_000, 0, null, null]);
    let done = 0;
    for (const row of mine) {
      const r = toReservation(row, now);
      if (Array.isArray(r)) {
        failCorruptRow(c, queue, row, r, now, p.corrupt, p.changed, p.queues);
        continue;
      }
      stat ??= c.stat(queue, now);
      done++;
      p.reserved.push(r);
      p.changed.push(r.id);
      c.observe(stat, 'wait', now - Math.max(r.enqueuedAt, num(row.run_at) ?? r.enqueuedAt));
    }
    started += done;
    if (mine.length === 0) continue;
    // Every start planned made, and its rate stopped the plan: the key waits for it now.
    const wait = done === planned && k.until !== undefined ? k.until : null;
    served.push([k.key, mine.length, done, done > 0 ? (k.tats[done - 1] ?? null) : null, wait]);
  }
  if (served.length > 0) c.s.flowKeysServed.run({ queue, grp, base: c.takeSeq(served.length), plan: JSON.stringify(served) });
  // The group's time moves by the starts made.
  if (p.groupRate) p.gtat = plan.gtats[started];
  return plan.groupUntil !== undefined && started === plan.planned ? { started, held: plan.groupUntil } : { started };
}

/** Leased runs in queue order (a key's runs are served FIFO). */
function bySeq(a: Row, b: Row): number {
  return (num(a.seq) ?? 0) - (num(b.seq) ?? 0);
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
 * Returns whether the queue had a never-started queued run with a deadline (else nextExpiry has
 * nothing to find: reserve skips it).
 */
export function failExpired(c: SqliteCore, queue: string, now: number, changed: string[], queues: Set<string>): boolean {
  // The earliest deadline first (one probe of the index): none, or none due, is the usual case.
  const first = num(c.row('nextStartBy', queue)?.start_by);
  if (first === undefined) return false;
  if (first >= now) return true;
  const rows = c.rows('expiredDue', queue, now, EXPIRED_PER_CALL);
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
  return true;
}

/**
 * When the first never-started queued run of `queue` expires (its deadline + 1 ms: a run exactly at
 * its deadline may still start), for reserve's nextAt; undefined when none has a deadline.
 */
export function nextExpiry(c: SqliteCore, queue: string): number | undefined {
  const at = num(c.row('nextStartBy', queue)?.start_by);
  return at === undefined ? undefined : at + 1;
}
