/** `errand inspect queues | runs | run <id> | workflow <id> | workers`: what a broker holds, as tables or --json. */
import { redactUrl } from '../core/urls.ts';
import { type QueueCounts, RUN_STATES, type RunRecord, type RunState, type WorkerStatus } from '../broker/types.ts';
import { ConfigError } from '../core/errors.ts';
import { redactRecord } from '../core/redact.ts';
import { errorLine, readRunError } from '../core/run-info.ts';
import { runToJson } from '../http/schemas.ts';
import { workflowToJson } from '../http/workflow-routes.ts';
import { clean, cut, duration, indentLines, prettyJson, relative, table, when } from './format.ts';
import {
  CliError,
  checkQueue,
  checkRunId,
  DEFAULT_LIMIT,
  HelpRequested,
  type Inspector,
  intFlag,
  notFound,
  type Output,
  parse,
  redactPaths,
  usage,
  withBroker,
} from './admin-shared.ts';

// ---- inspect -------------------------------------------------------------------------------------

export async function inspect(args: string[], out: Output): Promise<void> {
  const [what, ...rest] = args;
  if (what === '--help' || what === '-h') throw new HelpRequested();
  switch (what) {
    case 'queues':
      return inspectQueues(rest, out);
    case 'runs':
      return inspectRuns(rest, out);
    case 'run':
      return inspectRun(rest, out);
    case 'workflow':
      return inspectWorkflow(rest, out);
    case 'workers':
      return inspectWorkers(rest, out);
    case undefined:
      throw usage('inspect needs what to inspect: queues, runs, run <id>, workflow <id> or workers');
    default:
      if (what.startsWith('-'))
        throw usage('inspect needs what to inspect first, then its flags: queues, runs, run <id>, workflow <id> or workers');
      throw usage(`cannot inspect ${JSON.stringify(cut(what, 60))}: inspect queues, runs, run <id>, workflow <id> or workers`);
  }
}

const COUNT_STATES: RunState[] = ['waiting', 'queued', 'scheduled', 'active', 'succeeded', 'failed', 'cancelled'];

async function inspectQueues(args: string[], out: Output): Promise<void> {
  const { values } = parse('inspect queues', args, {}, { min: 0, max: 0, what: 'no arguments' });
  await withBroker(values, async (broker) => {
    const queues = (await broker.listQueues()).sort();
    const counts: Record<string, QueueCounts> = queues.length ? await broker.counts(queues) : {};
    const paused = await broker.pausedQueues();
    const pausedSet = new Set(paused);
    const zero = Object.fromEntries(COUNT_STATES.map((s) => [s, 0])) as QueueCounts;
    const rows = queues.map((q) => ({ queue: q, counts: { ...zero, ...counts[q] }, paused: pausedSet.has(q) }));
    // What the broker's storage may do to runs (a Redis that evicts keys): said under the table.
    const warnings = typeof broker.storageWarnings === 'function' ? await broker.storageWarnings() : [];
    if (out.json) return out.data({ queues: rows, warnings });
    const said = warnings.map((w) => `\nWarning: ${w}\n`).join('');
    if (!rows.length) return out.text(`No queues: nothing has been enqueued on this broker yet.\n${said}`);
    out.text(
      table(
        ['QUEUE', ...COUNT_STATES.map((s) => s.toUpperCase()), 'PAUSED'],
        rows.map((r) => [clean(r.queue), ...COUNT_STATES.map((s) => String(r.counts[s])), r.paused ? 'paused' : '-']),
        new Set(COUNT_STATES.map((_, i) => i + 1)), // the counts, right-aligned
      ),
    );
    out.text(said);
  });
}

/** The one-line error of a run, for lists. */
function errorLineOf(text: string | undefined): string {
  const e = readRunError(text);
  return e ? cut(clean(errorLine(e)), 80) : '';
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
          return [clean(r.id), cut(clean(r.task), 40), r.state, String(r.attempts), relative(r.enqueuedAt, now), errorLineOf(shown.error)];
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

/** One workflow: its state, then a table of its steps with what each waiting one waits for (--json: as GET /workflows/{id}). */
async function inspectWorkflow(args: string[], out: Output): Promise<void> {
  const { values, positionals } = parse(
    'inspect workflow',
    args,
    { redact: { type: 'string' } },
    { min: 1, max: 1, what: 'one workflow id' },
  );
  const id = positionals[0]!;
  checkRunId(id);
  const paths = redactPaths(values);
  await withBroker(values, async (broker) => {
    const rec = await broker.getWorkflow(id);
    if (!rec) throw new CliError('workflow_not_found', `workflow ${id} not found (it never existed, or its runs finished and were pruned)`);
    const json = workflowToJson(rec, (r) => runToJson(redactRecord(r, paths), { errorStacks: false }));
    if (out.json) return out.data(json);
    const now = Date.now();
    const short = new Map(json.runs.map((r, i) => [r.id, `#${i + 1}`]));
    const deps = new Map<string, string[]>();
    for (const e of json.edges) deps.set(e.to, [...(deps.get(e.to) ?? []), short.get(e.from) ?? e.from]);
    const rows = json.runs.map((r, i) => {
      const waits = json.waiting_for[r.id];
      const outcome = r.error ? `${r.error.name}: ${r.error.message}` : r.state === 'succeeded' ? JSON.stringify(r.result) : '';
      return [
        `#${i + 1}`,
        clean(r.id),
        clean(r.task),
        r.state,
        (deps.get(r.id) ?? []).join(',') || '-',
        waits ? waits.map((w) => short.get(w) ?? w).join(',') : '-',
        clean(cut(outcome, 60)),
      ];
    });
    out.text(
      `workflow     ${clean(json.id)}\nstate        ${json.state}\ncreated      ${when(rec.createdAt, now)}\n\n` +
        table(['#', 'RUN', 'TASK', 'STATE', 'AFTER', 'WAITS FOR', 'RESULT OR ERROR'], rows),
    );
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
  if (json.schedule)
    field('schedule', `${clean(json.schedule.id)} at ${json.schedule.at}${json.schedule.backfilled ? ' (backfilled)' : ''}`);
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
