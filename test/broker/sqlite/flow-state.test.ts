/**
 * The SQLite broker's flow-control counts (`flow_keys`, `flow_groups`: src/broker/sqlite/flow-counts.ts)
 * are kept by the transitions themselves, never recomputed: a key's `queued` and `active` must equal
 * its runs in those states, and a group's `active` its active runs. The seeded sequence of every
 * transition that moves runs of limited keys, workflows and their cancel included
 * (test/fixtures/flow-sequence.ts, which the Redis broker's flow-state test runs too), is checked
 * against the runs table after each step, and every run ends.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, describe, it } from 'node:test';
import { SqliteBroker } from '../../../src/broker/sqlite/sqlite-broker.ts';
import type { Reservation } from '../../../src/broker/types.ts';
import { runFlowSequence } from '../../fixtures/flow-sequence.ts';

const dir = mkdtempSync(join(tmpdir(), 'errand-flow-state-'));
const path = join(dir, 'flow.db');
const broker = new SqliteBroker({ path, maxLeaseLosses: 100 });
const Q = 'fs';
const GROUP = 'fs.task';
const KEYS = ['a', 'b', 'c|d', ''];

after(async () => {
  await broker.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Compares each key's and the group's stored counts with the runs (and the sequence's active runs). */
function checkCounts(db: DatabaseSync) {
  return async (active: Map<string, Reservation>, keyOf: Map<string, string>, step: string): Promise<void> => {
    const stored = new Map<string, [number, number]>();
    for (const r of db.prepare('SELECT key, queued, active FROM flow_keys WHERE queue = ? AND grp = ?').all(Q, GROUP)) {
      stored.set(String(r.key), [Number(r.queued), Number(r.active)]);
    }
    const runs = new Map<string, [number, number]>();
    const q = `SELECT flow_key AS key, sum(state = 'queued') AS queued, sum(state = 'active') AS active FROM runs
      WHERE queue = ? AND flow_group = ? AND state IN ('queued', 'active') GROUP BY flow_key`;
    for (const r of db.prepare(q).all(Q, GROUP)) runs.set(String(r.key), [Number(r.queued), Number(r.active)]);
    const activeByKey = new Map<string, number>();
    for (const id of active.keys()) {
      const y = keyOf.get(id);
      if (y !== undefined) activeByKey.set(y, (activeByKey.get(y) ?? 0) + 1);
    }
    for (const y of KEYS) {
      const [sq, sa] = stored.get(y) ?? [0, 0];
      const [rq, ra] = runs.get(y) ?? [0, 0];
      assert.equal(sq, rq, `${step}: key ${JSON.stringify(y)}: queued count ${sq}, runs queued ${rq}`);
      assert.equal(sa, ra, `${step}: key ${JSON.stringify(y)}: active count ${sa}, runs active ${ra}`);
      assert.equal(ra, activeByKey.get(y) ?? 0, `${step}: key ${JSON.stringify(y)}: the runs the sequence holds active`);
    }
    const g = db.prepare('SELECT active FROM flow_groups WHERE queue = ? AND grp = ?').get(Q, GROUP);
    const ga = [...runs.values()].reduce((n, [, a]) => n + a, 0);
    assert.equal(Number(g?.active ?? 0), ga, `${step}: the group's active count`);
  };
}

describe('sqlite flow-control counts', () => {
  it('keep each key and group count equal to its runs through every transition, workflows included (seeded)', async () => {
    await broker.counts([Q]); // opens the file (and creates the schema)
    const db = new DatabaseSync(path, { readOnly: true });
    try {
      await runFlowSequence({ broker, queue: Q, group: GROUP, keys: KEYS, seed: 16, check: checkCounts(db) });
      assert.equal((await broker.counts([Q]))[Q]?.queued, 0, 'every run ended');
      const left = db.prepare('SELECT count(*) AS n FROM flow_keys WHERE queue = ? AND (queued > 0 OR active > 0)').get(Q);
      assert.equal(Number(left?.n), 0, 'no key counts a run');
    } finally {
      db.close();
    }
  });
});
