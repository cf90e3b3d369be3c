// `npm test`'s end-of-run summary (scripts/test-summary.ts, printed by scripts/test.ts): the skipped
// tests and why, then the count line last; and in CI (CI=true) a skipped test fails the run, named
// with its file and reason, so the skip count cannot grow unseen.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const FIXTURE = 'test/fixtures/skipping-tests.ts';

function npmTest(ci: boolean) {
  const env: NodeJS.ProcessEnv = { ...process.env, ERRAND_SKIPPING_FIXTURE: '1' };
  delete env.CI;
  if (ci) env.CI = 'true';
  // node --test's own reporter options must not leak into the nested run.
  delete env.NODE_TEST_CONTEXT;
  const r = spawnSync(process.execPath, ['scripts/test.ts', FIXTURE], { cwd: ROOT, env, encoding: 'utf8', timeout: 120_000 });
  const lines = r.stdout.trimEnd().split('\n');
  return { status: r.status, out: r.stdout, last: lines.at(-1) };
}

describe('the test summary', () => {
  it('ends with the counts, after the skipped tests and why; outside CI a skip does not fail the run', () => {
    const r = npmTest(false);
    assert.equal(r.last, '1 passed, 0 failed, 1 skipped', r.out);
    assert.match(r.out, /== skipped: 1\n {2}1 × a prerequisite the fixture pretends is missing\n/);
    assert.doesNotMatch(r.out, /CI is set/);
    assert.equal(r.status, 0, r.out);
  });

  it('in CI, fails the run naming each skipped test, its file and its reason, the counts still last', () => {
    const r = npmTest(true);
    assert.equal(r.last, '1 passed, 0 failed, 1 skipped', r.out);
    assert.match(r.out, /CI is set: every test must run, and 1 did not \(this fails the run\):\n/);
    assert.match(r.out, /test\/fixtures\/skipping-tests\.ts:7 test "is skipped": a prerequisite the fixture pretends is missing\n/);
    assert.equal(r.status, 1, r.out);
  });
});
