/**
 * The broker conformance suite against the broker of errand/testing (`TestBroker`: the SQLite
 * broker in memory behind the test clock and journal; the clock at real time here). Each fresh
 * broker gets a memory storage of its own name; `sameStorageAs` opens a second TestBroker of that
 * name (brokers of one name share their storage in this process), and the storage can be edited
 * behind the broker's back through its memory URI. Its storage is this process's memory, as
 * documented (README, "Testing your tasks"; `src/testing/test-broker.ts`): another process cannot
 * open it, so the tests that need one are skipped, naming that difference.
 */
import { randomUUID } from 'node:crypto';
import { DatabaseSync } from 'node:sqlite';
import type { Broker } from '../../src/broker/types.ts';
import { memoryUri, TestBroker } from '../../src/testing/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { inspectorConformance } from './inspector.ts';
import { brokerConformance, type ConformanceOptions, type MakeBroker } from './suite.ts';

const differences: ConformanceOptions['differences'] = {
  otherProcess:
    "errand/testing's broker keeps its storage in this process's memory (README, Testing your tasks): another process cannot open it",
};

const nameOf = new WeakMap<Broker, string>();

const makeBroker: MakeBroker = async (opts = {}) => {
  const { sameStorageAs, ...options } = opts;
  const name = sameStorageAs ? nameOf.get(sameStorageAs) : randomUUID();
  if (!name) throw new Error('sameStorageAs must be a broker made by this factory');
  const broker = new TestBroker({ logger: quietLogger, ...options, name });
  nameOf.set(broker, name);
  return broker;
};

/** The storage of `broker`, opened directly (in this process, as the memory storage can only be). */
function storageOf(broker: Broker): string {
  const name = nameOf.get(broker);
  if (!name) throw new Error('not a broker made by this factory');
  return memoryUri(name);
}

brokerConformance('memory (errand/testing)', makeBroker, {
  differences,
  // For the run-errors section, which corrupts a run through this URL (never used to start another
  // process: the tests that would are skipped above).
  connection: (broker) => ({ url: `sqlite:${storageOf(broker)}` }),
  deleteRunBehindBroker: async (broker, id) => {
    const db = new DatabaseSync(storageOf(broker));
    try {
      db.prepare('DELETE FROM runs WHERE id = ?').run(id);
    } finally {
      db.close();
    }
  },
  // Memory cannot be unreachable while the broker is open; its storage is gone once it is closed.
  unreachable: async () => {
    const b = new TestBroker({ logger: quietLogger });
    await b.close();
    return b;
  },
});
inspectorConformance('memory (errand/testing)', makeBroker, { differences });
