// What a Celery task registered on an Errand worker is: its options, its handler and the context the
// handler gets. Apart from worker.ts so that run.ts (one message's run) and the worker share it.
import type { ZodType } from 'zod';

export interface CeleryTaskContext {
  /** The Celery task id. */
  id: string;
  name: string;
  /** How many times this task was retried before this attempt (Celery's `request.retries`). */
  retries: number;
  rootId: string;
  parentId: string | null;
  /**
   * Aborted when the worker stops without grace, when the task is revoked with `terminate=True`, or
   * at its time limits (the reason a `SoftTimeLimitExceeded` or `TimeLimitExceeded` error).
   */
  signal: AbortSignal;
  /** Ends this attempt and sends the task again (Celery's `self.retry()`). Never returns. */
  retry(o?: { countdown?: number; eta?: Date; error?: unknown }): never;
}

export type CeleryHandler<A extends unknown[] = unknown[], K extends Record<string, unknown> = Record<string, unknown>> = (
  args: A,
  kwargs: K,
  ctx: CeleryTaskContext,
) => unknown;

export interface CeleryTaskOptions {
  /** A zod schema for the positional arguments (a `z.tuple([...])` or `z.array(...)`). */
  args?: ZodType;
  /** A zod schema for the keyword arguments (`z.object({...})`). */
  kwargs?: ZodType;
  /** Retries allowed (Celery's `max_retries`). Default 3. */
  maxRetries?: number;
  /** Seconds before a retry when none is given (Celery's `default_retry_delay`). Default 180. */
  retryDelay?: number;
  /** Errors that retry the task on their own (Celery's `autoretry_for`). Default none. */
  autoretry?: (err: unknown) => boolean;
  /** Store STARTED when the handler starts (Celery's `track_started`). Default false. */
  trackStarted?: boolean;
}

export interface RegisteredTask {
  name: string;
  options: CeleryTaskOptions;
  handler: CeleryHandler;
}
