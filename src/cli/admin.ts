/**
 * The admin commands of the `errand` CLI: look at a broker and act on it, without any task module.
 *
 *   errand inspect queues | runs | run <id> | workers
 *   errand retry <id> | retry --failed --queue q [--task t]
 *   errand cancel <id>
 *   errand purge <queue> --yes
 *   errand pause <queue> | resume <queue>
 *   errand schedules [list] | pause | resume | trigger | delete <id> | backfill <id> --from T --to T
 *
 * Every command takes `--broker URL` (default: ERRAND_BROKER_URL, REDIS_URL, sqlite:./data/errand.db;
 * ERRAND_PREFIX sets the Redis key prefix) and `--json`. Exit codes: 0 done; 2 the command cannot be
 * done as asked (bad flags or values, a malformed or unknown run id, an unknown queue, a run in the
 * wrong state, purge without --yes); 1 the broker could not be reached, or an unexpected error.
 * With `--json` the answer is one JSON document on stdout and an error is `{"error": {code, message}}`
 * on stderr. Inputs are shown with the paths of ERRAND_REDACT and `--redact` replaced by "[redacted]".
 */
import { RUN_STATES } from '../broker/types.ts';
import { BrokerUnavailableError, ConfigError } from '../core/errors.ts';
import { clean } from './format.ts';
import { CliError, HelpRequested, Output, usage } from './admin-shared.ts';
import { inspect } from './inspect.ts';
import { cancel, pauseResume, purge, retry } from './actions.ts';
import { SCHEDULES_USAGE, schedulesCommand } from './schedules.ts';

export { CliError } from './admin-shared.ts';

export const ADMIN_COMMANDS: ReadonlySet<string> = new Set(['inspect', 'retry', 'cancel', 'purge', 'pause', 'resume', 'schedules']);

export const ADMIN_USAGE = `  inspect queues     Each queue: counts by state, paused or not
  inspect runs       Runs, newest first
    --queue Q --task T --state S   filters (state: ${RUN_STATES.join(', ')})
    --limit N          runs per page, 1 to 500 (default 20)
    --cursor C         the next page (the cursor printed under the previous page)
  inspect run <id>   One run: everything, input, result, error with its stack, attempts
  inspect workflow <id>   One workflow: its state, each step, what it runs after and still waits for
  inspect workers    Workers seen in the last hour: queues, concurrency, active runs, heartbeat age, lost
  retry <id>         Replay a failed run (queued again, attempts reset)
  retry --failed --queue Q [--task T]   Replay every failed run of a queue (of one task)
  cancel <id>        Cancel a queued, scheduled or active run
  purge <queue> --yes   Delete the queued and scheduled runs of a queue (without --yes: says how many)
  pause <queue>      Workers stop taking runs from the queue (it still accepts runs)
  resume <queue>     Workers take runs from the queue again
${SCHEDULES_USAGE}    every one of these takes:
    --broker URL       default: ERRAND_BROKER_URL, REDIS_URL, or sqlite:./data/errand.db (ERRAND_PREFIX: Redis key prefix)
    --json             machine-readable output (errors as {"error": {"code", "message"}} on stderr)
    inspect runs/run also take --redact a,b: input paths shown as "[redacted]", added to ERRAND_REDACT
    exit codes: 0 done, 2 refused (bad flags, unknown run or queue, wrong state, purge without --yes), 1 broker unreachable
`;

/**
 * Runs one admin command (`command` is one of ADMIN_COMMANDS, `args` what follows it). Writes the
 * answer to stdout and errors to stderr, sets `process.exitCode` and returns it; never throws.
 */
export async function adminCommand(command: string, args: string[]): Promise<number> {
  const json = args.includes('--json');
  const out = new Output(json);
  // `errand inspect runs | head`: a reader that goes away is not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  });
  let code = 0;
  try {
    await dispatch(command, args, out);
  } catch (err) {
    code = report(err, json);
  }
  out.flush();
  process.exitCode = code;
  return code;
}

function report(err: unknown, json: boolean): number {
  let e: CliError;
  if (err instanceof CliError) e = err;
  else if (err instanceof ConfigError) e = new CliError('config', err.message);
  else if (err instanceof BrokerUnavailableError) e = new CliError('broker_unavailable', err.message, { exitCode: 1 });
  else {
    const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
    e = new CliError('internal', `unexpected error: ${message}`, { exitCode: 1 });
  }
  if (json) process.stderr.write(`${JSON.stringify({ error: { code: e.code, message: e.message, ...e.details } })}\n`);
  else process.stderr.write(`errand: ${clean(e.message, true)}\n`);
  return e.exitCode;
}

async function dispatch(command: string, args: string[], out: Output): Promise<void> {
  try {
    switch (command) {
      case 'inspect':
        return await inspect(args, out);
      case 'retry':
        return await retry(args, out);
      case 'cancel':
        return await cancel(args, out);
      case 'purge':
        return await purge(args, out);
      case 'pause':
      case 'resume':
        return await pauseResume(command, args, out);
      case 'schedules':
        return await schedulesCommand(args, out);
      default:
        throw usage(`unknown command ${JSON.stringify(command)}`);
    }
  } catch (err) {
    if (!(err instanceof HelpRequested)) throw err;
    out.text(`Usage:\n${ADMIN_USAGE}`);
  }
}
