/**
 * Whether the SQLite broker stores GCRA times exactly: a key's time goes into `flow_keys.tat` (REAL)
 * through reserve's JSON plan (`flowKeysServed`: the number written by `JSON.stringify`, read back by
 * SQLite's `->>`), and comes back through `flowKeysNext`. Every value must come back with the same
 * 64 bits, or a key's rate would drift by a unit in the last place per start.
 *
 * `count` values (default 1,000,000) of the form the GCRA makes, epoch milliseconds with fractions:
 * half `now + k * 0.001`, half the times of keys started back to back at random intervals
 * (`tat += interval`, as `gcra` in shared/flow.ts moves it), in plans of 1,000 keys per statement.
 * Prints the Node and SQLite versions and the mismatches (the first few with their bits); exits 1 on
 * any. Run it on each Node the package supports, e.g. Node 22 from the registry's `node@22`:
 *
 *   node bench/tools/gcra-exact.ts [count]
 */
import { DatabaseSync } from 'node:sqlite';
import { FLOW_SQL } from '../../src/broker/sqlite/flow-sql.ts';
import { migrate } from '../../src/broker/sqlite/schema.ts';

const count = Number(process.argv[2] ?? 1_000_000);
const KEYS = 1000;
const now = Date.now() + Math.random();

// Deterministic random intervals (xorshift), so that a mismatch can be reproduced.
let seed = 0x9e3779b9;
const random = () => {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 2 ** 32;
};
const values: number[] = [];
for (let k = 0; values.length < count / 2; k++) values.push(now + k * 0.001);
let tat = now;
while (values.length < count) {
  // Intervals as rates make them: a period over a limit (1000 / 3, 60000 / 7, ...) or any fraction.
  const interval = random() < 0.5 ? (1000 * (1 + Math.floor(random() * 3600))) / (1 + Math.floor(random() * 1000)) : random() * 10_000;
  tat += interval;
  if (tat > now + 86_400_000) tat = now + random();
  values.push(tat);
}

const db = new DatabaseSync(':memory:');
migrate(db, ':memory:');
db.prepare("INSERT INTO flow_groups (queue, grp, rate) VALUES ('q', 'g', '1/s')").run();
const insertKey = db.prepare("INSERT INTO flow_keys (queue, grp, key, queued, rate) VALUES ('q', 'g', ?, ?, '1/s')");
for (let i = 0; i < KEYS; i++) insertKey.run(`k${i}`, 1_000_000_000);
const served = db.prepare(FLOW_SQL.flowKeysServed);
const next = db.prepare(FLOW_SQL.flowKeysNext);

const bits = (x: number) => {
  const b = new DataView(new ArrayBuffer(8));
  b.setFloat64(0, x);
  return b.getBigUint64(0).toString(16).padStart(16, '0');
};
let mismatches = 0;
const shown: string[] = [];
let base = 0;
for (let from = 0; from < values.length; from += KEYS) {
  const batch = values.slice(from, from + KEYS);
  // [key, dq, da, tat, wait]: one run served and started per key, its time set, no wait.
  const plan = batch.map((t, i) => [`k${i}`, 1, 1, t, null]);
  served.run({ queue: 'q', grp: 'g', base, plan: JSON.stringify(plan) });
  base += KEYS;
  const back = new Map<string, number>();
  for (const row of next.all('q', 'g', KEYS) as { key: string; tat: number }[]) back.set(row.key, row.tat);
  for (let i = 0; i < batch.length; i++) {
    const sent = batch[i] as number;
    const got = back.get(`k${i}`);
    if (got !== undefined && Object.is(got, sent)) continue;
    mismatches++;
    if (shown.length < 5) shown.push(`  sent ${sent} (${bits(sent)}), got ${got} (${got === undefined ? '-' : bits(got)})`);
  }
}
const sqlite = (db.prepare('SELECT sqlite_version() AS v').get() as { v: string }).v;
process.stdout.write(`node ${process.version}, SQLite ${sqlite}: ${values.length} GCRA times, ${mismatches} not exact\n`);
for (const line of shown) process.stdout.write(`${line}\n`);
process.exitCode = mismatches === 0 ? 0 : 1;
