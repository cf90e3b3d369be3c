// The package as its users get it: `npm pack` (which builds dist/ through `prepack`), the tarball
// installed into an empty project, and used there from ESM, CommonJS, TypeScript and the command
// line, on Node.js 24 (this project's) and on the oldest release of each supported line, 22.20.0
// and 24.7.0 (package.json `engines`; the npm registry's `node` package, kept in .tmp/node-<version>
// between runs): the releases before them cannot run the SQLite broker (bin/node-version.js). Then publint and @arethetypeswrong/cli on the tarball, and the README's
// and docs/http.md's TypeScript blocks compiled as written against the installed package.
import assert from 'node:assert/strict';
import { type SpawnSyncReturns, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
/** The oldest supported release of each Node.js line (package.json `engines`). */
const OLDEST = ['22.20.0', '24.7.0'];
const nodeDir = (version: string) => join(ROOT, `.tmp/node-${version}`);
const nodeBin = (version: string) => join(nodeDir(version), 'node_modules/node/bin/node');
const bin = (name: string) => join(ROOT, 'node_modules/.bin', name);
/** The version this repository has installed, so that the consumer's install hits npm's cache. */
const installed = (name: string) =>
  `${name}@${(JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version}`;

let work = '';
/** errand and zod alone: the runtime checks (and that Fastify is optional). */
let project = '';
/** errand with its optional peers (Fastify and plugins): the TypeScript checks and errand/http. */
let full = '';
let tarball = '';
const PEERS = ['fastify', 'fastify-type-provider-zod', '@fastify/swagger', '@fastify/swagger-ui', '@fastify/rate-limit'];

function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {},
): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, {
    cwd: opts.cwd ?? project,
    env: opts.env ?? process.env,
    encoding: 'utf8',
    timeout: opts.timeout ?? 120_000,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

function ok(r: SpawnSyncReturns<string>, what: string): string {
  assert.equal(r.status, 0, `${what} failed (exit ${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** An environment whose `node` (for `#!/usr/bin/env node` and npx) is the given binary. */
function envWith(node: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `${dirname(node)}${delimiter}${process.env.PATH ?? ''}`, LOG_LEVEL: 'warn', ...extra };
}

const npm = (args: string[], cwd: string) =>
  ok(run('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd, timeout: 300_000 }), `npm ${args.join(' ')}`);

const TASKS_TS = `import { z } from 'zod';
import { createErrand } from 'errand';

export const errand = createErrand();

export const add = errand.task('add', { input: z.object({ a: z.number(), b: z.number() }) }, async ({ a, b }) => ({ sum: a + b }));
`;

// Defines a task, enqueues, runs a worker in the same process on the SQLite broker, prints the result.
const ESM = `import { z } from 'zod';
import { createErrand } from 'errand';

const errand = createErrand({ broker: 'sqlite:' + process.argv[2] });
const add = errand.task('add', { input: z.object({ a: z.number(), b: z.number() }) }, async ({ a, b }) => ({ sum: a + b }));
const worker = await errand.worker({ concurrency: 2 }).start();
const run = await add.enqueue({ a: 2, b: 3 });
console.log(JSON.stringify(await run.result({ timeout: 60_000 })));
await worker.stop();
await errand.close();
`;

const CJS = `const { z } = require('zod');
const { createErrand } = require('errand');

async function main() {
  const errand = createErrand({ broker: 'sqlite:' + process.argv[2] });
  const add = errand.task('add', { input: z.object({ a: z.number(), b: z.number() }) }, async ({ a, b }) => ({ sum: a + b }));
  const worker = await errand.worker({ concurrency: 2 }).start();
  const run = await add.enqueue({ a: 4, b: 5 });
  console.log(JSON.stringify(await run.result({ timeout: 60_000 })));
  await worker.stop();
  await errand.close();
}
main().catch((err) => { console.error(err); process.exit(1); });
`;

// Enqueues into the module that `errand worker ./tasks.ts` runs, and waits for the worker's result.
/** errand/celery from ESM and CommonJS: a Celery message built and read back, without Redis. */
const CELERY_MJS = `import { buildMessage, decodeMessage, createCeleryClient } from 'errand/celery';
const m = decodeMessage(JSON.stringify(buildMessage('tasks.add', { args: [2, 3], queue: 'celery' })));
let refused = '';
try { createCeleryClient({ url: 'amqp://x' }); } catch (e) { refused = e.name; }
console.log(JSON.stringify({ task: m.task, args: m.args, refused }));
`;
const CELERY_CJS = `const { decodeMessage, buildMessage } = require('errand/celery');
console.log(JSON.stringify(decodeMessage(JSON.stringify(buildMessage('t', { kwargs: { a: 1 }, queue: 'q' }))).kwargs));
`;

const ENQUEUE = `import { add, errand } from './tasks.ts';
const run = await add.enqueue({ a: 20, b: 22 });
console.log(JSON.stringify(await run.result({ timeout: 60_000 })));
await errand.close();
`;

const GOOD_TS = `import { z } from 'zod';
import { createErrand, type RunHandle, InputError } from 'errand';

const errand = createErrand();
const add = errand.task('add', { input: z.object({ a: z.number(), b: z.number() }) }, async ({ a, b }) => ({ sum: a + b }));
const run = await add.enqueue({ a: 1, b: 2 });
const out: { sum: number } = await run.result();
const handle: RunHandle<{ sum: number }> = run;
console.log(out.sum, handle.id, InputError.name);
`;

const BAD_TS = `import { z } from 'zod';
import { createErrand } from 'errand';

const errand = createErrand();
const add = errand.task('add', { input: z.object({ amount: z.number(), b: z.number() }) }, async ({ amount, b }) => amount + b);
await add.enqueue({ amount: 'ten', b: 2 });
`;

const tsconfig = (moduleResolution: 'nodenext' | 'bundler', files: string[]) =>
  JSON.stringify({
    compilerOptions: {
      target: 'es2022',
      module: moduleResolution === 'nodenext' ? 'nodenext' : 'esnext',
      moduleResolution,
      strict: true,
      noEmit: true,
      allowImportingTsExtensions: true,
      types: ['node'],
      lib: ['es2024', 'dom'],
      // nodenext also checks every declaration file (Errand's among them); bundler trusts them (faster).
      skipLibCheck: moduleResolution === 'bundler',
    },
    files,
  });

/** The ```ts blocks of a Markdown file; fragments (no import line) are left out. */
function tsBlocks(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  return [...text.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1] ?? '').filter((b) => /^import /m.test(b));
}

/** Writes each block to a file: the name its first line gives (`// tasks.ts`), else prefix-N.ts. */
function writeBlocks(blocks: string[], prefix: string, dir: string): string[] {
  mkdirSync(dir, { recursive: true });
  return blocks.map((block, i) => {
    const name = /^\/\/ ([\w.-]+\.ts)\n/.exec(block)?.[1] ?? `${prefix}-${i + 1}.ts`;
    writeFileSync(join(dir, name), block);
    return name;
  });
}

function tsc(config: string, dir = project): SpawnSyncReturns<string> {
  return run(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', config, '--pretty', 'true'], { cwd: dir });
}

before(
  async () => {
    work = mkdtempSync(join(tmpdir(), 'errand-consumer-'));
    project = join(work, 'app');
    full = join(work, 'full');
    mkdirSync(project);
    mkdirSync(full);
    // `npm pack` runs `prepack` (scripts/pack-manifest.mjs), which builds: the tarball holds a dist/
    // built from the sources as they are now.
    const packed = npm(['pack', '--pack-destination', work], ROOT).trim().split('\n').pop() ?? '';
    tarball = join(work, packed);
    assert.ok(existsSync(tarball), `npm pack made no ${tarball}`);

    for (const version of OLDEST) {
      if (existsSync(nodeBin(version)) && run(nodeBin(version), ['-v'], { cwd: ROOT }).stdout.trim() === `v${version}`) continue;
      rmSync(nodeDir(version), { recursive: true, force: true });
      mkdirSync(nodeDir(version), { recursive: true });
      writeFileSync(join(nodeDir(version), 'package.json'), '{"private":true}\n');
      npm(['install', '--no-package-lock', '--foreground-scripts', `node@${version}`], nodeDir(version));
    }

    writeFileSync(join(project, 'package.json'), '{"name":"consumer","private":true,"type":"module"}\n');
    // A bare install: errand, its peer zod, and Node's types for tsc; no Fastify.
    npm(['install', '--prefer-offline', tarball, installed('zod'), installed('@types/node')], project);
    writeFileSync(join(project, 'tasks.ts'), TASKS_TS);
    writeFileSync(join(project, 'esm.mjs'), ESM);
    writeFileSync(join(project, 'cjs.cjs'), CJS);
    writeFileSync(join(project, 'enqueue.mjs'), ENQUEUE);
    writeFileSync(join(project, 'celery.mjs'), CELERY_MJS);
    writeFileSync(join(project, 'celery.cjs'), CELERY_CJS);

    writeFileSync(join(full, 'package.json'), '{"name":"consumer-full","private":true,"type":"module"}\n');
    npm(['install', '--prefer-offline', tarball, installed('zod'), installed('@types/node'), ...PEERS.map(installed)], full);
  },
  { timeout: 900_000 },
);

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

const NODES = [
  { name: 'Node 24', node: () => process.execPath, version: /^v24\./ },
  ...OLDEST.map((v) => ({ name: `Node ${v}`, node: () => nodeBin(v), version: new RegExp(`^v${v.replace(/\./g, '\\.')}$`) })),
];

for (const { name, node, version } of NODES) {
  describe(`the installed package on ${name}`, () => {
    test('runs that Node', () => {
      const v = ok(run(node(), ['-v']), 'node -v').trim();
      assert.match(v, version);
    });

    test('ESM: a task enqueued, run by a worker on the SQLite broker, its result', () => {
      const out = ok(run(node(), ['esm.mjs', join(work, `esm-${name}.db`)], { env: envWith(node()) }), 'esm.mjs');
      assert.deepEqual(JSON.parse(out.trim().split('\n').pop() ?? ''), { sum: 5 });
    });

    test("CommonJS: require('errand'), the same", () => {
      const r = run(node(), ['cjs.cjs', join(work, `cjs-${name}.db`)], { env: envWith(node()) });
      const out = ok(r, 'cjs.cjs');
      assert.deepEqual(JSON.parse(out.trim().split('\n').pop() ?? ''), { sum: 9 });
      assert.doesNotMatch(r.stderr, /ExperimentalWarning/, 'require(esm) should not warn');
    });

    test('errand/celery: imported from ESM and required from CommonJS', () => {
      const esm = ok(run(node(), ['celery.mjs'], { env: envWith(node()) }), 'celery.mjs');
      assert.deepEqual(JSON.parse(esm.trim().split('\n').pop() ?? ''), { task: 'tasks.add', args: [2, 3], refused: 'ConfigError' });
      const cjs = ok(run(node(), ['celery.cjs'], { env: envWith(node()) }), 'celery.cjs');
      assert.deepEqual(JSON.parse(cjs.trim().split('\n').pop() ?? ''), { a: 1 });
    });

    test('npx errand --help and --version', () => {
      const env = envWith(node());
      assert.match(ok(run('npx', ['--no-install', 'errand', '--help'], { env }), 'errand --help'), /Usage: errand <command>/);
      assert.equal(ok(run('npx', ['--no-install', 'errand', '--version'], { env }), 'errand --version').trim(), PKG.version);
    });

    test('npx errand worker ./tasks.ts runs the runs of a TypeScript task module', async () => {
      const env = envWith(node(), { ERRAND_BROKER_URL: `sqlite:${join(work, `worker-${name}.db`)}` });
      // Its own process group, so that the signal reaches errand and not only npx.
      const worker = spawn('npx', ['--no-install', 'errand', 'worker', './tasks.ts'], {
        cwd: project,
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      let log = '';
      worker.stdout.on('data', (d) => {
        log += d;
      });
      worker.stderr.on('data', (d) => {
        log += d;
      });
      // 'close': every process holding the pipes (npx and the errand it starts) has ended.
      const closed = new Promise<void>((resolve) => worker.on('close', () => resolve()));
      try {
        const r = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
          const c = spawn(node(), ['enqueue.mjs'], { cwd: project, env, stdio: ['ignore', 'pipe', 'pipe'] });
          let out = '';
          let err = '';
          c.stdout.on('data', (d) => {
            out += d;
          });
          c.stderr.on('data', (d) => {
            err += d;
          });
          c.on('exit', (code) => resolve({ code, out, err }));
        });
        assert.equal(r.code, 0, `enqueue.mjs failed: ${r.out}\n${r.err}\nworker: ${log}`);
        assert.deepEqual(JSON.parse(r.out.trim().split('\n').pop() ?? ''), { sum: 42 });
      } finally {
        if (worker.pid) process.kill(-worker.pid, 'SIGTERM');
      }
      // SIGTERM (to npx and errand) stops the worker; npx itself dies of the signal.
      await closed;
      assert.doesNotMatch(log, /"level":(50|60)/, `worker: ${log}`);
    });

    test('errand worker ./tasks.ts on a Node that does not strip types says what to do', () => {
      const r = run(node(), ['--no-experimental-strip-types', 'node_modules/errand/bin/errand.js', 'worker', './tasks.ts'], {
        env: envWith(node()),
      });
      assert.equal(r.status, 2, r.stderr);
      assert.match(
        r.stderr,
        /tasks\.ts is TypeScript, and this Node\.js \(v[\d.]+\) runs with type stripping turned off: drop --no-experimental-strip-types/,
      );
    });

    test('errand dashboard without Fastify names the package to install', () => {
      const r = run(node(), ['node_modules/errand/bin/errand.js', 'dashboard', '--port', '0'], { env: envWith(node()) });
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /needs the package "fastify".*npm install fastify/);
    });
  });
}

describe('the installed package in TypeScript', () => {
  // One tsc run per resolution: a correct consumer, the README's and docs/http.md's blocks, and a
  // consumer that passes a wrong input type, which must be the only error, naming the field.
  for (const resolution of ['nodenext', 'bundler'] as const) {
    test(`moduleResolution ${resolution}: the README's and docs/http.md's blocks compile; a wrong input type to enqueue fails, naming the field`, () => {
      writeFileSync(join(full, 'good.ts'), GOOD_TS);
      writeFileSync(join(full, 'bad.ts'), BAD_TS);
      const readme = writeBlocks(tsBlocks('README.md'), 'readme', join(full, 'readme'));
      assert.ok(readme.includes('tasks.ts'), `README blocks: ${readme.join(', ')}`);
      const http = writeBlocks(tsBlocks('docs/http.md'), 'http', join(full, 'http'));
      assert.ok(http.length >= 2, `docs/http.md blocks: ${http.join(', ')}`);
      const config = `tsconfig.${resolution}.json`;
      writeFileSync(
        join(full, config),
        tsconfig(resolution, ['good.ts', 'bad.ts', ...readme.map((f) => `readme/${f}`), ...http.map((f) => `http/${f}`)]),
      );
      const r = tsc(config, full);
      // biome-ignore lint/suspicious/noControlCharactersInRegex: tsc's colours
      const out = r.stdout.replace(/\x1b\[[0-9;]*m/g, '');
      const errors = out.split('\n').filter((l) => /error TS\d+/.test(l));
      assert.equal(errors.length, 1, `expected only bad.ts's error:\n${out}`);
      assert.match(errors[0] ?? '', /^bad\.ts:6:\d+ - error TS2322: Type 'string' is not assignable to type 'number'/);
      assert.match(out, /The expected type comes from property 'amount'/);
    });
  }
});

/** Every entry point's declarations, each checked in full (skipLibCheck false below). */
const ALL_ENTRIES_TS = `import { createErrand } from 'errand';
import { createServer } from 'errand/http';
import { dashboardPlugin } from 'errand/dashboard';
import { createTesting } from 'errand/testing';
import { buildMessage } from 'errand/celery';

const errand = createErrand();
const t = createTesting(errand);
console.log(typeof createServer, typeof dashboardPlugin, buildMessage('t', { queue: 'q' }).headers.task);
await t.close();
`;

// Node's types change between their major versions (26's EventEmitter no longer accepts a subclass
// that overrides emit): the declarations must compile against the oldest supported line's and the
// newest published, not only the 24 this repository uses (the test above).
for (const types of ['22', 'latest']) {
  describe(`the installed package against @types/node@${types}`, () => {
    let dir = '';
    before(
      () => {
        dir = join(work, `types-node-${types}`);
        mkdirSync(dir);
        writeFileSync(join(dir, 'package.json'), '{"name":"consumer-types","private":true,"type":"module"}\n');
        npm(['install', '--prefer-offline', tarball, installed('zod'), `@types/node@${types}`, ...PEERS.map(installed)], dir);
      },
      { timeout: 300_000 },
    );

    test('every entry point type-checks with skipLibCheck false', () => {
      writeFileSync(join(dir, 'all.ts'), ALL_ENTRIES_TS);
      writeFileSync(
        join(dir, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: {
            target: 'es2022',
            module: 'nodenext',
            moduleResolution: 'nodenext',
            strict: true,
            noEmit: true,
            types: ['node'],
            skipLibCheck: false,
          },
          files: ['all.ts'],
        }),
      );
      const version = (JSON.parse(readFileSync(join(dir, 'node_modules/@types/node/package.json'), 'utf8')) as { version: string }).version;
      const r = tsc('tsconfig.json', dir);
      assert.equal(r.status, 0, `tsc against @types/node ${version}:\n${r.stdout}${r.stderr}`);
    });
  });
}

describe('the tarball', () => {
  test('holds dist, the Lua scripts, the dashboard, README, LICENSE and CHANGELOG; no sources, tests or app', () => {
    const files = ok(run('tar', ['-tzf', tarball]), 'tar')
      .trim()
      .split('\n');
    for (const f of ['package/dist/index.js', 'package/dist/index.d.ts', 'package/dist/index.js.map', 'package/dist/http/index.js']) {
      assert.ok(files.includes(f), f);
    }
    assert.ok(files.includes('package/dist/broker/redis/lua/reserve.lua'));
    assert.ok(files.includes('package/dist/dashboard/dist/index.html'));
    for (const f of ['package/README.md', 'package/LICENSE', 'package/CHANGELOG.md', 'package/bin/errand.js'])
      assert.ok(files.includes(f), f);
    const stray = files.filter(
      (f) => /^package\/(src|test|bench|app|examples|scripts|docs)\//.test(f) || (f.endsWith('.ts') && !f.endsWith('.d.ts')),
    );
    assert.deepEqual(stray, []);
  });

  test("its package.json has no `prepare` (an install script to npm 11's allowScripts); the repository's keeps it", () => {
    const packed = JSON.parse(ok(run('tar', ['-xzOf', tarball, 'package/package.json']), 'tar')) as { scripts?: Record<string, string> };
    assert.equal(packed.scripts?.prepare, undefined);
    for (const hook of ['preinstall', 'install', 'postinstall']) assert.equal(packed.scripts?.[hook], undefined, hook);
    const own = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    assert.equal(own.scripts.prepare, 'node scripts/build.mjs', 'postpack put it back: npm ci still builds dist/');
  });

  test('publint reports no problem', () => {
    const out = ok(run(process.execPath, [bin('publint'), 'run', '--strict', tarball], { cwd: ROOT }), 'publint');
    assert.match(out, /All good/);
  });

  test('@arethetypeswrong/cli reports no problem (ESM-only profile: see the README)', () => {
    ok(run(process.execPath, [bin('attw'), '--profile', 'esm-only', tarball], { cwd: ROOT }), 'attw');
  });
});

describe('errand/http with its optional peers installed', () => {
  test('createServer answers, on Node 24 and 22', () => {
    const script = `import { z } from 'zod';
import { createErrand } from 'errand';
import { createServer } from 'errand/http';
const errand = createErrand({ broker: 'sqlite:' + process.argv[2] });
errand.task('add', { input: z.object({ a: z.number() }) }, async ({ a }) => a);
const app = await createServer({ errand, logger: false });
const res = await app.inject({ method: 'POST', url: '/tasks/add', payload: { a: 1 } });
console.log(res.statusCode);
await app.close();
await errand.close();
`;
    writeFileSync(join(full, 'http.mjs'), script);
    for (const { name, node } of NODES) {
      const out = ok(run(node(), ['http.mjs', join(work, `http-${name}.db`)], { cwd: full, env: envWith(node()) }), `http.mjs on ${name}`);
      assert.equal(out.trim().split('\n').pop(), '202', name);
    }
  });
});

describe('errand/http with fastify and its zod type provider only', () => {
  before(() => {
    npm(['install', '--prefer-offline', installed('fastify'), installed('fastify-type-provider-zod')], project);
  });

  test('createServer with docs names the missing plugin and how to do without; with docs: false it serves', () => {
    const script = `import { z } from 'zod';
import { createErrand } from 'errand';
import { createServer } from 'errand/http';
const errand = createErrand({ broker: 'sqlite:' + process.argv[2] });
errand.task('add', { input: z.object({ a: z.number() }) }, async ({ a }) => a);
try {
  await createServer({ errand, logger: false });
  console.log('created');
} catch (err) {
  console.log(err.name + ': ' + err.message);
}
const app = await createServer({ errand, logger: false, docs: false });
console.log((await app.inject({ method: 'POST', url: '/tasks/add', payload: { a: 1 } })).statusCode);
await app.close();
await errand.close();
`;
    writeFileSync(join(project, 'http-bare.mjs'), script);
    const out = ok(
      run(process.execPath, ['http-bare.mjs', join(work, 'http-bare.db')], { env: envWith(process.execPath) }),
      'http-bare.mjs',
    );
    const [first, last] = out.trim().split('\n');
    assert.match(
      first ?? '',
      /^ConfigError: createServer .* needs the package "@fastify\/swagger(-ui)?".*npm install @fastify\/swagger @fastify\/swagger-ui, or pass docs: false$/,
    );
    assert.equal(last, '202');
  });
});
