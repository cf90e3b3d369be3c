/**
 * The SQLite broker's statements of flow control (docs/flow-control.md): the counts of keys and
 * groups, their rings (turn order), waits (rates, back-offs), GCRA times and the leases reserve takes
 * through them. Spread into `SQL` (statements.ts); same conventions (states as literals).
 */
export const FLOW_SQL = {
  flowAny: 'SELECT 1 AS ok FROM flow_groups WHERE queue = ? LIMIT 1',
  flowCountKeys: 'SELECT coalesce(sum(queued), 0) AS queued, count(*) AS keys, count(wait) AS waiting FROM flow_keys WHERE queue = ?',
  /** A page of a queue's keys (`flowKeys`): by :sort ('queued' or 'active', most first; 'key'), then group and key. */
  flowKeysPage: `SELECT grp, key, queued, active, conc, rate, wait FROM flow_keys WHERE queue = :queue
    ORDER BY CASE :sort WHEN 'queued' THEN -queued WHEN 'active' THEN -active ELSE 0 END, grp, key LIMIT :limit OFFSET :offset`,
  flowKeysTotal: 'SELECT count(*) AS n FROM flow_keys WHERE queue = ?',
  /** Queued runs held back by a limit, by what holds them (see `FlowCounts.heldRuns`). */
  flowHeldRuns: `SELECT
      coalesce(sum(CASE WHEN g.wait IS NOT NULL THEN k.queued END), 0) AS group_rate,
      coalesce(sum(CASE WHEN g.wait IS NULL AND g.conc > 0 AND g.active >= g.conc THEN k.queued END), 0) AS group_concurrency,
      coalesce(sum(CASE WHEN g.wait IS NULL AND NOT (g.conc > 0 AND g.active >= g.conc) AND k.wait IS NOT NULL THEN k.queued END), 0) AS key_rate,
      coalesce(sum(CASE WHEN g.wait IS NULL AND NOT (g.conc > 0 AND g.active >= g.conc) AND k.wait IS NULL
        AND k.conc > 0 AND k.active >= k.conc THEN k.queued END), 0) AS key_concurrency
    FROM flow_keys AS k JOIN flow_groups AS g ON g.queue = k.queue AND g.grp = k.grp WHERE k.queue = ? AND k.queued > 0`,
  flowCountGroups: 'SELECT count(wait) AS waiting FROM flow_groups WHERE queue = ?',
  flowKeyGet: 'SELECT active, conc, wait, held FROM flow_keys WHERE queue = ? AND grp = ? AND key = ?',
  flowGroupGet: 'SELECT active, conc, wait, held FROM flow_groups WHERE queue = ? AND grp = ?',
  flowGroupNext: 'SELECT grp, rate, tat, active, conc FROM flow_groups WHERE queue = ? AND ready ORDER BY turn LIMIT 1',
  /**
   * The keys of one pass of reserve (flow.ts `leasePass`), in one statement. `:plan` is a JSON array of
   * `[key, dq, da, tat, wait]`: the key served `dq` runs (`da` of them started; the others were corrupt),
   * to the back of its ring (turn `:base` + 1 + its place in the array), or kept in its place for `weight`
   * runs in a row (`streak`); its GCRA time and its wait set unless null. `dq` 0: only its wait is set.
   * A key served more than what was left of its turn (the only ready key of its group) was served that
   * turn (at least one run, as reserve asks) and then whole turns of `weight` runs: its streak is what
   * the last turn got.
   * `ring` follows (`ready`'s expression on the new values; the trigger flow_key_ring would mend a
   * difference). The plan is materialized first, so that each key is one primary-key lookup.
   */
  flowKeysServed: `WITH p AS MATERIALIZED (SELECT j.key AS i, j.value ->> 0 AS key, j.value ->> 1 AS dq, j.value ->> 2 AS da,
        j.value ->> 3 AS tat, j.value ->> 4 AS wait FROM json_each(:plan) AS j)
    UPDATE flow_keys SET queued = max(0, queued - p.dq), active = active + p.da,
      turn = CASE WHEN p.dq = 0 OR streak + p.dq < weight THEN turn ELSE :base + 1 + p.i END,
      streak = CASE WHEN p.dq = 0 THEN streak WHEN streak + p.dq < weight THEN streak + p.dq
        ELSE (p.dq - max(1, weight - streak)) % weight END,
      tat = coalesce(p.tat, flow_keys.tat), wait = coalesce(p.wait, flow_keys.wait),
      ring = max(0, queued - p.dq) > 0 AND (conc <= 0 OR active + p.da < conc) AND coalesce(p.wait, flow_keys.wait) IS NULL
    FROM p WHERE flow_keys.queue = :queue AND flow_keys.grp = :grp AND flow_keys.key = p.key`,
  /**
   * Settled runs of keys that stay queued as they were (a settle batch's slots freed, FlowGroups): `?1` is
   * a JSON array of `[queue, grp, key, da]`, one per key, its active count moved by `da`. A key out of
   * its ring (`ring` 0) that a freed slot makes ready joins it at the back, a new turn (`?2` + 1 + its
   * place in the array), and starts its turn afresh (`streak` 0): a key out of its ring has ended its turn.
   */
  flowKeysActive: `WITH p AS MATERIALIZED (SELECT j.key AS i, j.value ->> 0 AS queue, j.value ->> 1 AS grp, j.value ->> 2 AS key,
        j.value ->> 3 AS da FROM json_each(?1) AS j)
    UPDATE flow_keys SET active = max(0, active + p.da),
      turn = CASE WHEN ring = 0 AND queued > 0 AND (conc <= 0 OR max(0, active + p.da) < conc) AND wait IS NULL
        THEN ?2 + 1 + p.i ELSE turn END,
      streak = CASE WHEN ring = 0 THEN 0 ELSE streak END
    FROM p WHERE flow_keys.queue = p.queue AND flow_keys.grp = p.grp AND flow_keys.key = p.key`,
  /** A group served `:da` runs in a reserve: to the back of its ring, or waiting until `:wait` (its rate). */
  flowGroupServed: `UPDATE flow_groups SET active = active + :da, tat = :tat, turn = :turn, wait = :wait
    WHERE queue = :queue AND grp = :grp`,
  /**
   * A run of a key became queued: the key known (its limits the run's), its count up. A key out of its
   * ring takes turn `:turn` (the back: it joins there if it becomes ready) and a fresh turn (`streak` 0).
   */
  flowKeyQueued: `INSERT INTO flow_keys (queue, grp, key, conc, rate, weight, turn, queued, ring)
    VALUES (:queue, :grp, :key, :conc, :rate, :weight, :turn, :dq, :dq > 0)
    ON CONFLICT (queue, grp, key) DO UPDATE SET queued = queued + excluded.queued, conc = excluded.conc, rate = excluded.rate, weight = excluded.weight,
      turn = CASE WHEN ring = 0 THEN excluded.turn ELSE turn END, streak = CASE WHEN ring = 0 THEN 0 ELSE streak END`,
  /**
   * Runs of keys became queued (an enqueue batch, FlowGroups): `?2` is a JSON array of
   * `[queue, grp, key, conc, rate, weight, dq]`, one per key; each key known (at turn `?1`, the back of
   * its ring) or its count moved, its limits those of its latest run (as `flowKeyQueued`; a key out of its
   * ring at turn `?1` too, with a fresh turn).
   */
  flowKeysQueued: `INSERT INTO flow_keys (queue, grp, key, conc, rate, weight, turn, queued, ring)
    SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, j.value ->> 5, ?1, j.value ->> 6, (j.value ->> 6) > 0
    FROM json_each(?2) AS j WHERE true
    ON CONFLICT (queue, grp, key) DO UPDATE SET queued = queued + excluded.queued, conc = excluded.conc, rate = excluded.rate, weight = excluded.weight,
      turn = CASE WHEN ring = 0 THEN excluded.turn ELSE turn END, streak = CASE WHEN ring = 0 THEN 0 ELSE streak END`,
  /** The next ready keys of a group's ring (`ring`: schema v16), in turn order, with their GCRA times. */
  flowKeysNext: `SELECT key, rate, queued, active, conc, weight, streak, tat FROM flow_keys
    WHERE queue = ? AND grp = ? AND ring ORDER BY turn LIMIT ?`,
  // rate limits: keys and groups held out of their rings until `wait`, the GCRA times
  /** Keys whose wait is over: back to the ring at turn ?3 (the back), with a fresh turn (`streak` 0). */
  flowKeysDue: 'UPDATE flow_keys SET wait = NULL, held = NULL, turn = ?3, streak = 0 WHERE queue = ?1 AND wait IS NOT NULL AND wait <= ?2',
  flowGroupsDue: 'UPDATE flow_groups SET wait = NULL, held = NULL WHERE queue = ? AND wait IS NOT NULL AND wait <= ?',
  /** A handler's back-off (ctx.backOff): the later of the wait already set and ?1. */
  flowKeyBackOff: `UPDATE flow_keys SET wait = max(coalesce(wait, 0), ?1), held = CASE WHEN ?1 >= coalesce(wait, 0) THEN 'backoff' ELSE held END
    WHERE queue = ?2 AND grp = ?3 AND key = ?4`,
  flowGroupBackOff: `UPDATE flow_groups SET wait = max(coalesce(wait, 0), ?1), held = CASE WHEN ?1 >= coalesce(wait, 0) THEN 'backoff' ELSE held END
    WHERE queue = ?2 AND grp = ?3`,
  flowNextWait: `SELECT min(w) AS wait FROM (SELECT min(wait) AS w FROM flow_keys WHERE queue = ?1 AND wait IS NOT NULL
    UNION ALL SELECT min(wait) FROM flow_groups WHERE queue = ?1 AND wait IS NOT NULL)`,
  pruneFlowRates: 'DELETE FROM flow_rates WHERE tat < ?',
  flowGroupPut: `INSERT INTO flow_groups (queue, grp, conc, rate, turn) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (queue, grp) DO UPDATE SET conc = excluded.conc, rate = excluded.rate`,
  flowKeyPut: 'INSERT INTO flow_keys (queue, grp, key, conc, rate, turn, weight) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING',
  flowGroupCount: 'UPDATE flow_groups SET active = max(0, active + ?) WHERE queue = ? AND grp = ?',
  /** A run of a key moved (flowMove): its counts; a key out of its ring at turn `:turn` (the back) with a fresh turn. */
  flowKeyCount: `UPDATE flow_keys SET queued = max(0, queued + :dq), active = max(0, active + :da), conc = coalesce(:conc, conc),
      rate = CASE WHEN :conc IS NULL THEN rate ELSE :rate END,
      turn = CASE WHEN ring = 0 THEN :turn ELSE turn END, streak = CASE WHEN ring = 0 THEN 0 ELSE streak END
    WHERE queue = :queue AND grp = :grp AND key = :key`,
  /** Whether freeing slots in a queue may have made a key ready (then idle workers are woken). */
  flowReady: 'SELECT 1 AS ok FROM flow_groups WHERE queue = ? AND ready LIMIT 1',
} as const;
