import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { redactUrl } from '../core/urls.ts';
import { ConfigError, ErrandError } from '../core/errors.ts';
import { explainMissingPeer } from '../core/peers.ts';
import { MAX_TIMER_MS } from '../core/show.ts';
import { foreignQueues, MAX_CONCURRENCY, MIN_LEASE_MS } from '../worker/options.ts';
import { endEarlySignalExit } from './early-exit.ts';
import { argsErrorMessage } from './format.ts';
import { ADMIN_USAGE, adminCommand } from './admin.ts';
import { loadApp } from './load.ts';

const USAGE = `Usage: errand <command> [options]

Commands:
  worker <module>    Run a worker for the tasks defined in <module> (a .ts or .js file exporting an Errand app)
    --concurrency N    runs at once, 1 to 10000 (default 10)
    --queues a,b       queues to take runs from (default: every queue of the module's tasks)
    --broker URL       redis://host:port[/db], rediss://..., redis+cluster://h1:p1,h2:p2, or sqlite:path.db (default: ERRAND_BROKER_URL, REDIS_URL, or sqlite:./data/errand.db)
    --lease-ms N       lease length in ms (default 8000)
    --grace-ms N       on SIGTERM/SIGINT, how long active runs may finish (default 10000)
    --unknown-task-wait-ms N
                       how long a run of a task the module does not define is handed back for a worker
                       that defines it before it fails with reason unknown_task (default 300000; 0: at once)
    logs: LOG_LEVEL (default info); LOG_FORMAT json or pretty (default: pretty on a terminal, else json)

  dashboard          Serve the web dashboard, its JSON API and /metrics for a broker
    --broker URL       as for worker (default: ERRAND_BROKER_URL, REDIS_URL, or sqlite:./data/errand.db)
    --port N           port to listen on (default 8080; 0 picks a free one)
    --host ADDR        address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)
    tokens from ERRAND_READ_TOKENS (may look) and ERRAND_ADMIN_TOKENS (may act), comma-separated

${ADMIN_USAGE}
  help               Show this text
  --version          Show the version of errand
`;

/** The package's version: package.json sits two levels up from src/cli/ and from dist/cli/ alike. */
function version(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

function fail(message: string): never {
  process.stderr.write(`errand: ${message}\n`);
  process.exit(2);
}

function intFlag(value: string | undefined, name: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
    fail(`--${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return Number(value);
}

async function worker(args: string[]): Promise<void> {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      strict: true,
      options: {
        concurrency: { type: 'string' },
        queues: { type: 'string' },
        broker: { type: 'string' },
        'lease-ms': { type: 'string' },
        'grace-ms': { type: 'string' },
        'unknown-task-wait-ms': { type: 'string' },
      },
    });
  } catch (err) {
    fail(`${argsErrorMessage(err)}\n\n${USAGE}`);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) fail(`worker takes exactly one task module, got ${positionals.length}\n\n${USAGE}`);
  const concurrency = intFlag(values.concurrency as string | undefined, 'concurrency', 1, MAX_CONCURRENCY);
  // The worker's own bounds (a longer lease or grace than Node's longest timer would fire at once).
  const leaseMs = intFlag(values['lease-ms'] as string | undefined, 'lease-ms', MIN_LEASE_MS, MAX_TIMER_MS);
  const graceMs = intFlag(values['grace-ms'] as string | undefined, 'grace-ms', 0, MAX_TIMER_MS);
  const unknownTaskWaitMs = intFlag(values['unknown-task-wait-ms'] as string | undefined, 'unknown-task-wait-ms', 0, MAX_TIMER_MS);
  const app = await loadApp(positionals[0]!);
  if (typeof values.broker === 'string') {
    app.setBroker(values.broker);
    try {
      await app.broker(); // checks the URL now (connecting comes at start), so that the message can name the flag
    } catch (err) {
      // A message that starts with an environment variable (ERRAND_REDIS_CA) is about that, not the flag.
      if (err instanceof ConfigError) fail(/^[A-Z][A-Z0-9_]+: /.test(err.message) ? err.message : `--broker: ${err.message}`);
      throw err;
    }
  }
  let queues: string[] | undefined;
  if (typeof values.queues === 'string') {
    queues = values.queues
      .split(',')
      .map((q) => q.trim())
      .filter(Boolean);
    if (queues.length === 0) fail('--queues is empty: give queue names separated by commas');
    const foreign = foreignQueues(queues, app.tasks.values(), "the module's");
    if (foreign) fail(`--queues: ${foreign}`);
  }
  const w = app.worker({ queues, concurrency, leaseMs, shutdownGraceMs: graceMs, unknownTaskWaitMs });
  app.logger.info({ broker: app.brokerUrl ? redactUrl(app.brokerUrl) : 'custom', tasks: [...app.tasks.keys()] }, 'starting worker');
  // From here on a stop signal stops the worker gracefully (until now it exited at once: see
  // early-exit.ts). The graceful handler goes in first: were the process left without a listener
  // for a moment, Node would drop a signal that arrived meanwhile.
  w.handleSignals(async () => {
    await app.close();
    process.exit(0);
  });
  endEarlySignalExit();
  await w.start();
}

/** The dashboard's command; it needs Fastify, an optional peer dependency: say so when it is missing. */
async function loadDashboard(): Promise<typeof import('./dashboard.ts')> {
  try {
    return await import('./dashboard.ts');
  } catch (err) {
    throw explainMissingPeer(err, 'errand dashboard', ['fastify']);
  }
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  switch (command) {
    case 'worker':
      return worker(rest);
    case 'dashboard':
      return (await loadDashboard()).dashboardCommand(rest);
    case 'inspect':
    case 'retry':
    case 'cancel':
    case 'purge':
    case 'pause':
    case 'resume':
    case 'schedules':
      // Errors are reported (and process.exitCode set) by adminCommand itself: see docs/cli.md.
      await adminCommand(command, rest);
      return;
    case 'version':
    case '--version':
    case '-v':
      process.stdout.write(`${version()}\n`);
      return;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return;
    default:
      fail(`unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
  }
}

main().catch((err) => {
  if (err instanceof ConfigError || err instanceof ErrandError) fail(err.message);
  process.stderr.write(`errand: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
