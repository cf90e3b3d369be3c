/**
 * The admin commands of the `errand` CLI: look at a broker and act on it, without any task module.
 *
 *   errand inspect queues | runs | run <id> | workers
 *   errand retry <id> | retry --failed --queue q [--task t]
 *   errand cancel <id>
 *   errand purge <queue> --yes
 *   errand pause <queue> | resume <queue>
 *
 * Every command takes `--broker URL` (default: ERRAND_BROKER_URL, REDIS_URL, sqlite:./data/errand.db;
 * ERRAND_PREFIX sets the Redis key prefix) and `--json`. Exit codes: 0 done; 2 the command cannot be
 * done as asked (bad flags or values, a malformed or unknown run id, an unknown queue, a run in the
 * wrong state, purge without --yes); 1 the broker could not be reached, or an unexpected error.
 * With `--json` the answer is one JSON document on stdout and an error is `{"error": {code, message}}`
 * on stderr. Inputs are shown with the paths of ERRAND_REDACT and `--redact` replaced by "[redacted]".
 */
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { connectBroker, defaultBrokerUrl, pingWithin, sqliteFileOf } from '../broker/connect.ts';
import { redactUrl } from '../core/urls.ts';
import {
  type Broker,
  type BrokerInspector,
  type QueueCounts,
  RUN_STATES,
  type RunRecord,
  type RunState,
  type WorkerStatus,
} from '../broker/types.ts';
import { BrokerUnavailableError, ConfigError } from '../core/errors.ts';
import { isRunId, QUEUE_NAME } from '../core/ids.ts';
import { safeParse } from '../core/json.ts';
import { checkRedactPaths, mergeRedactPaths, redactPathsFromEnv, redactRecord } from '../core/redact.ts';
import { runToJson } from '../http/schemas.ts';
import { argsErrorMessage, clean, cut, duration, indentLines, prettyJson, relative, table, when } from './format.ts';

export const ADMIN_COMMANDS: ReadonlySet<string> = new Set(['inspect', 'retry', 'cancel', 'purge', 'pause', 'resume']);

export const ADMIN_USAGE = `  inspect queues     Each queue: counts by state, paused or not
  inspect runs       Runs, newest first
    --queue Q --task T --state S   filters (state: ${RUN_STATES.join(', ')})
    --limit N          runs per page, 1 to 500 (default 20)
    --cursor C         the next page (the cursor printed under the previous page)
  inspect run <id>   One run: everything, input, result, error with its stack, attempts
  inspect workers    Workers seen in the last hour: queues, concurrency, active runs, heartbeat age, lost
  retry <id>         Replay a failed run (queued again, attempts reset)
  retry --failed --queue Q [--task T]   Replay every failed run of a queue (of one task)
  cancel <id>        Cancel a queued, scheduled or active run
  purge <queue> --yes   Delete the queued and scheduled runs of a queue (without --yes: says how many)
  pause <queue>      Workers stop taking runs from the queue (it still accepts runs)
  resume <queue>     Workers take runs from the queue again
    every one of these takes:
    --broker URL       default: ERRAND_BROKER_URL, REDIS_URL, or sqlite:./data/errand.db (ERRAND_PREFIX: Redis key prefix)
    --json             machine-readable output (errors as {"error": {"code", "message"}} on stderr)
    inspect runs/run also take --redact a,b: input paths shown as "[redacted]", added to ERRAND_REDACT
    exit codes: 0 done, 2 refused (bad flags, unknown run or queue, wrong state, purge without --yes), 1 broker unreachable
`;

const DEFAULT_LIMIT = 20;
const EXAMPLE_ID = 'default.01JD3M5S7T8X9Y0Z1A2B3C4D5E';

/** An error the user can act on: printed without a stack, with its code in `--json` mode. */
export class CliError extends Error {
  override name = 'CliError';
  readonly code: string;
  readonly exitCode: number;
  readonly details: Record<string, unknown> | undefined;
  constructor(code: string, message: string, options: { exitCode?: number; details?: Record<string, unknown> } = {}) {
    super(message);
    this.code = code;
    this.exitCode = options.exitCode ?? 2;
    this.details = options.details;
  }
}

type Inspector = Broker & BrokerInspector;

interface Common {
  broker?: string;
  json?: boolean;
}

const COMMON = { broker: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } as const;

class Output {
  readonly json: boolean;
  #text = '';
  constructor(json: boolean) {
    this.json = json;
  }
  text(s: string): void {
    this.#text += s;
  }
  data(value: unknown): void {
    this.#text += `${JSON.stringify(value, null, 2)}\n`;
  }
  flush(): void {
    if (this.#text) process.stdout.write(this.#text);
    this.#text = '';
  }
}

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

function usage(message: string): CliError {
  return new CliError('usage', `${message} (see errand help)`);
}

function parse<T extends Record<string, { type: 'string' | 'boolean'; short?: string }>>(
  name: string,
  args: string[],
  options: T,
  positionals: { min: number; max: number; what: string },
) {
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
  try {
    parsed = parseArgs({ args, options: { ...COMMON, ...options }, strict: true, allowPositionals: true }) as typeof parsed;
  } catch (err) {
    throw usage(`${name}: ${argsErrorMessage(err)}`);
  }
  const { values, positionals: pos } = parsed;
  if (values.help) throw new HelpRequested();
  if (pos.length < positionals.min || pos.length > positionals.max) {
    const got = pos.length === 0 ? 'nothing' : pos.map((p) => JSON.stringify(p)).join(' ');
    throw usage(`${name} takes ${positionals.what}, got ${got}`);
  }
  for (const [key, value] of Object.entries(values))
    if (typeof value === 'string' && value.trim() === '') throw usage(`${name}: --${key} is empty`);
  return { values: values as Common & Record<string, string | boolean | undefined>, positionals: pos };
}

class HelpRequested extends Error {}

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
      default:
        throw usage(`unknown command ${JSON.stringify(command)}`);
    }
  } catch (err) {
    if (!(err instanceof HelpRequested)) throw err;
    out.text(`Usage:\n${ADMIN_USAGE}`);
  }
}

// ---- the broker ----------------------------------------------------------------------------------

/** Opens the broker named by --broker (or the default), checks it answers and can be inspected, runs `fn`, closes it. */
async function withBroker<T>(values: Common, fn: (broker: Inspector) => Promise<T>): Promise<T> {
  const url = values.broker ?? defaultBrokerUrl();
  const shown = redactUrl(url);
  // Opening a SQLite path creates the file: an inspection must not make an empty broker out of a typo.
  const file = sqliteFileOf(url);
  if (file !== undefined && !existsSync(file))
    throw new CliError('broker_not_found', `no SQLite broker file at ${file} (from ${shown}): check --broker or ERRAND_BROKER_URL`);
  const broker = await connectBroker(url, { logger: pino({ level: 'silent' }), prefix: process.env.ERRAND_PREFIX || undefined });
  try {
    try {
      await pingWithin(broker);
    } catch (err) {
      const why = (err as Error)?.message ?? String(err);
      // Refused credentials or TLS set-up (BrokerConfigError): waiting will not help, the URL must change.
      if ((err as Error)?.name === 'BrokerConfigError')
        throw new CliError('config', `the broker at ${shown} refused the connection: ${why}`);
      throw new CliError('broker_unavailable', `cannot reach the broker at ${shown}: ${why}`, { exitCode: 1 });
    }
    if (typeof (broker as Partial<BrokerInspector>).listRuns !== 'function')
      throw new CliError(
        'not_inspectable',
        `the broker at ${shown} (${broker.kind}) cannot be inspected: it does not implement BrokerInspector`,
      );
    return await fn(broker as Inspector);
  } finally {
    await broker.close().catch(() => {});
  }
}

function checkRunId(id: string): void {
  if (!isRunId(id)) {
    const shown = JSON.stringify(cut(id, 120));
    throw new CliError('invalid_run_id', `${shown} is not a run id: run ids are <queue>.<26 characters>, like ${EXAMPLE_ID}`);
  }
}

function notFound(id: string): CliError {
  return new CliError('run_not_found', `run ${id} not found (it never existed, or it finished and its retention passed)`);
}

/** Refuses a malformed queue name, then one the broker has never seen (listing those it has). */
async function checkQueue(broker: Inspector, queue: string, flag = 'queue'): Promise<void> {
  if (!QUEUE_NAME.test(queue))
    throw new CliError(
      'invalid_queue',
      `${JSON.stringify(cut(queue, 120))} is not a valid ${flag} name: 1 to 64 letters, digits, "_" or "-"`,
    );
  const known = (await broker.listQueues()).sort();
  if (!known.includes(queue)) {
    const list = known.length ? `known queues: ${known.join(', ')}` : 'the broker has no queue yet';
    throw new CliError('unknown_queue', `unknown queue ${JSON.stringify(queue)}; ${list}`, { details: { known } });
  }
}

function redactPaths(values: Record<string, string | boolean | undefined>): string[] {
  let fromFlag: string[] = [];
  if (typeof values.redact === 'string') {
    const list = values.redact
      .split(',')
      .map((p) => p.trim())
      .filter(Boolean);
    try {
      fromFlag = checkRedactPaths(list, '--redact');
    } catch (err) {
      throw new CliError('usage', (err as Error).message);
    }
  }
  let fromEnv: string[];
  try {
    fromEnv = redactPathsFromEnv();
  } catch (err) {
    throw new CliError('config', (err as Error).message);
  }
  return mergeRedactPaths(fromEnv, fromFlag);
}

// ---- inspect -------------------------------------------------------------------------------------

async function inspect(args: string[], out: Output): Promise<void> {
  const [what, ...rest] = args;
  if (what === '--help' || what === '-h') throw new HelpRequested();
  switch (what) {
    case 'queues':
      return inspectQueues(rest, out);
    case 'runs':
      return inspectRuns(rest, out);
    case 'run':
      return inspectRun(rest, out);
    case 'workers':
      return inspectWorkers(rest, out);
    case undefined:
      throw usage('inspect needs what to inspect: queues, runs, run <id> or workers');
    default:
      if (what.startsWith('-')) throw usage('inspect needs what to inspect first, then its flags: queues, runs, run <id> or workers');
      throw usage(`cannot inspect ${JSON.stringify(cut(what, 60))}: inspect queues, runs, run <id> or workers`);
  }
}

const COUNT_STATES: RunState[] = ['queued', 'scheduled', 'active', 'succeeded', 'failed', 'cancelled'];

async function inspectQueues(args: string[], out: Output): Promise<void> {
  const { values } = parse('inspect queues', args, {}, { min: 0, max: 0, what: 'no arguments' });
  await withBroker(values, async (broker) => {
    const queues = (await broker.listQueues()).sort();
    const counts: Record<string, QueueCounts> = queues.length ? await broker.counts(queues) : {};
    const paused = await broker.pausedQueues();
    const pausedSet = new Set(paused);
    const zero = Object.fromEntries(COUNT_STATES.map((s) => [s, 0])) as QueueCounts;
    const rows = queues.map((q) => ({ queue: q, counts: { ...zero, ...counts[q] }, paused: pausedSet.has(q) }));
    if (out.json) return out.data({ queues: rows });
    if (!rows.length) return out.text('No queues: nothing has been enqueued on this broker yet.\n');
    out.text(
      table(
        ['QUEUE', ...COUNT_STATES.map((s) => s.toUpperCase()), 'PAUSED'],
        rows.map((r) => [clean(r.queue), ...COUNT_STATES.map((s) => String(r.counts[s])), r.paused ? 'paused' : '-']),
        new Set([1, 2, 3, 4, 5, 6]),
      ),
    );
  });
}

function intFlag(value: string | boolean | undefined, name: string, min: number, max: number): number | undefined {
  if (value === undefined || typeof value !== 'string') return undefined;
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max)
    throw new CliError('usage', `--${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  return Number(value);
}

/** The one-line error of a run, for lists. */
function errorLine(text: string | undefined): string {
  if (text === undefined) return '';
  const parsed = safeParse(text);
  const e = parsed.ok && parsed.value && typeof parsed.value === 'object' ? (parsed.value as Record<string, unknown>) : undefined;
  if (!e) return cut(clean(String(parsed.ok ? parsed.value : text)), 80);
  const line = `${String(e.name ?? 'Error')}: ${String(e.message ?? '')}${typeof e.reason === 'string' ? ` (${e.reason})` : ''}`;
  return cut(clean(line), 80);
}

async function inspectRuns(args: string[], out: Output): Promise<void> {
  const { values } = parse(
    'inspect runs',
    args,
    {
      queue: { type: 'string' },
      task: { type: 'string' },
      state: { type: 'string' },
      limit: { type: 'string' },
      cursor: { type: 'string' },
      redact: { type: 'string' },
    },
    { min: 0, max: 0, what: 'only flags' },
  );
  const state = values.state as string | undefined;
  if (state !== undefined && !RUN_STATES.includes(state as RunState))
    throw new CliError('usage', `--state must be one of ${RUN_STATES.join(', ')}, got ${JSON.stringify(state)}`);
  const limit = intFlag(values.limit, 'limit', 1, 500) ?? DEFAULT_LIMIT;
  const paths = redactPaths(values);
  const queue = values.queue as string | undefined;
  const task = values.task as string | undefined;
  const cursor = values.cursor as string | undefined;
  await withBroker(values, async (broker) => {
    if (queue !== undefined) await checkQueue(broker, queue);
    let page: Awaited<ReturnType<Inspector['listRuns']>>;
    try {
      page = await broker.listRuns({ queue, task, state: state as RunState | undefined, limit, cursor });
    } catch (err) {
      if (err instanceof ConfigError && cursor !== undefined)
        throw new CliError(
          'invalid_cursor',
          `--cursor ${JSON.stringify(cut(cursor, 120))} is not a cursor of this broker: give the one printed under the previous page`,
        );
      throw err;
    }
    if (out.json) {
      return out.data({
        runs: page.runs.map((r) => runToJson(redactRecord(r, paths), { errorStacks: true })),
        next: page.next,
      });
    }
    const now = Date.now();
    if (!page.runs.length) {
      out.text(cursor ? 'No more runs.\n' : 'No runs match.\n');
      return;
    }
    out.text(
      table(
        ['ID', 'TASK', 'STATE', 'ATTEMPTS', 'ENQUEUED', 'ERROR'],
        page.runs.map((r) => {
          const shown = redactRecord(r, paths);
          return [clean(r.id), cut(clean(r.task), 40), r.state, String(r.attempts), relative(r.enqueuedAt, now), errorLine(shown.error)];
        }),
        new Set([3]),
      ),
    );
    if (page.next) {
      const again = ['errand inspect runs'];
      // The broker URL only when it holds no password: the line is meant to be copied.
      if (values.broker !== undefined && redactUrl(values.broker) === values.broker) again.push(`--broker ${shellQuote(values.broker)}`);
      if (queue !== undefined) again.push(`--queue ${queue}`);
      if (task !== undefined) again.push(`--task ${shellQuote(task)}`);
      if (state !== undefined) again.push(`--state ${state}`);
      if (values.limit !== undefined) again.push(`--limit ${limit}`);
      again.push(`--cursor ${page.next}`);
      out.text(`\nNext page: ${again.join(' ')}\n`);
    }
  });
}

function shellQuote(s: string): string {
  return /^[\w.:@/-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

async function inspectRun(args: string[], out: Output): Promise<void> {
  const { values, positionals } = parse('inspect run', args, { redact: { type: 'string' } }, { min: 1, max: 1, what: 'one run id' });
  const id = positionals[0]!;
  checkRunId(id);
  const paths = redactPaths(values);
  await withBroker(values, async (broker) => {
    const rec = await broker.getRun(id);
    if (!rec) throw notFound(id);
    const json = runToJson(redactRecord(rec, paths), { errorStacks: true });
    if (out.json) return out.data(json);
    out.text(describeRun(rec, json, Date.now()));
  });
}

type RunJson = ReturnType<typeof runToJson>;

function describeRun(rec: RunRecord, json: RunJson, now: number): string {
  const lines: string[] = [];
  const field = (name: string, value: string) => lines.push(`${name.padEnd(13)}${value}`);
  field('id', clean(json.id));
  field('task', clean(json.task));
  field('queue', clean(json.queue));
  field('state', json.state);
  field('priority', String(json.priority));
  field('attempts', `${json.attempts} (lease losses: ${json.lease_losses})`);
  field('enqueued', when(rec.enqueuedAt, now));
  if (json.run_at) field('run at', when(rec.runAt, now));
  field('started', when(rec.startedAt, now));
  field('finished', when(rec.finishedAt, now));
  if (rec.startedAt !== undefined && rec.finishedAt !== undefined) field('took', duration(rec.finishedAt - rec.startedAt));
  field('expires', when(rec.expiresAt, now));
  field('worker', json.worker === null ? '-' : clean(json.worker));
  field('idempotency', json.idempotency_key === null ? '-' : clean(json.idempotency_key));
  field('traceparent', json.traceparent ?? '-');
  if (json.corrupt?.length) field('corrupt', `${json.corrupt.join(', ')} (stored JSON unreadable: shown as raw text)`);
  lines.push('input', prettyJson(json.input));
  if (json.progress !== null) lines.push('progress', prettyJson(json.progress));
  if (json.state === 'succeeded' || json.result !== null) lines.push('result', prettyJson(json.result));
  if (json.error) {
    lines.push(
      `error        ${clean(`${json.error.name}: ${json.error.message}`, true)}${json.error.reason ? ` (reason: ${json.error.reason})` : ''}`,
    );
    if (json.error.stack) lines.push(indentLines(stackBody(json.error), 2));
  }
  if (json.history.length) {
    lines.push('history');
    rec.history.forEach((h, i) => {
      const j = json.history[i]!;
      const took = h.finishedAt !== undefined && h.finishedAt !== null ? ` took ${duration(h.finishedAt - h.startedAt)}` : '';
      lines.push(`  #${h.attempt}  ${j.outcome ?? 'running'}  worker ${clean(h.worker)}  started ${when(h.startedAt, now)}${took}`);
      if (j.error) {
        lines.push(indentLines(`${j.error.name}: ${j.error.message}${j.error.reason ? ` (reason: ${j.error.reason})` : ''}`, 6));
        if (j.error.stack && j.error.stack !== json.error?.stack) lines.push(indentLines(stackBody(j.error), 6));
      }
    });
  }
  return `${lines.join('\n')}\n`;
}

/** A stack without its first line when that line only repeats `name: message`. */
function stackBody(e: { name: string; message: string; stack?: string }): string {
  const stack = e.stack ?? '';
  const head = `${e.name}: ${e.message}`;
  return stack.startsWith(`${head}\n`) ? stack.slice(head.length + 1) : stack;
}

async function inspectWorkers(args: string[], out: Output): Promise<void> {
  const { values } = parse('inspect workers', args, {}, { min: 0, max: 0, what: 'no arguments' });
  await withBroker(values, async (broker) => {
    const now = Date.now();
    const workers = (await broker.listWorkers(now)).sort((a, b) => a.id.localeCompare(b.id));
    const rows = workers.map((w: WorkerStatus) => ({
      id: w.id,
      host: w.host,
      pid: w.pid,
      queues: w.queues,
      concurrency: w.concurrency,
      active: w.active,
      started_at: new Date(w.startedAt).toISOString(),
      last_seen: new Date(w.lastSeen).toISOString(),
      heartbeat_age_ms: Math.max(0, now - w.lastSeen),
      ttl_ms: w.ttlMs,
      lost: w.lastSeen + w.ttlMs < now,
    }));
    if (out.json) return out.data({ workers: rows });
    if (!rows.length) return out.text('No workers seen in the last hour.\n');
    out.text(
      table(
        ['ID', 'HOST', 'PID', 'QUEUES', 'CONCURRENCY', 'ACTIVE', 'HEARTBEAT', 'LOST'],
        rows.map((w) => [
          clean(w.id),
          clean(w.host),
          String(w.pid),
          cut(clean(w.queues.join(',')), 40),
          String(w.concurrency),
          String(w.active),
          `${duration(w.heartbeat_age_ms)} ago`,
          w.lost ? 'LOST' : '-',
        ]),
        new Set([2, 4, 5]),
      ),
    );
  });
}

// ---- actions -------------------------------------------------------------------------------------

async function retry(args: string[], out: Output): Promise<void> {
  const { values, positionals } = parse(
    'retry',
    args,
    { failed: { type: 'boolean' }, queue: { type: 'string' }, task: { type: 'string' } },
    { min: 0, max: 1, what: 'one run id (or --failed --queue Q)' },
  );
  const queue = values.queue as string | undefined;
  const task = values.task as string | undefined;
  if (values.failed) {
    if (positionals.length) throw usage('retry: give a run id, or --failed --queue Q, not both');
    if (queue === undefined) throw usage('retry --failed needs --queue Q: the queue whose failed runs to replay');
    await withBroker(values, async (broker) => {
      await checkQueue(broker, queue);
      const n = await broker.retryFailed(queue, task, Date.now());
      if (out.json) return out.data({ queue, task: task ?? null, retried: n });
      const of = `queue ${queue}${task !== undefined ? ` (task ${clean(task)})` : ''}`;
      out.text(n ? `Queued again ${n} failed run${n === 1 ? '' : 's'} of ${of}, attempts reset.\n` : `No failed runs in ${of}.\n`);
    });
    return;
  }
  if (queue !== undefined || task !== undefined) throw usage('retry: --queue and --task go with --failed');
  if (positionals.length !== 1) throw usage('retry takes one run id, or --failed --queue Q');
  const id = positionals[0]!;
  checkRunId(id);
  await withBroker(values, async (broker) => {
    const res = await broker.retry(id, Date.now());
    if (res.outcome === 'not_found') throw notFound(id);
    if (res.outcome === 'not_failed')
      throw new CliError('not_failed', `run ${id} is ${res.state}: only failed or cancelled runs can be retried`, {
        details: { state: res.state },
      });
    if (out.json) return out.data({ id, state: 'queued' });
    out.text(`Run ${id} queued again, attempts reset.\n`);
  });
}

async function cancel(args: string[], out: Output): Promise<void> {
  const { values, positionals } = parse('cancel', args, {}, { min: 1, max: 1, what: 'one run id' });
  const id = positionals[0]!;
  checkRunId(id);
  await withBroker(values, async (broker) => {
    const res = await broker.cancel(id, Date.now());
    if (res.outcome === 'not_found') throw notFound(id);
    if (res.outcome === 'finished' && res.state === 'cancelled') {
      // As run.cancel() and the HTTP API: cancelling a cancelled run succeeds and changes nothing.
      if (out.json) return out.data({ id, state: 'cancelled', previous_state: 'cancelled' });
      out.text(`Run ${id} was already cancelled.\n`);
      return;
    }
    if (res.outcome === 'finished')
      throw new CliError('already_finished', `run ${id} has already finished: it is ${res.state}`, { details: { state: res.state } });
    if (out.json) return out.data({ id, state: 'cancelled', previous_state: res.previous });
    const note = res.previous === 'active' ? ' (its worker aborts the handler)' : '';
    out.text(`Run ${id} cancelled; it was ${res.previous}${note}.\n`);
  });
}

async function purge(args: string[], out: Output): Promise<void> {
  const { values, positionals } = parse('purge', args, { yes: { type: 'boolean' } }, { min: 1, max: 1, what: 'one queue name' });
  const queue = positionals[0]!;
  await withBroker(values, async (broker) => {
    await checkQueue(broker, queue);
    if (!values.yes) {
      const c = (await broker.counts([queue]))[queue];
      const queued = c?.queued ?? 0;
      const scheduled = c?.scheduled ?? 0;
      const n = queued + scheduled;
      throw new CliError(
        'confirmation_required',
        `purge deletes runs for good: add --yes to delete the ${n} run${n === 1 ? '' : 's'} of queue ${queue} waiting now (${queued} queued, ${scheduled} scheduled); active runs finish either way`,
        { details: { queue, would_delete: n, queued, scheduled } },
      );
    }
    const n = await broker.purge(queue, Date.now());
    if (out.json) return out.data({ queue, purged: n });
    out.text(`Deleted ${n} run${n === 1 ? '' : 's'} (queued and scheduled) of queue ${queue}.\n`);
  });
}

async function pauseResume(command: 'pause' | 'resume', args: string[], out: Output): Promise<void> {
  const { values, positionals } = parse(command, args, {}, { min: 1, max: 1, what: 'one queue name' });
  const queue = positionals[0]!;
  await withBroker(values, async (broker) => {
    await checkQueue(broker, queue);
    const was = (await broker.pausedQueues()).includes(queue);
    if (command === 'pause') await broker.pause(queue);
    else await broker.resume(queue);
    const paused = command === 'pause';
    if (out.json) return out.data({ queue, paused, changed: was !== paused });
    if (was === paused) out.text(`Queue ${queue} was already ${paused ? 'paused' : 'running (not paused)'}.\n`);
    else
      out.text(
        paused
          ? `Queue ${queue} paused: it still accepts runs, no worker takes them until: errand resume ${queue}\n`
          : `Queue ${queue} resumed: workers take its runs again.\n`,
      );
  });
}
