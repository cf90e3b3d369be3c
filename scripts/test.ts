// `npm test`: type check, lint, then every test file with Node's test runner.
// Extra arguments select test files, e.g. `npm test -- test/worker/worker.test.ts`.
import { spawnSync } from 'node:child_process';
import { globSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const node = process.execPath;
const bin = (name: string) => new URL(`../node_modules/.bin/${name}`, import.meta.url).pathname;
const args = process.argv.slice(2);

function step(title: string, cmd: string, cmdArgs: string[], after?: () => void): void {
  process.stdout.write(`\n== ${title}\n`);
  const r = spawnSync(cmd, cmdArgs, { stdio: 'inherit' });
  if (r.status !== 0) process.stdout.write(`\n${title} failed (exit ${r.status ?? r.signal})\n`);
  after?.();
  if (r.status !== 0) process.exit(r.status ?? 1);
}

if (args.length === 0) {
  step('type check (tsc)', bin('tsc'), ['-p', '.']);
  step('type check, dashboard browser code (tsc)', bin('tsc'), ['-p', 'src/dashboard']);
  step('lint and format (biome)', bin('biome'), ['check', '.']);
}
const files = args.length ? args : globSync('test/**/*.test.ts').sort();
// The spec reporter to the terminal; the summary reporter (skips and why, then the counts) to a file
// printed at the very end, so that its last line is the last line of the output.
const summaryDir = mkdtempSync(join(tmpdir(), 'errand-test-summary-'));
const summaryFile = join(summaryDir, 'summary.txt');
const printSummary = () => {
  try {
    process.stdout.write(readFileSync(summaryFile, 'utf8'));
  } catch {
    process.stdout.write('\n(no test summary was written)\n');
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
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    `--test-reporter=${new URL('./test-summary.ts', import.meta.url).pathname}`,
    `--test-reporter-destination=${summaryFile}`,
    ...files,
  ],
  printSummary,
);
