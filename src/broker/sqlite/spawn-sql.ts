/**
 * The SQLite broker's statements of dynamic fan-out (docs/workflows.md): a run that ends its attempt
 * by spawning runs waits for some of them (`adopt` edges) and then finishes with their values.
 * Spread into `SQL` (statements.ts); same conventions (states as literals, `?1..?3` the lease).
 */
export const SPAWN_SQL = {
  /** The spawn of a held run (?1 id, ?2 attempt, ?3 worker): waiting, its attempt ended `spawned`; ?4 now, ?5 adopt. */
  spawnHeld: `UPDATE runs SET state = 'waiting', adopt = ?5, workflow = coalesce(workflow, id), run_at = ?4, lease_until = NULL,
      rev = rev + 1, a_ended = ?4, a_outcome = 'spawned'
    WHERE id = ?1 AND state = 'active' AND attempts = ?2 AND worker = ?3
    RETURNING queue, started_at, flow_group, flow_key, flow_kc, workflow`,
  /** The awaited edges of an earlier spawn of the same run (a replayed run that spawns again). */
  spawnDropEdges: 'DELETE FROM workflow_edges WHERE dependent = ? AND adopt = 1',
  spawnEdge: `INSERT INTO workflow_edges (dependent, dependency, workflow, pos, name, on_failure, adopt) VALUES (?, ?, ?, ?, ?, ?, 1)`,
  /** A spawning run whose awaited runs are all resolved: succeeded with their values. */
  spawnAdopt: `UPDATE runs SET state = 'succeeded', result = :result, finished_at = :now, expires_at = :now + :retention, rev = rev + 1
    WHERE id = :id AND state = 'waiting' RETURNING queue`,
} as const;
