#!/usr/bin/env node
// Errand's command line: the compiled CLI in dist/ (built by `npm run build`, which `npm ci` runs).
import { requireNode } from './node-version.js';

requireNode('errand');
try {
  await import('../dist/cli/main.js');
} catch (err) {
  if (err?.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('/dist/cli/main.js')) {
    console.error('errand: dist/ is not built: run `npm run build` in the errand package (in its repository, `npm ci` does).');
    process.exit(1);
  }
  throw err;
}
