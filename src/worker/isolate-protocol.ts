// What a worker and its isolates (worker threads or child processes running handlers, see
// isolates.ts and isolate-entry.ts) say to each other, and how an error crosses between them. Both
// sides speak in structured clones (postMessage; `fork` with `serialization: 'advanced'`).
import { BackOff, type BackOffScope, PermanentError, TaskTimeoutError } from '../core/errors.ts';

/** The worker asks an isolate to run one attempt. */
export interface RunMessage {
  t: 'run';
  /** The file URL of the module that defines the task. */
  module: string;
  task: string;
  /** The handler's function name: the export to look for when the module defines no task by that name. */
  handlerName: string;
  /** The run's input, as stored (JSON text); the isolate checks it against its own copy of the schema. */
  input: string;
  runId: string;
  queue: string;
  attempt: number;
  traceparent?: string;
  /** The run's schedule mark, when a schedule created it (ctx.schedule). */
  schedule?: { id: string; at: number; backfilled: boolean };
  /** The worker's log level: the handler's `ctx.logger` logs at it. */
  logLevel: string;
}

/** The worker stops the attempt (cancel, lost lease, shutdown): the handler's `ctx.signal` aborts. */
export interface AbortMessage {
  t: 'abort';
  reason: WireError;
}

export type ToIsolate = RunMessage | AbortMessage;

export type FromIsolate =
  /** `ctx.progress(value)` (already checked to be JSON). */
  | { t: 'progress'; value: unknown }
  /** One line of `ctx.logger` (pino's JSON line). */
  | { t: 'log'; line: string }
  /** The attempt ended. */
  | { t: 'done'; ok: true; value: unknown }
  | { t: 'done'; ok: false; error: WireError }
  /** An error nobody caught (a rejection or throw outside the handler's promise): the isolate exits after sending it. */
  | { t: 'crash'; error: WireError };

/** An error as it crosses: its name, message and stack, and whether it is permanent. */
export interface WireError {
  name: string;
  message: string;
  stack?: string;
  permanent?: boolean;
  /** A value thrown that is not an Error. */
  nonError?: boolean;
  /** A `BackOff` (ctx.backOff): how long, and what it holds back. */
  backOff?: { ms: number; scope: BackOffScope };
}

export function toWire(err: unknown): WireError {
  if (err instanceof Error) {
    const out: WireError = { name: err.name || 'Error', message: String(err.message ?? '') };
    if (err.stack) out.stack = err.stack;
    if (err instanceof PermanentError || err.name === 'PermanentError') out.permanent = true;
    if (err instanceof BackOff) out.backOff = { ms: err.ms, scope: err.scope };
    return out;
  }
  let message: string;
  try {
    message = typeof err === 'string' ? err : (JSON.stringify(err) ?? String(err));
  } catch {
    message = String(err);
  }
  return { name: 'NonError', message, nonError: true };
}

/** The error of a WireError: a PermanentError when permanent (so that it is not retried), else an Error with the same name. */
export function fromWire(w: WireError): Error {
  let err: Error;
  if (w.backOff) err = new BackOff(w.backOff.ms, { scope: w.backOff.scope, reason: w.message });
  else if (w.permanent) err = new PermanentError(w.message);
  else if (w.name === 'TaskTimeoutError') err = new TaskTimeoutError(w.message);
  else err = new Error(w.message);
  if (w.name !== err.name) Object.defineProperty(err, 'name', { value: w.name, enumerable: false, configurable: true, writable: true });
  if (w.stack) err.stack = w.stack;
  return err;
}
