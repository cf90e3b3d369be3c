// The `errand` command line (see commands.ts and docs/cli.md). A worker handles stop signals from
// the first moment, before the commands and their dependencies load (see early-exit.ts).
import { exitOnEarlySignals } from './early-exit.ts';

if (process.argv[2] === 'worker') exitOnEarlySignals();
await import('./commands.ts');
