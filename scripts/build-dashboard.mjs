// `npm run build:dashboard`, and `prepare` (so `npm ci` builds it): bundles the dashboard's front end
// (src/dashboard/ui) with Vite into src/dashboard/dist, which the dashboard plugin serves.
// Plain JavaScript, not TypeScript: a production install (`npm ci --omit=dev`) runs `prepare` with
// whatever Node the machine has and without Vite; it then keeps an existing build and says so.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../', import.meta.url));
const vite = `${root}node_modules/vite/bin/vite.js`;
const extra = process.argv.slice(2);

if (!existsSync(vite)) {
  const built = existsSync(`${root}src/dashboard/dist/index.html`);
  process.stdout.write(
    `errand: Vite is not installed (a production install?), so the dashboard was not built; ${
      built
        ? 'the existing build in src/dashboard/dist is served'
        : '/dashboard will say so until `npm run build:dashboard` runs with dev dependencies'
    }\n`,
  );
  process.exit(0);
}
const r = spawnSync(process.execPath, [vite, 'build', '--config', `${root}src/dashboard/vite.config.ts`, ...extra], {
  stdio: 'inherit',
  cwd: root,
});
process.exit(r.status ?? 1);
