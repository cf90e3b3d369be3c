/**
 * The SQLite broker's statements of periodic tasks (docs/schedules.md; used by `schedules.ts`): the
 * stored definitions and the compare-and-set of the fire step. Spread into `SQL` (statements.ts).
 */
export const SCHEDULE_SQL = {
  schGet: 'SELECT * FROM schedules WHERE queue = ? AND id = ?',
  schInsert: `INSERT INTO schedules (queue, id, task, spec, input, options, hash, version, next_at, created_at, updated_at)
    VALUES (:queue, :id, :task, :spec, :input, :options, :hash, :version, :next, :now, :now)`,
  schReplace: `UPDATE schedules SET task = :task, spec = :spec, input = :input, options = :options, hash = :hash,
      version = :version, next_at = :next, updated_at = :now WHERE queue = :queue AND id = :id`,
  /** The compare-and-set of the fire step: one row changed only while next_at is still :expect. */
  schFire: `UPDATE schedules SET next_at = :next, missed = missed + :missed, fires = fires + :fires,
      last_fire = coalesce(:lastFire, last_fire), updated_at = :now
    WHERE queue = :queue AND id = :id AND paused = 0 AND hash = :hash AND next_at = :expect`,
  schLastRun: 'UPDATE schedules SET last_run = ? WHERE queue = ? AND id = ?',
  schPause: 'UPDATE schedules SET paused = :paused, updated_at = :now WHERE queue = :queue AND id = :id',
  schDelete: 'DELETE FROM schedules WHERE queue = ? AND id = ?',
  schAll: 'SELECT * FROM schedules ORDER BY queue, id',
  schOf: 'SELECT * FROM schedules WHERE queue IN (SELECT value FROM json_each(?)) ORDER BY queue, id',
  schDue: `SELECT * FROM schedules WHERE queue = ? AND paused = 0 AND next_at IS NOT NULL AND next_at <= ?
    ORDER BY next_at LIMIT ?`,
  schNext: `SELECT next_at FROM schedules WHERE queue = ? AND paused = 0 AND next_at IS NOT NULL AND next_at > ?
    ORDER BY next_at LIMIT 1`,
} as const;
