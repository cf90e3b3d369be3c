// Every entry point checks the Node.js version first (bin/node-version.js) and says in one line
// what to run instead, rather than failing deep inside with a message about .ts files.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { nodeSupported } from '../../bin/node-version.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const SYSTEM_NODE = ['/usr/bin/node', '/usr/local/bin/node'].find((p) => existsSync(p) && p !== process.execPath);

describe('the Node.js version check', () => {
  it('refuses an older Node.js with one line saying what to run instead, exit 1', () => {
    const r = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        "import { requireNode } from './bin/node-version.js'; requireNode('errand', '20.20.2'); console.log('ran');",
      ],
      { cwd: ROOT, encoding: 'utf8' },
    );
    assert.equal(r.status, 1);
    assert.equal(r.stdout, '');
    assert.match(
      r.stderr,
      /^errand needs Node\.js 22\.20 or newer \(22 LTS\), or 24\.7 or newer; this is v20\.20\.2\. Install one of those and put it on the PATH; in Errand's own repository, use the Node\.js that its npm ci installs: npx errand \.\.\., the npm scripts \(npm start, npm run worker\), or \.\/node_modules\/\.bin\/node\.\n$/,
    );
  });

  for (const [version, ok] of [
    ['22.12.0', false],
    // 22.13 to 22.19 and 24.0 to 24.6 load, but their node:sqlite cannot bind `?1` (the SQLite broker).
    ['22.19.0', false],
    ['22.20.0', true],
    ['23.11.0', false],
    ['24.6.0', false],
    ['24.7.0', true],
    ['25.0.0', true],
  ] as const) {
    it(`${ok ? 'lets' : 'refuses'} Node.js ${version} ${ok ? 'through' : ''}`, () => {
      const r = spawnSync(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `import { requireNode } from './bin/node-version.js'; requireNode('errand', '${version}'); console.log('ran');`,
        ],
        { cwd: ROOT, encoding: 'utf8' },
      );
      assert.equal(r.status, ok ? 0 : 1, r.stderr);
      assert.equal(r.stdout, ok ? 'ran\n' : '');
    });
  }

  it('is the first thing every entry point does', () => {
    const entries: [string, string][] = [
      ['bin/errand.js', 'errand'],
      ['src/cli/main.ts', 'errand'],
      ['app/main.ts', 'node app/main.ts'],
      ['app/celery-worker.ts', 'node app/celery-worker.ts'],
    ];
    for (const [file, what] of entries) {
      const code = readFileSync(new URL(`../../${file}`, import.meta.url), 'utf8');
      const firstImport = /^import .* from '(.*)';$/m.exec(code)?.[1] ?? '';
      assert.match(firstImport, /bin\/node-version\.js$|^\.\/node-version\.js$/, `${file} imports the check first`);
      assert.match(code, new RegExp(`requireNode\\('${what.replace(/\./g, '\\.')}'\\)`), `${file} calls it`);
    }
  });

  it(`bin/errand.js on the machine's older Node.js says what to run instead`, {
    skip: !SYSTEM_NODE && 'no other node on this machine',
  }, () => {
    const version = spawnSync(SYSTEM_NODE!, ['-p', 'process.versions.node'], { encoding: 'utf8' }).stdout.trim();
    const r = spawnSync(SYSTEM_NODE!, ['bin/errand.js', 'help'], { cwd: ROOT, encoding: 'utf8' });
    if (nodeSupported(version)) return assert.equal(r.status, 0, r.stderr);
    assert.equal(r.status, 1);
    assert.match(
      r.stderr,
      new RegExp(`^errand needs Node\\.js 22\\.20 or newer \\(22 LTS\\), or 24\\.7 or newer; this is v${version.replace(/\./g, '\\.')}\\.`),
    );
  });
});
