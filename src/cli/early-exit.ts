/**
 * A stop signal (SIGTERM, SIGINT) that arrives while `errand worker` is still loading (its modules,
 * the task module, the broker URL) ends it at once and cleanly, exit 0: it has taken nothing yet.
 * Installed before anything heavy is imported (see main.ts), and ended once the worker's graceful
 * handler is in place (never before: a signal that arrives while a process has no listener for it
 * would be lost, as Node stops watching it).
 */
const early = (signal: NodeJS.Signals): void => {
  process.stderr.write(`errand: ${signal} while starting; nothing was taken, exiting\n`);
  process.exit(0);
};

export function exitOnEarlySignals(): void {
  process.once('SIGTERM', early);
  process.once('SIGINT', early);
}

export function endEarlySignalExit(): void {
  process.off('SIGTERM', early);
  process.off('SIGINT', early);
}
