/** `runTask(task, input, { attempt })`: one handler run directly with a test context, no broker. */
import pino, { type Logger } from 'pino';
import type { z } from 'zod';
import { BackOff, ConfigError, formatPath, PermanentError, TaskTimeoutError } from '../core/errors.ts';
import { newRunId } from '../core/ids.ts';
import { jsonIssues } from '../core/json.ts';
import { show } from '../core/show.ts';
import { checkSpawn } from '../broker/shared/workflow.ts';
import type { TaskContext, TaskDefinition } from '../task/task.ts';
import { compileSpawn, Spawn } from '../task/workflow.ts';

const silent = (): Logger => pino({ level: 'silent' });

// ---- runTask ------------------------------------------------------------------------------------

export interface RunTaskOptions {
  /** `ctx.attempt`. Default 1. */
  attempt?: number;
  /** `ctx.runId`. Default: a new run id of the task's queue. */
  runId?: string;
  /** `ctx.queue`. Default: the task's queue. */
  queue?: string;
  /** Aborts `ctx.signal` (as a cancel or a worker shutdown would). The task's `timeout` aborts it too. */
  signal?: AbortSignal;
  /** `ctx.logger`. Default: silent. */
  logger?: Logger;
  traceparent?: string;
  /** Called with each value the handler gives `ctx.progress`. */
  onProgress?: (value: unknown) => void;
}

/**
 * Runs one task's handler directly, as a worker would run one attempt, with a test context: the
 * input is validated as `enqueue` validates it (throws `InputError`) and passed through JSON and the
 * schema as the worker does; `ctx.signal` aborts on the task's timeout (the call then throws
 * `TaskTimeoutError`) or on `options.signal`; a result that cannot be stored as JSON throws
 * `PermanentError`. Returns the handler's result, or throws what it throws. No broker is involved.
 */
export async function runTask<S extends z.ZodType, R>(
  task: TaskDefinition<S, R>,
  input: z.input<S>,
  options: RunTaskOptions = {},
): Promise<Awaited<R>> {
  const attempt = options.attempt ?? 1;
  if (!Number.isInteger(attempt) || attempt < 1) throw new TypeError(`runTask(): attempt must be a positive integer, got ${show(attempt)}`);
  const queue = options.queue ?? task.queue;
  const run = task.prepare(input, { queue });
  const parsed = task.schema.parse(JSON.parse(run.input)) as z.output<S>;
  const controller = new AbortController();
  const abort = (reason: unknown) => {
    if (!controller.signal.aborted) controller.abort(reason);
  };
  const outer = options.signal;
  const onOuter = () => abort(outer?.reason);
  if (outer?.aborted) onOuter();
  else outer?.addEventListener('abort', onOuter, { once: true });
  const runId = options.runId ?? newRunId(queue);
  const logger = (options.logger ?? silent()).child({ runId, task: task.name, queue, attempt });
  const ctx: TaskContext = {
    runId,
    task: task.name,
    queue,
    attempt,
    signal: controller.signal,
    logger,
    progress(value: unknown) {
      const issues = jsonIssues(value);
      if (issues.length) throw new TypeError(`progress(): ${issues[0]!.message} at ${formatPath(issues[0]!.path, 'value')}`);
      options.onProgress?.(value);
    },
    spawn(shape) {
      const spawn = compileSpawn(shape, Date.now(), 1024 * 1024);
      checkSpawn({ id: runId, attempt, outcome: 'spawned', ...spawn, retentionMs: 0 });
      return spawn;
    },
    backOff: (ms, o) => new BackOff(ms, o),
    ...(options.traceparent !== undefined && { traceparent: options.traceparent }),
  };
  const timer = setTimeout(
    () => abort(new TaskTimeoutError(`Attempt ${attempt} of run ${runId} timed out after ${task.timeout} ms`)),
    task.timeout,
  );
  try {
    const value = await new Promise<Awaited<R>>((resolve, reject) => {
      if (controller.signal.aborted) return reject(controller.signal.reason);
      controller.signal.addEventListener('abort', () => reject(controller.signal.reason), { once: true });
      Promise.resolve()
        .then(() => task.handler(parsed, ctx))
        .then(resolve as (v: unknown) => void, reject);
    });
    if (value instanceof Spawn) {
      throw new ConfigError(
        `runTask(): the handler of "${task.name}" spawned ${value.runs.length} runs (ctx.spawn), which need a broker to run: use createTesting() and drain()`,
      );
    }
    const issues = jsonIssues(value);
    if (issues.length) {
      const where = issues.map((i) => `${formatPath(i.path, 'result')}: ${i.message}`).join('; ');
      throw new PermanentError(`The handler's result cannot be stored as JSON: ${where}`);
    }
    return value;
  } finally {
    clearTimeout(timer);
    outer?.removeEventListener('abort', onOuter);
  }
}
