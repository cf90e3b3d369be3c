/**
 * The broker conformance suite against the broker of errand/testing (`TestBroker`: the SQLite
 * broker in memory behind the test clock and journal; the clock at real time here). Each fresh
 * broker gets a memory storage of its own name; `sameStorageAs` opens a second TestBroker of that
 * name (brokers of one name share their storage in this process), and the storage can be edited
 * behind the broker's back through its memory URI.
 *
 * Its storage is this process's memory, as documented (README, "Testing your tasks";
 * `src/testing/test-broker.ts`): another process cannot open it. So the peer of the tests that need
 * one (`needs: 'peer'`: atomicity seen by a concurrent reader, concurrent reserves, wake-ups, watch
 * and onCancel, the inspector read back and resume) runs in a worker thread of this process
 * (`peerIn: 'thread'`): a broker opened there by `connectBroker` on the memory URI, with its own
 * modules, its own SQLite connection and its own wake hub, running concurrently with the test. Its
 * wake-ups reach this thread's brokers only through the hub's BroadcastChannel (wake-hub.ts), and the
 * safety wake of these brokers is set far above the suite's wait for a notification, so a wake-up
 * test passes only if the real notification crossed. No test of the suite is skipped for this broker.
 */
import { randomUUID } from 'node:crypto';
import { DatabaseSync } from 'node:sqlite';
import type { Broker } from '../../src/broker/types.ts';
import { memoryUri, TestBroker } from '../../src/testing/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { NOTIFY_TIMEOUT_MS } from './context.ts';
import { inspectorConformance } from './inspector.ts';
import { brokerConformance, type ConformanceOptions, type MakeBroker } from './suite.ts';

/**
 * The SQLite broker's safety wake (`safetyWakeMs`, 2 s by default) re-checks on a timer against lost
 * notifications; here it is far above the suite's wait, so that a wake-up cannot pass by it.
 */
const SAFETY_WAKE_MS = 6 * NOTIFY_TIMEOUT_MS;

const nameOf = new WeakMap<Broker, string>();

const makeBroker: MakeBroker = async (opts = {}) => {
  const { sameStorageAs, ...options } = opts;
  const name = sameStorageAs ? nameOf.get(sameStorageAs) : randomUUID();
  if (!name) throw new Error('sameStorageAs must be a broker made by this factory');
  const tuning = { safetyWakeMs: SAFETY_WAKE_MS }; // a SqliteBroker option, passed through by TestBroker
  const broker = new TestBroker({ logger: quietLogger, ...tuning, ...options, name });
  nameOf.set(broker, name);
  return broker;
};

/** The storage of `broker`, opened directly (in this process, as the memory storage can only be). */
function storageOf(broker: Broker): string {
  const name = nameOf.get(broker);
  if (!name) throw new Error('not a broker made by this factory');
  return memoryUri(name);
}

/** The peer: a broker in a worker thread of this process, on the same memory URI (see the header). */
const peer: Pick<ConformanceOptions, 'connection' | 'peerIn'> = {
  connection: (broker) => ({ url: `sqlite:${storageOf(broker)}`, options: { safetyWakeMs: SAFETY_WAKE_MS } }),
  peerIn: 'thread',
};

brokerConformance('memory (errand/testing)', makeBroker, {
  ...peer,
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
inspectorConformance('memory (errand/testing)', makeBroker, peer);
