// The `errand` command line (see commands.ts and docs/cli.md). A worker handles stop signals from
// the first moment, before the commands and their dependencies load (see early-exit.ts).
import { requireNode } from '../../bin/node-version.js';
import { exitOnEarlySignals } from './early-exit.ts';

requireNode('errand');
if (process.argv[2] === 'worker') exitOnEarlySignals();
await import('./commands.ts');
