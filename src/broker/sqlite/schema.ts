/**
 * The SQLite schema and its migrations, in code.
 *
 * `errand_schema` holds one row per applied migration. On open, the broker applies the missing ones
 * inside one `BEGIN IMMEDIATE` transaction, so two processes opening a new file at once do not both
 * migrate it. A file written by a newer Errand (a version this code does not know) is refused.
 *
 * Tables:
 * - `runs`: one row per run. `rid` (the rowid) is the insertion order: "newest first" is `rid DESC`,
 *   which every index carries for free (listings page on it). `seq` is the FIFO position among queued runs of equal
 *   priority; it is taken from the `seq` counter in `errand_meta` when a run becomes queued (enqueue,
 *   promotion of a due scheduled run, retry) and kept when a lease is lost or released (the run goes
 *   back to the head of its priority). `rev` increases on every write to the row: watchers in other
 *   processes compare it to learn which runs changed. Columns other than `rid`, `id`, `queue`, `state`
 *   and `rev` are nullable on purpose: rows are validated as they are read, so a row edited by hand
 *   (NULLs, text in a number column) fails one run with reason `corrupt` instead of a whole batch.
 * - `idempotency`: (queue, task, key) -> run id, with its own expiry (keyed by queue since v4).
 * - `queue_signals`: a counter per queue, bumped whenever work may have appeared in the queue or its
 *   next due time moved earlier (enqueue, retry, replay, release, resume, promotion or lease recovery
 *   by another worker). Idle workers read it when the file changes (a cheap read that never waits)
 *   instead of all taking the write lock to reserve on every change.
 * - `errand_meta`: key/value (the `seq` counter).
 *   The latest attempt of a run lives in columns (`a_no`, `worker`, `started_at`, `a_ended`,
 *   `a_outcome`, and `error` when it failed or asked for a retry); `history` (JSON) holds the earlier
 *   ones, so that a first attempt starts and ends without JSON work (v5).
 * - `cancel_log` (v2): active runs cancelled, so that `onCancel` reaches workers in other processes.
 * - `workflows`, `workflow_edges` (v8) and `runs.workflow`, `runs.input_from`: see docs/workflows.md.
 * - `workers`, `paused_queues`, `queue_stats` (v2): the BrokerInspector's worker registry, paused
 *   queues and per-minute counters.
 * - `schedules` (v8): schedule definitions per (queue, id) with their next nominal fire time
 *   (`next_at`, the compare of the fire step's compare-and-set), counters and last fire; `runs.schedule`
 *   is the mark of a run a schedule created (`<at> <0|1> <id>`, see core/run.ts).
 */
import type { DatabaseSync } from 'node:sqlite';
import { ConfigError } from '../../core/errors.ts';

interface Migration {
  version: number;
  description: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'runs, idempotency keys, queue signals, meta',
    sql: `
      CREATE TABLE runs (
        rid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        queue TEXT NOT NULL,
        state TEXT NOT NULL,
        task TEXT,
        priority INTEGER,
        seq INTEGER,
        input TEXT,
        result TEXT,
        error TEXT,
        progress TEXT,
        attempts INTEGER DEFAULT 0,
        lease_losses INTEGER DEFAULT 0,
        enqueued_at INTEGER,
        run_at INTEGER,
        started_at INTEGER,
        finished_at INTEGER,
        expires_at INTEGER,
        lease_until INTEGER,
        worker TEXT,
        idempotency_key TEXT,
        traceparent TEXT,
        history TEXT DEFAULT '[]',
        rev INTEGER NOT NULL DEFAULT 0
      );
      -- Hot path: small partial indexes, one per state that the broker scans by time or order.
      CREATE INDEX runs_queued ON runs (queue, priority DESC, seq) WHERE state = 'queued';
      CREATE INDEX runs_scheduled ON runs (queue, run_at) WHERE state = 'scheduled';
      CREATE INDEX runs_active ON runs (queue, lease_until) WHERE state = 'active';
      CREATE INDEX runs_expiry ON runs (expires_at) WHERE expires_at IS NOT NULL;
      -- Counts and listings (newest first = rid DESC, carried by every index).
      CREATE INDEX runs_by_queue_state ON runs (queue, state);
      CREATE INDEX runs_by_task_state ON runs (task, state);
      CREATE INDEX runs_by_state ON runs (state);
      CREATE INDEX runs_by_queue ON runs (queue);
      CREATE INDEX runs_by_task ON runs (task);

      CREATE TABLE idempotency (
        task TEXT NOT NULL,
        key TEXT NOT NULL,
        run_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (task, key)
      ) WITHOUT ROWID;
      CREATE INDEX idempotency_expiry ON idempotency (expires_at);

      CREATE TABLE queue_signals (
        queue TEXT PRIMARY KEY,
        rev INTEGER NOT NULL
      ) WITHOUT ROWID;

      CREATE TABLE errand_meta (
        key TEXT PRIMARY KEY,
        value
      ) WITHOUT ROWID;
      INSERT INTO errand_meta (key, value) VALUES ('seq', 0);
    `,
  },
  {
    version: 2,
    description: 'cancel log, worker registry, paused queues, per-minute queue stats',
    sql: `
      -- Active runs cancelled, for onCancel listeners in other processes (read from their last seq on).
      CREATE TABLE cancel_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL,
        at INTEGER NOT NULL
      );
      CREATE INDEX cancel_log_at ON cancel_log (at);

      CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        info TEXT NOT NULL,
        last_seen INTEGER NOT NULL,
        ttl_ms INTEGER NOT NULL
      ) WITHOUT ROWID;

      CREATE TABLE paused_queues (
        queue TEXT PRIMARY KEY,
        paused_at INTEGER
      ) WITHOUT ROWID;

      -- One row per queue and minute; wait and run are JSON arrays of histogram counts (LATENCY_BUCKETS_MS).
      CREATE TABLE queue_stats (
        queue TEXT NOT NULL,
        minute INTEGER NOT NULL,
        enqueued INTEGER NOT NULL DEFAULT 0,
        succeeded INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        retried INTEGER NOT NULL DEFAULT 0,
        wait TEXT,
        run TEXT,
        PRIMARY KEY (queue, minute)
      ) WITHOUT ROWID;
      CREATE INDEX queue_stats_minute ON queue_stats (minute);
    `,
  },
  {
    version: 3,
    description: 'listing indexes: keep only (queue, state) and (task, state)',
    // Every index holding `state` is rewritten on each transition (twice per run at least): three of
    // them cost a measurable share of throughput. Listings by state alone, by queue alone or by task
    // alone merge the ranges of these two indexes instead (see listRuns).
    sql: `
      DROP INDEX IF EXISTS runs_by_state;
      DROP INDEX IF EXISTS runs_by_queue;
      DROP INDEX IF EXISTS runs_by_task;
    `,
  },
  {
    version: 4,
    description: 'idempotency keys scoped to (queue, task, key)',
    // The contract scopes a key to the task within its queue. Existing keys take the queue of their
    // run id (`<queue>.<26-char ulid>`), which holds even when the run itself is gone.
    sql: `
      CREATE TABLE idempotency_v4 (
        queue TEXT NOT NULL,
        task TEXT NOT NULL,
        key TEXT NOT NULL,
        run_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (queue, task, key)
      ) WITHOUT ROWID;
      INSERT OR REPLACE INTO idempotency_v4 (queue, task, key, run_id, expires_at)
        SELECT substr(run_id, 1, length(run_id) - 27), task, key, run_id, expires_at FROM idempotency;
      DROP TABLE idempotency;
      ALTER TABLE idempotency_v4 RENAME TO idempotency;
      CREATE INDEX idempotency_expiry ON idempotency (expires_at);
    `,
  },
  {
    version: 5,
    description: 'the latest attempt in columns (a_no, a_ended, a_outcome), earlier ones in history',
    // Starting and settling a first attempt (the hot path) then touches no JSON at all: the latest
    // attempt is (a_no, worker, started_at, a_ended, a_outcome, and error when failed or retry), and
    // moves into the history JSON only when the next attempt starts or the run is replayed.
    sql: `
      ALTER TABLE runs ADD COLUMN a_no INTEGER;
      ALTER TABLE runs ADD COLUMN a_ended INTEGER;
      ALTER TABLE runs ADD COLUMN a_outcome TEXT;
      UPDATE runs SET
          a_no = json_extract(history, '$[#-1].attempt'),
          a_ended = json_extract(history, '$[#-1].finishedAt'),
          a_outcome = json_extract(history, '$[#-1].outcome'),
          history = json_remove(history, '$[#-1]')
        WHERE CASE WHEN json_valid(history) THEN json_type(history, '$[#-1]') = 'object' ELSE 0 END;
    `,
  },
  {
    version: 6,
    description: "the run's own retention once cancelled (cancel_retention, ms; NULL: the broker's cancelledRetentionMs)",
    sql: `
      ALTER TABLE runs ADD COLUMN cancel_retention INTEGER;
    `,
  },
  {
    version: 7,
    description: 'where a run recorded finished from elsewhere ran (origin; NULL: a run of this broker)',
    sql: `
      ALTER TABLE runs ADD COLUMN origin TEXT;
    `,
  },
  {
    version: 8,
    description: 'flow control: concurrency limits per key and per group (docs/flow-control.md)',
    // Runs with a flow spec are queued per key (runs_flow_queued), apart from the priority index of
    // the others (runs_queued, now without them). flow_keys and flow_groups count each key's and
    // group's queued and active runs, kept by the transitions (flow.ts: only runs with a flow spec
    // pay for it; triggers on runs would cost every run). `ready` (stored, indexed with `turn`) is
    // the round-robin ring: reserve reads only ready keys and groups, never those at their limit.
    // A key's row goes when it has nothing queued or active; groups (one per limited task) stay.
    // Rate limits: `wait` holds a key or group out of its ring until that time (reserve puts it
    // back); GCRA times are in flow_groups.tat and flow_rates.
    sql: `
      ALTER TABLE runs ADD COLUMN flow_group TEXT;
      ALTER TABLE runs ADD COLUMN flow_key TEXT;
      ALTER TABLE runs ADD COLUMN flow_kc INTEGER;
      ALTER TABLE runs ADD COLUMN flow_gc INTEGER;
      ALTER TABLE runs ADD COLUMN flow_krate TEXT;
      ALTER TABLE runs ADD COLUMN flow_grate TEXT;
      DROP INDEX IF EXISTS runs_queued;
      CREATE INDEX runs_queued ON runs (queue, priority DESC, seq) WHERE state = 'queued' AND flow_key IS NULL;
      CREATE INDEX runs_flow_queued ON runs (queue, flow_group, flow_key, seq) WHERE state = 'queued' AND flow_key IS NOT NULL;

      CREATE TABLE flow_groups (
        queue TEXT NOT NULL,
        grp TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 0,
        conc INTEGER NOT NULL DEFAULT 0,
        ready_keys INTEGER NOT NULL DEFAULT 0,
        turn INTEGER NOT NULL DEFAULT 0,
        rate TEXT,
        tat REAL,
        wait INTEGER,
        ready INTEGER GENERATED ALWAYS AS (ready_keys > 0 AND (conc <= 0 OR active < conc) AND wait IS NULL) STORED,
        PRIMARY KEY (queue, grp)
      ) WITHOUT ROWID;
      CREATE INDEX flow_groups_ring ON flow_groups (queue, turn) WHERE ready;
      CREATE INDEX flow_groups_wait ON flow_groups (queue, wait) WHERE wait IS NOT NULL;

      CREATE TABLE flow_keys (
        queue TEXT NOT NULL,
        grp TEXT NOT NULL,
        key TEXT NOT NULL,
        queued INTEGER NOT NULL DEFAULT 0,
        active INTEGER NOT NULL DEFAULT 0,
        conc INTEGER NOT NULL DEFAULT 0,
        turn INTEGER NOT NULL DEFAULT 0,
        rate TEXT,
        wait INTEGER,
        ready INTEGER GENERATED ALWAYS AS (queued > 0 AND (conc <= 0 OR active < conc) AND wait IS NULL) STORED,
        PRIMARY KEY (queue, grp, key)
      ) WITHOUT ROWID;
      CREATE INDEX flow_keys_ring ON flow_keys (queue, grp, turn) WHERE ready;
      CREATE INDEX flow_keys_wait ON flow_keys (queue, wait) WHERE wait IS NOT NULL;
      -- GCRA state of rate-limited keys (outlives a key's row while it matters; pruned after).
      CREATE TABLE flow_rates (
        queue TEXT NOT NULL,
        grp TEXT NOT NULL,
        key TEXT NOT NULL,
        tat REAL NOT NULL,
        PRIMARY KEY (queue, grp, key)
      ) WITHOUT ROWID;
      CREATE INDEX flow_rates_tat ON flow_rates (tat);

      -- A key becoming ready (or not) moves its group's count of ready keys; an idle key goes.
      CREATE TRIGGER flow_key_ready AFTER UPDATE ON flow_keys WHEN OLD.ready IS NOT NEW.ready BEGIN
        UPDATE flow_groups SET ready_keys = max(0, ready_keys + NEW.ready - OLD.ready) WHERE queue = NEW.queue AND grp = NEW.grp;
      END;
      CREATE TRIGGER flow_key_new AFTER INSERT ON flow_keys WHEN NEW.ready BEGIN
        UPDATE flow_groups SET ready_keys = ready_keys + 1 WHERE queue = NEW.queue AND grp = NEW.grp;
      END;
      CREATE TRIGGER flow_key_idle AFTER UPDATE ON flow_keys WHEN NEW.queued <= 0 AND NEW.active <= 0 BEGIN
        DELETE FROM flow_keys WHERE queue = NEW.queue AND grp = NEW.grp AND key = NEW.key;
      END;
    `,
  },
  {
    // Self-contained: adds columns and tables only, so it can be renumbered at merge.
    version: 9,
    description: 'workflows: runs.workflow and runs.input_from, the workflows and workflow_edges tables',
    sql: `
      ALTER TABLE runs ADD COLUMN workflow TEXT;
      ALTER TABLE runs ADD COLUMN input_from TEXT;
      CREATE INDEX runs_by_workflow ON runs (workflow) WHERE workflow IS NOT NULL;
      CREATE TABLE workflows (
        id TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL
      ) WITHOUT ROWID;
      -- One row per edge: dependent waits for dependency. resolved turns 1 once, in the
      -- transaction that settles the dependency; value is then its result (NULL: none).
      CREATE TABLE workflow_edges (
        dependent TEXT NOT NULL,
        dependency TEXT NOT NULL,
        workflow TEXT NOT NULL,
        pos INTEGER NOT NULL,
        name TEXT,
        on_failure TEXT NOT NULL,
        resolved INTEGER NOT NULL DEFAULT 0,
        value TEXT,
        PRIMARY KEY (dependent, dependency)
      ) WITHOUT ROWID;
      CREATE INDEX workflow_edges_dependency ON workflow_edges (dependency);
      -- Whether a dependent still waits: one probe of this index (a count would read every edge of
      -- a large fan-in on each settle).
      CREATE INDEX workflow_edges_unresolved ON workflow_edges (dependent) WHERE resolved = 0;
      CREATE INDEX workflow_edges_workflow ON workflow_edges (workflow);
    `,
  },
  {
    version: 10,
    description: 'schedules (periodic tasks) and the schedule mark of the runs they create',
    // Self-contained: a new table and a nullable column, nothing existing is rewritten.
    sql: `
      ALTER TABLE runs ADD COLUMN schedule TEXT;
      CREATE TABLE schedules (
        queue TEXT NOT NULL,
        id TEXT NOT NULL,
        task TEXT NOT NULL,
        spec TEXT NOT NULL,
        input TEXT NOT NULL,
        options TEXT NOT NULL,
        hash TEXT NOT NULL,
        version REAL NOT NULL,
        next_at INTEGER,
        paused INTEGER NOT NULL DEFAULT 0,
        fires INTEGER NOT NULL DEFAULT 0,
        missed INTEGER NOT NULL DEFAULT 0,
        last_fire INTEGER,
        last_run TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (queue, id)
      ) WITHOUT ROWID;
      CREATE INDEX schedules_due ON schedules (queue, next_at) WHERE paused = 0 AND next_at IS NOT NULL;
    `,
  },
  {
    version: 11,
    description: 'dynamic fan-out: runs.adopt (how a spawning run builds its result) and workflow_edges.adopt',
    // Self-contained: two nullable or defaulted columns, nothing existing is rewritten.
    sql: `
      -- A run that spawned runs and waits for them: '<resultFrom> <retentionMs>' (NULL: none).
      ALTER TABLE runs ADD COLUMN adopt TEXT;
      -- 1: an edge from a run a spawning run awaits (its value goes into the result, not the input).
      ALTER TABLE workflow_edges ADD COLUMN adopt INTEGER NOT NULL DEFAULT 0;
    `,
  },
  {
    version: 12,
    description: 'flow control: a back-off of a key or group (held: why it waits)',
    // Self-contained: two nullable columns. `held` is 'backoff' while a key's (or group's) `wait`
    // is a handler's back-off (ctx.backOff), NULL while it is its rate; cleared with `wait`.
    sql: `
      ALTER TABLE flow_keys ADD COLUMN held TEXT;
      ALTER TABLE flow_groups ADD COLUMN held TEXT;
    `,
  },
  {
    version: 13,
    description: 'expiry: runs.start_by, the deadline to start of a run (NewRun.startBy)',
    // Self-contained: a nullable column and a partial index of the never-started queued runs that have one (reserve
    // fails those past it: one probe of an empty index for queues without deadlines).
    sql: `
      ALTER TABLE runs ADD COLUMN start_by INTEGER;
      CREATE INDEX runs_start_by ON runs (queue, start_by) WHERE state = 'queued' AND start_by IS NOT NULL AND attempts = 0;
    `,
  },
  {
    version: 14,
    description: 'debounce: the scheduled run each debounce key names (NewRun.debounce)',
    // Self-contained: a new table. A row names the latest run of a key; it matches only while that
    // run is scheduled (checked at enqueue), and is replaced by the next burst's run.
    sql: `
      CREATE TABLE debounce (
        queue TEXT NOT NULL,
        task TEXT NOT NULL,
        key TEXT NOT NULL,
        run_id TEXT NOT NULL,
        max_at INTEGER,
        PRIMARY KEY (queue, task, key)
      ) WITHOUT ROWID;
    `,
  },
  {
    version: 15,
    description: 'flow control: weighted fairness (runs.flow_kw, flow_keys.weight and streak)',
    // Self-contained: columns only. A key of weight w is served w runs in a row per turn of its
    // group's ring (streak counts them), then goes to the back.
    sql: `
      ALTER TABLE runs ADD COLUMN flow_kw INTEGER;
      ALTER TABLE flow_keys ADD COLUMN weight INTEGER NOT NULL DEFAULT 1;
      ALTER TABLE flow_keys ADD COLUMN streak INTEGER NOT NULL DEFAULT 0;
    `,
  },
  {
    version: 16,
    description: "flow control: a key's GCRA time in its row (flow_keys.tat), the ring indexed on flow_keys.ring",
    // Self-contained (renumber freely at a merge): two columns, the ring's index and the key triggers
    // recreated. What reserve and settle write per run, in the row they update anyway (flow.ts):
    // - `tat`: a key's GCRA time, written with its counts and turn instead of an upsert into
    //   flow_rates per start. When the key's row goes (nothing queued or active), its time moves to
    //   flow_rates, which keeps it while it matters (prune); a key known again takes it back.
    // - `ring`: the ring's membership, a copy of `ready` written only when readiness changes (by the
    //   statement, or by flow_key_ring), so that a slot freed by a key that stays ready (settle) does
    //   not rewrite the ring's index entry, as an index on the generated `ready` did.
    // The triggers fire only for the columns they depend on (`UPDATE OF`), not for `ring` or `tat`.
    sql: `
      DROP TRIGGER flow_key_ready;
      DROP TRIGGER flow_key_idle;
      DROP INDEX flow_keys_ring;
      ALTER TABLE flow_keys ADD COLUMN tat REAL;
      ALTER TABLE flow_keys ADD COLUMN ring INTEGER NOT NULL DEFAULT 0;
      UPDATE flow_keys SET ring = ready,
        tat = (SELECT r.tat FROM flow_rates AS r WHERE r.queue = flow_keys.queue AND r.grp = flow_keys.grp AND r.key = flow_keys.key);
      CREATE INDEX flow_keys_ring ON flow_keys (queue, grp, turn) WHERE ring;

      -- A key becoming ready (or not) moves its group's count of ready keys, and joins (or leaves) the ring.
      CREATE TRIGGER flow_key_ready AFTER UPDATE OF queued, active, conc, wait ON flow_keys WHEN OLD.ready IS NOT NEW.ready BEGIN
        UPDATE flow_groups SET ready_keys = max(0, ready_keys + NEW.ready - OLD.ready) WHERE queue = NEW.queue AND grp = NEW.grp;
      END;
      CREATE TRIGGER flow_key_ring AFTER UPDATE OF queued, active, conc, wait ON flow_keys WHEN NEW.ring IS NOT NEW.ready BEGIN
        UPDATE flow_keys SET ring = NEW.ready WHERE queue = NEW.queue AND grp = NEW.grp AND key = NEW.key;
      END;
      CREATE TRIGGER flow_key_ring_new AFTER INSERT ON flow_keys WHEN NEW.ring IS NOT NEW.ready BEGIN
        UPDATE flow_keys SET ring = NEW.ready WHERE queue = NEW.queue AND grp = NEW.grp AND key = NEW.key;
      END;
      -- An idle key goes, its GCRA time kept in flow_rates; a key known again takes it back.
      CREATE TRIGGER flow_key_idle AFTER UPDATE OF queued, active ON flow_keys WHEN NEW.queued <= 0 AND NEW.active <= 0 BEGIN
        INSERT OR REPLACE INTO flow_rates (queue, grp, key, tat) SELECT NEW.queue, NEW.grp, NEW.key, NEW.tat WHERE NEW.tat IS NOT NULL;
        DELETE FROM flow_keys WHERE queue = NEW.queue AND grp = NEW.grp AND key = NEW.key;
      END;
      CREATE TRIGGER flow_key_rate AFTER INSERT ON flow_keys WHEN NEW.tat IS NULL
        AND EXISTS (SELECT 1 FROM flow_rates AS r WHERE r.queue = NEW.queue AND r.grp = NEW.grp AND r.key = NEW.key) BEGIN
        UPDATE flow_keys SET tat = (SELECT r.tat FROM flow_rates AS r WHERE r.queue = NEW.queue AND r.grp = NEW.grp AND r.key = NEW.key)
          WHERE queue = NEW.queue AND grp = NEW.grp AND key = NEW.key;
      END;
    `,
  },
];

export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0;

/** Brings the file to `SCHEMA_VERSION`. Returns the versions applied (empty when already current). */
export function migrate(db: DatabaseSync, location: string, now = Date.now()): number[] {
  const applied: number[] = [];
  db.exec('BEGIN IMMEDIATE');
  try {
    db.exec(
      'CREATE TABLE IF NOT EXISTS errand_schema (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at INTEGER NOT NULL)',
    );
    const row = db.prepare('SELECT max(version) AS v FROM errand_schema').get() as { v: number | null } | undefined;
    const current = row?.v ?? 0;
    if (current > SCHEMA_VERSION) {
      throw new ConfigError(
        `The SQLite file ${location} has schema version ${current}, newer than this Errand knows (${SCHEMA_VERSION}): upgrade Errand, or use another file`,
      );
    }
    const record = db.prepare('INSERT INTO errand_schema (version, description, applied_at) VALUES (?, ?, ?)');
    for (const m of MIGRATIONS) {
      if (m.version <= current) continue;
      db.exec(m.sql);
      record.run(m.version, m.description, now);
      applied.push(m.version);
    }
    db.exec('COMMIT');
  } catch (err) {
    if (db.isTransaction) db.exec('ROLLBACK');
    throw err;
  }
  return applied;
}
