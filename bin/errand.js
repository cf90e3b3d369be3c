#!/usr/bin/env node
// Errand's command line. Needs Node.js 24 or newer (it runs the TypeScript sources directly).
const [major] = process.versions.node.split('.').map(Number);
if (major < 24) {
  console.error(
    `errand needs Node.js 24 or newer; this is ${process.version}. Inside the project, run it through npm scripts or ./node_modules/.bin/node.`,
  );
  process.exit(1);
}
await import('../src/cli/main.ts');
