// `npm test`: type check, lint, then every test file with Node's test runner.
// Extra arguments select test files, e.g. `npm test -- test/worker/worker.test.ts`; those that begin
// with `-` go to the test runner, e.g. `npm test -- test/worker/worker.test.ts --test-name-pattern=prefetch`.
import { spawnSync } from 'node:child_process';
import { globSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IN_CI, parseCounts } from './test-summary.ts';

const node = process.execPath;
const bin = (name: string) => new URL(`../node_modules/.bin/${name}`, import.meta.url).pathname;
const args = process.argv.slice(2);
const runnerArgs = args.filter((a) => a.startsWith('-'));
const fileArgs = args.filter((a) => !a.startsWith('-'));

function step(title: string, cmd: string, cmdArgs: string[], after?: () => void): void {
  process.stdout.write(`\n== ${title}\n`);
  const r = spawnSync(cmd, cmdArgs, { stdio: 'inherit' });
  if (r.status !== 0) process.stdout.write(`\n${title} failed (exit ${r.status ?? r.signal})\n`);
  after?.();
  if (r.status !== 0) process.exit(r.status ?? 1);
}

if (fileArgs.length === 0) {
  step('type check (tsc)', bin('tsc'), ['-p', '.']);
  step('type check, dashboard browser code (tsc)', bin('tsc'), ['-p', 'src/dashboard']);
  step('lint and format (biome)', bin('biome'), ['check', '.']);
}
const files = fileArgs.length ? fileArgs : globSync('test/**/*.test.ts').sort();
// The spec reporter to the terminal; the summary reporter (skips and why, then the counts) to a file
// printed at the very end, so that its last line is the last line of the output.
const summaryDir = mkdtempSync(join(tmpdir(), 'errand-test-summary-'));
const summaryFile = join(summaryDir, 'summary.txt');
// In CI a skipped test fails the run (the summary lists each one, by name and file, above its last
// line), and so does a run that wrote no summary (nothing says that every test ran).
let ciFails = false;
const printSummary = () => {
  try {
    const text = readFileSync(summaryFile, 'utf8');
    process.stdout.write(text);
    if (IN_CI) ciFails = (parseCounts(text)?.skipped ?? 1) > 0;
  } catch {
    process.stdout.write('\n(no test summary was written)\n');
    ciFails = IN_CI;
  }
  rmSync(summaryDir, { recursive: true, force: true });
};
step(
  `tests (${files.length} files)`,
  node,
  [
    '--test',
    '--test-concurrency=2',
    '--test-timeout=180000',
    // A file whose tests have all finished exits even if something it started is still running: a
    // test that fails before stopping what it started (a worker, a timer, a socket, a child
    // process) would otherwise keep the file, and the whole run, waiting forever. Tests still stop
    // what they start in a finally block or an after hook. Checked on 2026-12-05 without this flag:
    // every file ended within 3.5 s of its last test (test/conformance/redis.test.ts 17.6 s, its
    // after hook deleting its keys), and the full CI run 0.3 s after its last test, so nothing leaks
    // in a passing run; run a file without it (`node --test ...`) to look for a leak.
    '--test-force-exit',
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    `--test-reporter=${new URL('./test-summary.ts', import.meta.url).pathname}`,
    `--test-reporter-destination=${summaryFile}`,
    ...runnerArgs,
    ...files,
  ],
  printSummary,
);
if (ciFails) process.exit(1);
