/**
 * A reserved row that cannot be read as a run (`toReservation` listed its problems): failed with
 * reason `corrupt`, counted as failed, never started. A terminal failure like any other: a run of a
 * workflow reaches its dependents (edge policy, docs/workflows.md). One place for reserve's paths
 * (plain queues and flow control's).
 */
import type { SqliteCore } from './core.ts';
import { corruptError, type Row } from './statements.ts';
import { resolveIn } from './workflows.ts';

/** What reserve collects of the rows it failed so (logged by the broker). */
export type CorruptRows = { id: string; problems: string[] }[];

export function failCorruptRow(
  c: SqliteCore,
  queue: string,
  row: Row,
  problems: string[],
  now: number,
  corrupt: CorruptRows,
  changed: string[],
  queues: Set<string>,
): void {
  const id = typeof row.id === 'string' ? row.id : `rowid ${String(row.rid)}`;
  c.s.failCorrupt.run({ rid: row.rid ?? null, now, expires: now + c.failedRetentionMs, error: corruptError(id, problems) });
  corrupt.push({ id, problems });
  c.stat(queue, now).failed++;
  if (typeof row.id === 'string') {
    changed.push(row.id);
    resolveIn(c, row.id, false, null, now, changed, queues);
  }
}
