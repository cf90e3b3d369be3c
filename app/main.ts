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
 * line naming the variable and exit code 2; a failure to start (database unreachable, port taken)
 * with one line and exit code 1. SIGTERM or SIGINT stops gracefully: the server finishes its
 * requests, the worker its runs (within its grace period, then hands them back); a second signal
 * hands runs back at once.
 */
import { ConfigError } from '../src/index.ts';
import { loadConfig } from './config.ts';
import { describeError, Service } from './service.ts';

const MODES = ['all', 'api', 'worker'] as const;
type Mode = (typeof MODES)[number];

function exit(code: number, message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(code);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args.length > 1 || args[0] === '-h' || args[0] === '--help' || args[0] === 'help') {
    exit(args.length > 1 ? 2 : 0, 'Usage: node app/main.ts [all|api|worker]   (configuration from the environment: see the README)');
  }
  const mode = (args[0] ?? 'all') as Mode;
  if (!MODES.includes(mode)) exit(2, `Unknown mode ${JSON.stringify(mode)}: use all, api or worker`);

  let service: Service;
  try {
    service = await Service.create({ config: loadConfig(process.env) });
  } catch (err) {
    if (err instanceof ConfigError) exit(2, `Configuration error: ${err.message}`);
    exit(1, `Cannot start: ${describeError(err)}`);
  }

  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return; // a second signal: the worker's own handler hands its runs back at once
    stopping = true;
    service.logger.info({ signal }, 'stopping');
    service.stop().then(
      () => process.exit(0),
      (err) => exit(1, `Error while stopping: ${describeError(err)}`),
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  try {
    if (mode !== 'api') {
      const worker = await service.startWorker();
      worker.handleSignals();
    }
    if (mode !== 'worker') await service.startApi();
  } catch (err) {
    await service.stop().catch(() => {});
    exit(1, `Cannot start: ${describeError(err)}`);
  }
}

await main();
