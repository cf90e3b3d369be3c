/**
 * The BrokerInspector part of the broker conformance suite: listing runs, queues and workers,
 * pausing, purging, bulk replays and per-minute stats, as the doc comments at the end of
 * `src/broker/types.ts` describe them. Every broker that implements BrokerInspector must pass it.
 *
 * Usage, from an entry file `test/conformance/<broker>.test.ts`, with the same factory as
 * `brokerConformance` (see `suite.ts`: fresh storage, or `sameStorageAs` another broker):
 *
 *   inspectorConformance('redis', makeBroker, { connection });
 *
 * `options.connection` (as for `brokerConformance`): with it, what one broker writes is also read
 * back by a broker in another process (`peer.ts`), which shares nothing with it but storage.
 * `options.differences`: the broker's documented differences, as for `brokerConformance`; a test
 * that needs one is skipped with its sentence. A missing method is a failure, never a skip.
 *
 * The tests live in one file per part of the inspector (below, in the order they run); what they
 * share is in `inspector-context.ts`.
 *
 * Time is driven through the `now` arguments (stats minutes included); the only real waits are for
 * wake-ups, and the tests assert on what happens, never on how long it took.
 */
import { describe } from 'node:test';
import type { MakeBroker } from './context.ts';
import { type InspectorOptions, inspectorContext } from './inspector-context.ts';
import { queueControlConformance } from './inspector-queues.ts';
import { listRunsConformance } from './inspector-runs.ts';
import { flowKeysConformance } from './inspector-flow.ts';
import { statsConformance } from './inspector-stats.ts';

export function inspectorConformance(name: string, makeBroker: MakeBroker, options: InspectorOptions = {}): void {
  describe(`broker inspector conformance: ${name}`, () => {
    const c = inspectorContext(name, makeBroker, options);
    // The sections, one call each (a new section: a file exporting `(c: InspectorContext) => void`, called here).
    listRunsConformance(c);
    queueControlConformance(c);
    statsConformance(c);
    flowKeysConformance(c);
  });
}
