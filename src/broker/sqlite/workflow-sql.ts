/**
 * The SQLite broker's statements of workflows (docs/workflows.md; used by `workflows.ts`): the
 * workflow rows, the edges between runs and the fan-in (a dependency's end resolves its edges; a
 * dependent with none left becomes ready, or is cancelled or skipped). Spread into `SQL`
 * (statements.ts), with the statements of dynamic fan-out (`spawn-sql.ts`); same conventions
 * (states as literals).
 */
export const WORKFLOW_SQL = {
  wfInsert: 'INSERT INTO workflows (id, created_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING',
  wfGet: 'SELECT id, created_at FROM workflows WHERE id = ?',
  /** A run of a workflow: `state` is waiting, queued or scheduled. */
  wfEdge: `INSERT INTO workflow_edges (dependent, dependency, workflow, pos, name, on_failure) VALUES (?, ?, ?, ?, ?, ?)`,
  /** One of these ids taken already (a workflow, or a spawn, is refused). */
  wfRunExists: 'SELECT id FROM runs WHERE id IN (SELECT value FROM json_each(?)) LIMIT 1',
  /** The unresolved edges out of a dependency. */
  wfOut: 'SELECT dependent, on_failure FROM workflow_edges WHERE dependency = ? AND resolved = 0',
  /** ?3 the dependency's result (NULL: none). Changes one row only the first time. */
  wfResolveEdge: 'UPDATE workflow_edges SET resolved = 1, value = ?3 WHERE dependent = ?1 AND dependency = ?2 AND resolved = 0',
  wfUnresolved: 'SELECT EXISTS (SELECT 1 FROM workflow_edges WHERE dependent = ? AND resolved = 0) AS n',
  /** ?2 1: the edges a spawning run awaits (its result); 0: the others (its input). */
  wfValues: 'SELECT value, name FROM workflow_edges WHERE dependent = ?1 AND adopt = ?2 ORDER BY pos',
  wfInputOf: `SELECT input, input_from, adopt FROM runs WHERE id = ? AND state = 'waiting'`,
  /** A waiting run made queued; its flow spec returned (it joins its key's queued runs: flowMove). */
  wfReady: `UPDATE runs SET state = 'queued', input = :input, seq = :seq, run_at = :now, rev = rev + 1
    WHERE id = :id AND state = 'waiting'
    RETURNING queue, flow_group, flow_key, flow_kc, flow_gc, flow_krate, flow_grate, flow_kw`,
  /** A waiting run finished by a dependency's failure: cancelled (:error) or skipped (succeeded, no result). */
  wfCancelWaiting: `UPDATE runs SET state = 'cancelled', error = :error, finished_at = :now,
      expires_at = :now + coalesce(cancel_retention, :retention), rev = rev + 1
    WHERE id = :id AND state = 'waiting' RETURNING queue`,
  wfSkipWaiting: `UPDATE runs SET state = 'succeeded', finished_at = :now,
      expires_at = :now + coalesce(cancel_retention, :retention), rev = rev + 1
    WHERE id = :id AND state = 'waiting' RETURNING queue`,
  wfRuns: 'SELECT * FROM runs WHERE workflow = ? ORDER BY rid',
  /** Every edge out of a run, resolved or not. */
  wfAllOut: 'SELECT dependent FROM workflow_edges WHERE dependency = ?',
  /** A run cancelled because a dependency failed, waiting again (a retry of that dependency). */
  wfRewait: `UPDATE runs SET state = 'waiting', error = NULL, finished_at = NULL, expires_at = NULL, rev = rev + 1
    WHERE id = ? AND state = 'cancelled'
      AND CASE WHEN json_valid(error) THEN json_extract(error, '$.reason') END = 'dependency_failed' RETURNING id`,
  wfDepsOf: 'SELECT dependency FROM workflow_edges WHERE dependent = ?',
  wfUnresolve: 'UPDATE workflow_edges SET resolved = 0, value = NULL WHERE dependent = ? AND dependency = ?',
  wfEdges: 'SELECT dependent, dependency, name, on_failure FROM workflow_edges WHERE workflow = ? ORDER BY dependent, pos',
  wfOpen: `SELECT id, state FROM runs WHERE workflow = ? AND state IN ('waiting', 'queued', 'scheduled', 'active') ORDER BY rid`,
} as const;
