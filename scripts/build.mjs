// `npm run build`, and `prepare` (so `npm ci` builds it): the package's dist/.
//   1. the dashboard's front end (scripts/build-dashboard.mjs: Vite, into src/dashboard/dist);
//   2. src/ compiled by tsc (tsconfig.build.json) into dist/: ESM JavaScript, .d.ts, source maps;
//   3. the files the compiled modules read at run time, copied next to them: the Redis broker's Lua
//      scripts (dist/broker/redis/lua) and the dashboard's built front end (dist/dashboard/dist).
// The sources find those files at the same relative paths, so src/ and dist/ run alike.
// Plain JavaScript, like build-dashboard.mjs: a production install (`npm ci --omit=dev`) runs
// `prepare` without TypeScript or Vite; it then keeps an existing dist/ and says so.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../', import.meta.url));
const dist = join(root, 'dist');
const tsc = join(root, 'node_modules/typescript/bin/tsc');

function run(args) {
  const r = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: root });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

run([join(root, 'scripts/build-dashboard.mjs')]);

if (!existsSync(tsc)) {
  process.stdout.write(
    `errand: TypeScript is not installed (a production install?), so dist/ was not built; ${
      existsSync(join(dist, 'index.js')) ? 'the existing dist/ is kept' : 'run `npm run build` with dev dependencies'
    }\n`,
  );
  process.exit(0);
}

rmSync(dist, { recursive: true, force: true });
run([tsc, '-p', join(root, 'tsconfig.build.json')]);

// tsc rewrites `./x.ts` to `./x.js` in the JavaScript (rewriteRelativeImportExtensions) but keeps
// `.ts` in declarations; consumers' TypeScript expects the `.js` specifiers that sit next to them.
const specifier = /(from\s+|import\s*\(\s*)(['"])(\.\.?\/[^'"]*?)\.ts\2/g;
for (const entry of readdirSync(dist, { recursive: true })) {
  if (!entry.endsWith('.d.ts')) continue;
  const file = join(dist, entry);
  const text = readFileSync(file, 'utf8');
  const out = text.replace(specifier, (_, head, q, path) => `${head}${q}${path}.js${q}`);
  if (out !== text) writeFileSync(file, out);
}

cpSync(join(root, 'src/broker/redis/lua'), join(dist, 'broker/redis/lua'), { recursive: true });
if (existsSync(join(root, 'src/dashboard/dist/index.html'))) {
  cpSync(join(root, 'src/dashboard/dist'), join(dist, 'dashboard/dist'), { recursive: true });
}
