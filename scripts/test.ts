// `npm test`: type check, lint, then every test file with Node's test runner.
// Extra arguments select test files, e.g. `npm test -- test/worker.test.ts`.
import { spawnSync } from 'node:child_process';
import { globSync } from 'node:fs';

const node = process.execPath;
const bin = (name: string) => new URL(`../node_modules/.bin/${name}`, import.meta.url).pathname;
const args = process.argv.slice(2);

function step(title: string, cmd: string, cmdArgs: string[]): void {
  process.stdout.write(`\n== ${title}\n`);
  const r = spawnSync(cmd, cmdArgs, { stdio: 'inherit' });
  if (r.status !== 0) {
    process.stdout.write(`\n${title} failed (exit ${r.status ?? r.signal})\n`);
    process.exit(r.status ?? 1);
  }
}

if (args.length === 0) {
  step('type check (tsc)', bin('tsc'), ['-p', '.']);
  step('type check, dashboard browser code (tsc)', bin('tsc'), ['-p', 'src/dashboard']);
  step('lint and format (biome)', bin('biome'), ['check', '.']);
}
const files = args.length ? args : globSync('test/**/*.test.ts').sort();
step(`tests (${files.length} files)`, node, ['--test', '--test-concurrency=2', '--test-timeout=180000', '--test-reporter=spec', ...files]);
