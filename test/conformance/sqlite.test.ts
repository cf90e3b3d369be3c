/**
 * The broker conformance suite against the embedded SQLite broker. Each fresh broker gets its own
 * file in its own temp dir (removed at exit); `sameStorageAs` opens the same file again, as a second
 * process would.
 */
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { SqliteBroker } from '../../src/broker/sqlite/sqlite-broker.ts';
import type { Broker } from '../../src/broker/types.ts';
import { tempDir } from '../helpers.ts';
import { inspectorConformance } from './inspector.ts';
import { brokerConformance, type MakeBroker } from './suite.ts';

const pathOf = new WeakMap<Broker, string>();

const makeBroker: MakeBroker = async (opts = {}) => {
  const { sameStorageAs, ...options } = opts;
  const path = sameStorageAs ? pathOf.get(sameStorageAs) : join(tempDir('errand-sqlite'), 'errand.db');
  if (!path) throw new Error('sameStorageAs must be a broker made by this factory');
  const broker = new SqliteBroker({ path, ...options });
  pathOf.set(broker, path);
  return broker;
};

brokerConformance('sqlite', makeBroker, {
  connection: (broker) => ({ url: `sqlite:${pathOf.get(broker)}` }),
  deleteRunBehindBroker: async (broker, id) => {
    const db = new DatabaseSync(pathOf.get(broker) ?? '', { timeout: 5000 });
    try {
      db.prepare('DELETE FROM runs WHERE id = ?').run(id);
    } finally {
      db.close();
    }
  },
  unreachable: () => new SqliteBroker({ path: join(tempDir('errand-sqlite'), 'no-such-folder', 'errand.db') }),
});
inspectorConformance('sqlite', makeBroker, { connection: (broker) => ({ url: `sqlite:${pathOf.get(broker)}` }) });
