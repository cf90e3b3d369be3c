// `prepack` and `postpack`: the package.json that `npm pack` and `npm publish` put in the tarball has
// no `prepare` script. `prepare` is how `npm ci` builds dist/ in this repository (and a git install
// of it), but a published package does not need it (dist/ is in the tarball; scripts/ is not), and
// npm 11 lists a dependency's `prepare` among the install scripts a user must approve
// (`allowScripts`; npm 12 is to block those not approved).
//   prepack:  builds dist/ (what `prepare` would have done), then removes `prepare` from package.json;
//   postpack: puts it back (the tarball is written by then).
// A pack that fails between the two leaves package.json without `prepare`: the next pack (or
// `node scripts/pack-manifest.mjs postpack`) restores it.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The `prepare` script of this repository's package.json. */
export const PREPARE = 'node scripts/build.mjs';

const file = fileURLToPath(new URL('../package.json', import.meta.url));
const read = () => JSON.parse(readFileSync(file, 'utf8'));
const write = (pkg) => writeFileSync(file, `${JSON.stringify(pkg, null, 2)}\n`);

const step = process.argv[2];
if (step === 'prepack') {
  const built = spawnSync(process.execPath, [fileURLToPath(new URL('./build.mjs', import.meta.url))], { stdio: 'inherit' });
  if (built.status !== 0) process.exit(built.status ?? 1);
  const pkg = read();
  delete pkg.scripts.prepare;
  write(pkg);
} else if (step === 'postpack') {
  const pkg = read();
  pkg.scripts.prepare = PREPARE;
  write(pkg);
} else {
  process.stderr.write(`usage: node scripts/pack-manifest.mjs prepack|postpack (got ${JSON.stringify(step ?? '')})\n`);
  process.exit(2);
}
