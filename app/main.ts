/**
 * The service's entry point (FastAPI's `uvicorn main:app` and Celery's `celery -A tasks worker` in one):
 *
 *   node app/main.ts [all|api|worker]
 *
 *   all     the API and a worker in one process (default; with no REDIS_URL both use DATA_DIR/errand.db)
 *   api     the HTTP API only
 *   worker  a worker only (run several, on several machines with REDIS_URL)
 *
 * Configuration comes from the environment (see `config.ts`). A bad value stops start-up with one
 * line naming the variable and exit code 2 (so does a broker that refuses it: wrong credentials, an
 * untrusted certificate, a db index it lacks); a failure to start (database unreachable, port taken)
 * with one line and exit code 1. SIGTERM or SIGINT stops gracefully: the server finishes its
 * requests, the worker its runs (within its grace period, then hands them back); a second signal
 * hands runs back at once. A stop signal that arrives while the service is still starting (before
 * its worker has taken anything) ends it at once, exit 0.
 *
 * In production, run this file with Node.js itself as the process the supervisor signals
 * (`exec node app/main.ts worker`, or `CMD ["node", "app/main.ts", "worker"]` in a Dockerfile): see
 * the README's "In production". The npm scripts `exec` it too, so that npm forwards signals to Node.
 */
// Only the version check and the signal handlers before the service's modules load: a signal that
// arrives while they load (a second or so on a busy machine) must not kill the process with 143.
import { requireNode } from '../bin/node-version.js';

requireNode('node app/main.ts');

const MODES = ['all', 'api', 'worker'] as const;
type Mode = (typeof MODES)[number];

function exit(code: number, message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(code);
}

/** The service once created; until then a stop signal ends the process at once (nothing was taken). */
let service: import('./service.ts').Service | undefined;
let stopping = false;
const stop = (signal: NodeJS.Signals) => {
  if (stopping) return; // a second signal: the worker's own handler hands its runs back at once
  stopping = true;
  if (!service) {
    process.stderr.write(`${signal} while starting; nothing was taken, exiting\n`);
    process.exit(0);
  }
  service.logger.info({ signal }, 'stopping');
  service.stop().then(
    () => process.exit(0),
    (err) => exit(1, `Error while stopping: ${describeError(err)}`),
  );
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

const { ConfigError, BrokerConfigError } = await import('../src/index.ts');
const { loadConfig } = await import('./config.ts');
const { describeError, Service } = await import('./service.ts');

/**
 * A configuration the broker refused (credentials, TLS, a Redis db index it does not have, a CA
 * file it cannot read), as one line naming the variable: the message's own when it starts with one.
 */
function configMessage(err: Error, brokerVariable: string): string {
  return /^[A-Z][A-Z0-9]*_[A-Z0-9_]+[: ]/.test(err.message) ? err.message : `${brokerVariable}: ${err.message}`;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args.length > 1 || args[0] === '-h' || args[0] === '--help' || args[0] === 'help') {
    exit(args.length > 1 ? 2 : 0, 'Usage: node app/main.ts [all|api|worker]   (configuration from the environment: see the README)');
  }
  const mode = (args[0] ?? 'all') as Mode;
  if (!MODES.includes(mode)) exit(2, `Unknown mode ${JSON.stringify(mode)}: use all, api or worker`);

  let created: import('./service.ts').Service;
  let brokerVariable = 'the broker URL';
  try {
    const config = loadConfig(process.env);
    brokerVariable = config.brokerVariable;
    created = await Service.create({ config });
  } catch (err) {
    if (err instanceof ConfigError) exit(2, `Configuration error: ${err.message}`);
    exit(1, `Cannot start: ${describeError(err)}`);
  }
  if (stopping) return;
  service = created;

  try {
    if (mode !== 'api') {
      const worker = await service.startWorker();
      worker.handleSignals();
    }
    if (mode !== 'worker') await service.startApi();
  } catch (err) {
    await service.stop().catch(() => {});
    if (err instanceof ConfigError || err instanceof BrokerConfigError)
      exit(2, `Configuration error: ${configMessage(err, brokerVariable)}`);
    exit(1, `Cannot start: ${describeError(err)}`);
  }
}

await main();
