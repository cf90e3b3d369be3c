/**
 * The broker conformance suite against the broker of errand/testing (`TestBroker`: the SQLite
 * broker on `:memory:` behind the test clock and journal; the clock at real time here). An
 * in-memory database cannot be opened by a second instance or process, so the tests that need one
 * are skipped, saying so.
 */
import { TestBroker } from '../../src/testing/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { inspectorConformance } from './inspector.ts';
import { brokerConformance, type MakeBroker, SharedStorageUnsupported } from './suite.ts';

const makeBroker: MakeBroker = async (opts = {}) => {
  const { sameStorageAs, ...options } = opts;
  if (sameStorageAs) throw new SharedStorageUnsupported('an in-memory broker has no storage that a second instance can open');
  return new TestBroker({ logger: quietLogger, ...options });
};

brokerConformance('memory (errand/testing)', makeBroker, {
  // Memory cannot be unreachable while the broker is open; its storage is gone once it is closed.
  unreachable: async () => {
    const b = new TestBroker({ logger: quietLogger });
    await b.close();
    return b;
  },
});
inspectorConformance('memory (errand/testing)', makeBroker);
