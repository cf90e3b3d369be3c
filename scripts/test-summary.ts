// A node:test reporter (beside the spec reporter) that counts what ran: `npm test` prints its output
// last, the tests skipped and why, then one line `N passed, N failed, N skipped`. A skipped suite
// counts once (its tests are not registered). A cancelled test counts as failed.
//
// In CI (`CI` set to true, 1 or yes, as `.ci/run` does) every test must run: each skipped test is
// listed by name, file and line with its reason, and `npm test` (scripts/test.ts) fails the run when
// the count line says anything was skipped, so the count cannot grow unseen.
import type { TestEvent } from 'node:test/reporters';
import { relative } from 'node:path';

export const IN_CI = /^(true|1|yes)$/i.test(process.env.CI ?? '');

/** The counts of the last line of the summary, or undefined when `text` has none. */
export function parseCounts(text: string): { passed: number; failed: number; skipped: number } | undefined {
  const m = /(\d+) passed, (\d+) failed, (\d+) skipped\s*$/.exec(text);
  return m ? { passed: Number(m[1]), failed: Number(m[2]), skipped: Number(m[3]) } : undefined;
}

export default async function* summary(source: AsyncIterable<TestEvent>): AsyncGenerator<string> {
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  const reasons = new Map<string, number>();
  const skippedTests: string[] = [];
  for await (const event of source) {
    if (event.type === 'test:pass') {
      const { skip: s, todo, details, name, file, line } = event.data;
      let reason: string | undefined;
      if (s !== undefined && s !== false) reason = typeof s === 'string' ? s : '(no reason given)';
      else if (todo !== undefined && todo !== false) reason = `todo: ${typeof todo === 'string' ? todo : '(no reason given)'}`;
      if (reason !== undefined) {
        skipped++;
        reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
        const where = file ? `${relative(process.cwd(), file)}${line ? `:${line}` : ''}` : '(no file)';
        skippedTests.push(`${where} ${details.type === 'suite' ? 'suite' : 'test'} "${name}": ${reason}`);
      } else if (details.type !== 'suite') passed++;
    } else if (event.type === 'test:fail') {
      const { details } = event.data;
      const failureType = (details.error as { failureType?: string } | undefined)?.failureType;
      // A suite that failed only because tests in it failed is not counted again.
      if (details.type !== 'suite' || failureType !== 'subtestsFailed') failed++;
    }
  }
  let out = `\n== skipped: ${skipped}\n`;
  for (const [reason, n] of [...reasons].sort((a, b) => b[1] - a[1])) out += `  ${n} × ${reason}\n`;
  if (IN_CI && skipped > 0) {
    out += `\nCI is set: every test must run, and ${skipped} did not (this fails the run):\n`;
    for (const t of skippedTests) out += `  ${t}\n`;
  }
  out += `${passed} passed, ${failed} failed, ${skipped} skipped\n`;
  yield out;
}
