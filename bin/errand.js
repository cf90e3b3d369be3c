#!/usr/bin/env node
// Errand's command line: the compiled CLI in dist/ (built by `npm run build`, which `npm ci` runs).
// Needs Node.js 22.13 or newer (node:sqlite without a flag), as package.json's `engines` says.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 13)) {
  console.error(`errand needs Node.js 22.13 or newer (22 LTS or 24 LTS); this is ${process.version}.`);
  process.exit(1);
}
try {
  await import('../dist/cli/main.js');
} catch (err) {
  if (err?.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('/dist/cli/main.js')) {
    console.error('errand: dist/ is not built: run `npm run build` in the errand package (in its repository, `npm ci` does).');
    process.exit(1);
  }
  throw err;
}
