/**
 * The broker conformance suite against the broker of errand/testing (`TestBroker`: the SQLite
 * broker on `:memory:` behind the test clock and journal; the clock at real time here). Its storage
 * is this process's memory, as documented (README, "Testing your tasks"; `src/testing/test-broker.ts`):
 * no second instance, no other process and no hand edit can reach it. The tests that need one are
 * skipped, each naming that difference.
 */
import { TestBroker } from '../../src/testing/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { inspectorConformance } from './inspector.ts';
import { brokerConformance, type ConformanceOptions, type MakeBroker } from './suite.ts';

const IN_MEMORY = "errand/testing's broker keeps its storage in this process's memory (README, Testing your tasks)";
const differences: ConformanceOptions['differences'] = {
  sameStorage: `${IN_MEMORY}: a second instance cannot open it`,
  otherProcess: `${IN_MEMORY}: another process cannot open it`,
  editBehindBroker: `${IN_MEMORY}: nothing but the broker can reach it to edit it`,
};

const makeBroker: MakeBroker = async (opts = {}) => {
  const { sameStorageAs, ...options } = opts;
  if (sameStorageAs) throw new Error(`${differences.sameStorage}: a test that opens a second instance must declare needs 'sameStorage'`);
  return new TestBroker({ logger: quietLogger, ...options });
};

brokerConformance('memory (errand/testing)', makeBroker, {
  differences,
  // Memory cannot be unreachable while the broker is open; its storage is gone once it is closed.
  unreachable: async () => {
    const b = new TestBroker({ logger: quietLogger });
    await b.close();
    return b;
  },
});
inspectorConformance('memory (errand/testing)', makeBroker, { differences });
