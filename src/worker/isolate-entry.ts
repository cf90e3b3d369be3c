// The main module of an isolate: a worker thread or a child process that runs the handlers of
// isolated tasks for one worker (see isolates.ts), one attempt at a time. It imports the module
// that defines the task (once), finds the handler, checks the input against the task's schema,
// and runs the handler with a context whose progress and log lines go to the worker and whose
// signal the worker aborts. It never touches the broker: the worker stores the outcome.
import { threadId as currentThreadId, isMainThread, parentPort, Worker } from 'node:worker_threads';
import pino, { type Logger } from 'pino';
import { BackOff, formatPath, PermanentError } from '../core/errors.ts';
import { jsonIssues, safeParse } from '../core/json.ts';
import { type CheckableSchema, checkSchema } from '../core/schema-issues.ts';
import { becomeIsolate, type Isolation, recordedTasks } from '../task/isolation.ts';
import type { TaskContext } from '../task/task.ts';
import { type FromIsolate, fromWire, type RunMessage, type ToIsolate, toWire } from './isolate-protocol.ts';

becomeIsolate();

const kind: Isolation = isMainThread ? 'process' : 'thread';

function send(message: FromIsolate): void {
  if (parentPort) parentPort.postMessage(message);
  else process.send?.(message);
}

/** The current attempt's abort controller, if a run is in progress. */
let current: AbortController | undefined;
/** Modules imported so far (each once, by URL). */
const imported = new Map<string, Promise<Record<string, unknown>>>();

type AnyHandler = (input: unknown, ctx: TaskContext) => unknown;
type AnyTask = {
  name: string;
  handler: AnyHandler;
  schema?: CheckableSchema;
  module?: string;
};

async function findTask(msg: RunMessage): Promise<AnyTask> {
  let loading = imported.get(msg.module);
  if (!loading) {
    loading = import(msg.module) as Promise<Record<string, unknown>>;
    imported.set(msg.module, loading);
  }
  let exports: Record<string, unknown>;
  try {
    exports = await loading;
  } catch (err) {
    imported.delete(msg.module);
    throw new PermanentError(
      `The isolate could not import ${msg.module}, the module of task "${msg.task}": ${(err as Error)?.message ?? String(err)}`,
      {
        cause: err,
      },
    );
  }
  const defined = recordedTasks(msg.task) as unknown as AnyTask[];
  const own = defined.filter((t) => t.module === msg.module);
  const found = own.at(-1) ?? defined.at(-1);
  if (found) return found;
  const exported = msg.handlerName ? exports[msg.handlerName] : undefined;
  if (typeof exported === 'function') return { name: msg.task, handler: exported as AnyHandler };
  throw new PermanentError(
    `The isolate imported ${msg.module} but found neither a task named "${msg.task}" defined when it is imported nor an exported function named ` +
      `${msg.handlerName ? JSON.stringify(msg.handlerName) : '(the handler is anonymous)'}: define the task at the top level of that module, or export its handler there`,
  );
}

/** At most one progress message per this many ms (the worker stores progress at most every 200 ms). */
const PROGRESS_EVERY_MS = 50;

/**
 * An attempt's progress on its way to the worker: sent when reported if the last was sent long
 * enough ago (so that a handler that never yields still reports), else the latest value a little
 * later, and in any case before the attempt's outcome.
 */
class ProgressRelay {
  #last = Number.NEGATIVE_INFINITY;
  #pending: { value: unknown } | undefined;
  #timer: NodeJS.Timeout | undefined;

  report(value: unknown): void {
    this.#pending = { value };
    if (performance.now() - this.#last >= PROGRESS_EVERY_MS) this.flush();
    else this.#timer ??= setTimeout(() => this.flush(), PROGRESS_EVERY_MS);
  }

  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const pending = this.#pending;
    if (!pending) return;
    this.#pending = undefined;
    this.#last = performance.now();
    send({ t: 'progress', value: pending.value });
  }
}

function contextFor(msg: RunMessage, controller: AbortController, relay: ProgressRelay): TaskContext {
  let logger: Logger | undefined;
  const ctx: TaskContext = {
    runId: msg.runId,
    task: msg.task,
    queue: msg.queue,
    attempt: msg.attempt,
    signal: controller.signal,
    get logger() {
      logger ??= pino({ level: msg.logLevel, base: null, timestamp: false }, { write: (line: string) => send({ t: 'log', line }) });
      return logger;
    },
    spawn() {
      throw new PermanentError(
        `ctx.spawn() is not available in an isolated handler (task "${msg.task}"): an isolate never touches the broker; spawn from a task without isolation`,
      );
    },
    progress(value: unknown) {
      const issues = jsonIssues(value);
      if (issues.length) throw new TypeError(`progress(): ${issues[0]!.message} at ${formatPath(issues[0]!.path, 'value')}`);
      relay.report(value ?? null);
    },
    backOff: (ms, o) => new BackOff(ms, o),
    isolate: { kind, pid: process.pid, threadId: currentThreadId },
  };
  if (msg.traceparent) ctx.traceparent = msg.traceparent;
  if (msg.schedule) ctx.schedule = { id: msg.schedule.id, at: new Date(msg.schedule.at), backfilled: msg.schedule.backfilled };
  return ctx;
}

async function run(msg: RunMessage): Promise<void> {
  const controller = new AbortController();
  current = controller;
  const relay = new ProgressRelay();
  try {
    const task = await findTask(msg);
    const json = safeParse(msg.input);
    if (!json.ok) throw new PermanentError(`The stored input is not valid JSON: ${json.error}`);
    let input = json.value;
    if (task.schema) {
      const parsed = checkSchema(task.schema, input);
      if (!parsed.ok) {
        const lines = parsed.issues.map((i) => `${formatPath(i.path)}: ${i.message}`);
        throw new PermanentError(`The stored input does not match the task's schema: ${lines.join('; ')}`);
      }
      input = parsed.value;
    }
    const value = await task.handler(input, contextFor(msg, controller, relay));
    relay.flush();
    try {
      send({ t: 'done', ok: true, value });
    } catch (err) {
      send({
        t: 'done',
        ok: false,
        error: toWire(new PermanentError(`The handler's result cannot be sent to the worker: ${(err as Error).message}`)),
      });
    }
  } catch (err) {
    relay.flush();
    send({ t: 'done', ok: false, error: toWire(err) });
  } finally {
    if (current === controller) current = undefined;
  }
}

function onMessage(msg: ToIsolate): void {
  if (msg.t === 'run') void run(msg);
  else if (msg.t === 'abort') current?.abort(fromWire(msg.reason));
}

/** How often the watchdog thread looks for the worker (ms): a fraction of any lease. */
const WATCH_MS = 200;

function watchParent(): void {
  const code = `
    const { workerData } = require('node:worker_threads');
    setInterval(() => { if (process.ppid !== workerData) process.kill(process.pid, 'SIGKILL'); }, ${WATCH_MS});
  `;
  const watchdog = new Worker(code, {
    eval: true,
    workerData: process.ppid,
  });
  // A watchdog that fails to start leaves the isolate as it was without one ('disconnect' only).
  watchdog.on('error', () => {});
  watchdog.unref(); // the isolate ends when it is done, watchdog or not
}

if (parentPort) parentPort.on('message', onMessage);
else {
  // An error nobody caught ends the process (as it would end a thread: the worker sees the thread's
  // 'error' event): the worker is told why first.
  const crash = (err: unknown) => {
    try {
      process.send?.({ t: 'crash', error: toWire(err) } satisfies FromIsolate, () => process.exit(1));
    } catch {
      process.exit(1);
    }
  };
  process.on('uncaughtException', crash);
  process.on('unhandledRejection', crash);
  process.on('message', onMessage as (m: unknown) => void);
  // The worker is gone (it exited or was killed): so is its isolate. 'disconnect' needs this
  // process's event loop, which a CPU-bound handler never gives back: a watchdog thread of its own
  // sees the parent go (this process is handed to another parent) and kills the process, so that
  // an orphan never runs alongside the retry of its run.
  process.on('disconnect', () => process.exit(0));
  watchParent();
}
