import type { AttemptRecord, RunError, RunFlow, RunRecord, RunState } from './run.ts';
import { safeParse } from './json.ts';

/** A run as the public API shows it: JSON fields decoded, times as Dates. */
export interface RunInfo<R = unknown> {
  id: string;
  task: string;
  queue: string;
  state: RunState;
  priority: number;
  input: unknown;
  result?: R;
  error?: RunError;
  progress?: unknown;
  /** How many times the run was started. */
  attempts: number;
  leaseLosses: number;
  enqueuedAt: Date;
  /** When a scheduled run becomes due. */
  runAt?: Date;
  startedAt?: Date;
  finishedAt?: Date;
  /** When a finished run will be deleted. */
  expiresAt?: Date;
  /** The deadline to start (`expiresIn`/`expiresAt`): not started by then, the run is dropped (failed, reason `expired`). */
  startBy?: Date;
  /** The worker that ran (or runs) the latest attempt. */
  worker?: string;
  idempotencyKey?: string;
  traceparent?: string;
  /** Set when a schedule created the run: its id, the nominal fire time, and whether it was created late. */
  schedule?: { id: string; at: Date; backfilled: boolean };
  history: AttemptRecord[];
  /** Fields whose stored JSON could not be read (the raw text is given instead). */
  corrupt?: string[];
  /** Flow control (docs/flow-control.md): the run's limit group and key; for a queued run, what holds it back. */
  flow?: RunFlow;
}

const date = (ms: number | undefined) => (ms === undefined || ms === null ? undefined : new Date(ms));

export function decodeRun<R = unknown>(rec: RunRecord): RunInfo<R> {
  const corrupt: string[] = [];
  const field = (name: string, text: string | undefined): unknown => {
    if (text === undefined) return undefined;
    const parsed = safeParse(text);
    if (parsed.ok) return parsed.value;
    corrupt.push(name);
    return text;
  };
  const info: RunInfo<R> = {
    id: rec.id,
    task: rec.task,
    queue: rec.queue,
    state: rec.state,
    priority: rec.priority,
    input: field('input', rec.input),
    attempts: rec.attempts,
    leaseLosses: rec.leaseLosses,
    enqueuedAt: new Date(rec.enqueuedAt),
    history: rec.history,
  };
  if (rec.result !== undefined) info.result = field('result', rec.result) as R;
  if (rec.error !== undefined) {
    field('error', rec.error); // notes it as corrupt when it is not JSON
    info.error = readRunError(rec.error);
  }
  if (rec.progress !== undefined) info.progress = field('progress', rec.progress);
  const runAt = date(rec.runAt);
  if (runAt && rec.state === 'scheduled') info.runAt = runAt;
  if (rec.startedAt !== undefined) info.startedAt = new Date(rec.startedAt);
  if (rec.finishedAt !== undefined) info.finishedAt = new Date(rec.finishedAt);
  if (rec.expiresAt !== undefined) info.expiresAt = new Date(rec.expiresAt);
  if (rec.startBy !== undefined) info.startBy = new Date(rec.startBy);
  if (rec.worker !== undefined) info.worker = rec.worker;
  if (rec.idempotencyKey !== undefined) info.idempotencyKey = rec.idempotencyKey;
  if (rec.traceparent !== undefined) info.traceparent = rec.traceparent;
  if (rec.flow !== undefined) info.flow = rec.flow;
  if (rec.schedule) info.schedule = { id: rec.schedule.id, at: new Date(rec.schedule.at), backfilled: rec.schedule.backfilled };
  if (corrupt.length) info.corrupt = corrupt;
  return info;
}

/**
 * A stored error (the JSON text of a `RunError`, or anything else found in storage) read without ever
 * throwing: the one reader behind `decodeRun`, the HTTP layer's run JSON, the dashboard and the CLI.
 */
export function readRunError(text: string | undefined): RunError | undefined {
  if (text === undefined || text === null) return undefined;
  const parsed = safeParse(text);
  const v = parsed.ok ? parsed.value : undefined;
  if (!v || typeof v !== 'object' || Array.isArray(v)) return { name: 'Error', message: String(parsed.ok ? parsed.value : text) };
  const o = v as Record<string, unknown>;
  const out: RunError = {
    name: typeof o.name === 'string' ? o.name : 'Error',
    message: typeof o.message === 'string' ? o.message : String(o.message ?? ''),
  };
  if (typeof o.reason === 'string') out.reason = o.reason;
  if (typeof o.stack === 'string') out.stack = o.stack;
  return out;
}

/** An error on one line, `Name: message (reason)`, for lists. */
export function errorLine(e: RunError): string {
  return `${e.name}: ${e.message}${e.reason ? ` (${e.reason})` : ''}`;
}

/** The JSON text stored for an error thrown by a handler (or made by Errand). */
export function encodeError(err: unknown, reason?: string): string {
  const e: RunError =
    err instanceof Error
      ? { name: err.name || 'Error', message: String(err.message ?? '') }
      : {
          name: 'NonError',
          message: (() => {
            try {
              return typeof err === 'string' ? err : (JSON.stringify(err) ?? String(err));
            } catch {
              return String(err);
            }
          })(),
        };
  if (err instanceof Error && err.stack) e.stack = err.stack;
  if (reason) e.reason = reason;
  return JSON.stringify(e);
}
