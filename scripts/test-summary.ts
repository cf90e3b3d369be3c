// A node:test reporter (beside the spec reporter) that counts what ran: `npm test` prints its output
// last, the tests skipped and why, then one line `N passed, N failed, N skipped`. A skipped suite
// counts once (its tests are not registered). A cancelled test counts as failed.
import type { TestEvent } from 'node:test/reporters';

export default async function* summary(source: AsyncIterable<TestEvent>): AsyncGenerator<string> {
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  const reasons = new Map<string, number>();
  const skip = (reason: string) => {
    skipped++;
    reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
  };
  for await (const event of source) {
    if (event.type === 'test:pass') {
      const { skip: s, todo, details } = event.data;
      if (s !== undefined && s !== false) skip(typeof s === 'string' ? s : '(no reason given)');
      else if (todo !== undefined && todo !== false) skip(`todo: ${typeof todo === 'string' ? todo : '(no reason given)'}`);
      else if (details.type !== 'suite') passed++;
    } else if (event.type === 'test:fail') {
      const { details } = event.data;
      const failureType = (details.error as { failureType?: string } | undefined)?.failureType;
      // A suite that failed only because tests in it failed is not counted again.
      if (details.type !== 'suite' || failureType !== 'subtestsFailed') failed++;
    }
  }
  let out = `\n== skipped: ${skipped}\n`;
  for (const [reason, n] of [...reasons].sort((a, b) => b[1] - a[1])) out += `  ${n} × ${reason}\n`;
  out += `${passed} passed, ${failed} failed, ${skipped} skipped\n`;
  yield out;
}
