/**
 * The broker conformance suite: the one set of tests that every Broker (Redis, SQLite, ...) must
 * pass. The facts checked here are the doc comments of `src/broker/types.ts`; when a broker fails
 * one of these tests, the broker is wrong (or the contract is ambiguous and must be clarified there).
 *
 * Usage, from an entry file `test/conformance/<broker>.test.ts`:
 *
 *   brokerConformance('redis', async (opts) => new RedisBroker({ url, prefix: opts?.sameStorageAs ? prefixOf(...) : fresh, ...opts }));
 *
 * `makeBroker()` opens a broker on FRESH, empty storage (its own Redis key prefix, its own SQLite
 * file); `makeBroker({ sameStorageAs: b })` opens a second instance on the storage of `b`, as another
 * process would. Every broker the suite opens is closed after each test. A broker that cannot do
 * what a test needs (a second instance, another process, an edit behind its back) names its
 * documented difference in `options.differences`; those tests are then skipped with that sentence.
 *
 * The tests live in one file per section of the contract (below, in the order they run); what they
 * share (types, hooks, run builders, opening and closing brokers) is in `context.ts`.
 *
 * Time is driven through the `now` arguments; the only real waits are for the few things that are
 * real-time by nature (wake-ups, pub/sub, the Redis idempotency TTL), and the tests assert on what
 * happens, never on how long it took. A test that moves `now` far ahead lets the storage's own
 * expiries (Redis TTLs) follow with the `elapse` hook instead of waiting.
 */
import { describe } from 'node:test';
import { backoffConformance } from './backoff.ts';
import { cancelConformance } from './cancel.ts';
import { cancelRetentionConformance } from './cancel-retention.ts';
import { connectionConformance } from './connection.ts';
import { type ConformanceOptions, conformanceContext, type MakeBroker } from './context.ts';
import { countConformance } from './counts.ts';
import { debounceConformance } from './debounce.ts';
import { enqueueConformance } from './enqueue.ts';
import { expiryConformance } from './expiry.ts';
import { idempotencyConformance } from './idempotency.ts';
import { leaseConformance } from './leases.ts';
import { limitsConformance } from './limits.ts';
import { notificationConformance } from './notifications.ts';
import { recordConformance } from './record.ts';
import { reserveConformance } from './reserve.ts';
import { retryConformance } from './retry.ts';
import { runErrorConformance } from './run-errors.ts';
import { scheduleConformance } from './schedules.ts';
import { settleConformance } from './settle.ts';
import { sharedStorageConformance } from './shared-storage.ts';
import { spawnConformance } from './spawn.ts';
import { workflowLimitsConformance } from './workflow-limits.ts';
import { workflowQueuesConformance } from './workflow-queues.ts';
import { weightsConformance } from './weights.ts';
import { workflowConformance } from './workflows.ts';

export type { ConformanceOptions, MakeBroker, MakeBrokerOptions, Need } from './context.ts';
export { Peer } from './peer-host.ts';

export function brokerConformance(name: string, makeBroker: MakeBroker, options: ConformanceOptions = {}): void {
  describe(`broker conformance: ${name}`, () => {
    const c = conformanceContext(name, makeBroker, options);
    // The sections, one call each (a new section: a file exporting `(c: ConformanceContext) => void`, called here).
    enqueueConformance(c);
    reserveConformance(c);
    settleConformance(c);
    recordConformance(c);
    idempotencyConformance(c);
    cancelConformance(c);
    retryConformance(c);
    leaseConformance(c);
    limitsConformance(c);
    backoffConformance(c);
    expiryConformance(c);
    debounceConformance(c);
    weightsConformance(c);
    sharedStorageConformance(c);
    notificationConformance(c);
    countConformance(c);
    connectionConformance(c);
    workflowConformance(c);
    workflowQueuesConformance(c);
    workflowLimitsConformance(c);
    spawnConformance(c);
    scheduleConformance(c);
    runErrorConformance(makeBroker, options);
    cancelRetentionConformance(makeBroker);
  });
}
