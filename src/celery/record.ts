/**
 * Celery tasks in Errand's dashboard: a worker given an Errand broker (`errand: { broker }`) records
 * every message it finished as a finished run of that broker (`recordFinished`), and announces
 * itself there as a worker (heartbeat), so that Errand's dashboard, `errand inspect`, `/metrics` and
 * the broker's stats show Celery tasks beside Errand's runs.
 *
 * - A Celery queue `<name>` is shown as the Errand queue `celery-<name>` (characters an Errand queue
 *   name cannot hold become `_`), so that no Errand worker ever takes a recorded run for its own.
 * - The run's task is the Celery task name; its input `{ "args": [...], "kwargs": {...}, "id": <the
 *   Celery task id> }`; its result the value stored in the result backend; a failure its exception
 *   type and message (reason `invalid_input` when the arguments failed validation, `expired` when the
 *   message had expired); its attempts the message's `retries` + 1. A retry is not recorded: the
 *   attempt that ends the task is, with the attempts made.
 * - Each task id is recorded once (idempotency key `celery:<id>`), so a redelivered message that
 *   ends twice shows once.
 * - Recording happens after the message is acknowledged and never holds it: records are sent in
 *   batches, one broker call at a time, and a failed call is logged and dropped (the result backend
 *   stays the record of truth).
 */
import { hostname as osHostname } from 'node:os';
import type { Logger } from 'pino';
import type { Broker, BrokerInspector, FinishedRun } from '../broker/types.ts';
import { ConfigError } from '../core/errors.ts';
import { newRunId } from '../core/ids.ts';
import type { RunError } from '../core/run.ts';

export interface CeleryRecordOptions {
  /** The Errand broker to record into: the app's (`await errand.broker()`) or `connectBroker(url)`. */
  broker: Broker;
  /** How long a recorded run is kept, in ms. Default 7 days. */
  retentionMs?: number;
}

/** A message that ended here, as the worker saw it. */
export interface EndedMessage {
  celeryQueue: string;
  task: string;
  taskId: string;
  args: unknown;
  kwargs: unknown;
  retries: number;
  receivedAt: number;
  startedAt: number;
  outcome: { ok: true; value: unknown } | { ok: false; error: RunError };
}

const DAY = 86_400_000;
/** Records sent per broker call at most. */
const BATCH = 500;
/** Records waiting beyond this are dropped (and counted in the log): a broker that is down must not grow the worker's memory. */
const MAX_WAITING = 10_000;
const HEARTBEAT_EVERY_MS = 5000;

/** The Errand queue that shows Celery queue `name`. */
export function recordQueueName(name: string): string {
  return `celery-${name.replace(/[^A-Za-z0-9_-]/g, '_')}`.slice(0, 64);
}

export class CeleryRecorder {
  readonly #broker: Broker;
  readonly #retentionMs: number;
  readonly #logger: Logger | undefined;
  #waiting: FinishedRun[] = [];
  #sending: Promise<void> | undefined;
  #dropped = 0;
  #lastError = 0;
  #timer: NodeJS.Timeout | undefined;
  readonly #workerId: string;

  constructor(options: CeleryRecordOptions, logger: Logger | undefined, worker: string) {
    const broker = options?.broker as Partial<Broker> | undefined;
    if (!broker || typeof broker.recordFinished !== 'function') {
      throw new ConfigError('createCeleryWorker: errand.broker must be an Errand broker (await errand.broker(), or connectBroker(url))');
    }
    const ret = options.retentionMs ?? 7 * DAY;
    if (!Number.isFinite(ret) || ret < 0) throw new ConfigError('createCeleryWorker: errand.retentionMs must be a number of ms >= 0');
    this.#broker = options.broker;
    this.#retentionMs = ret;
    this.#logger = logger;
    this.#workerId = `${worker}.${process.pid}`;
  }

  /** Queues `m` to be recorded. */
  add(m: EndedMessage, worker: string): void {
    if (this.#waiting.length >= MAX_WAITING) {
      this.#dropped++;
      return;
    }
    const queue = recordQueueName(m.celeryQueue);
    let input: string;
    try {
      input = JSON.stringify({ args: m.args, kwargs: m.kwargs, id: m.taskId });
    } catch {
      input = JSON.stringify({ id: m.taskId });
    }
    const base = {
      id: newRunId(queue, m.receivedAt),
      task: m.task,
      queue,
      input,
      attempts: m.retries + 1,
      worker,
      startedAt: m.startedAt,
      retentionMs: this.#retentionMs,
      idempotencyKey: `celery:${m.taskId}`,
      idempotencyTtl: Math.max(1, this.#retentionMs),
      origin: 'celery',
    };
    let run: FinishedRun;
    if (m.outcome.ok) {
      let result: string | null;
      try {
        result = JSON.stringify(m.outcome.value) ?? null;
      } catch {
        result = null;
      }
      run = { ...base, outcome: 'succeeded', result };
    } else {
      run = { ...base, outcome: 'failed', error: JSON.stringify(m.outcome.error) };
    }
    this.#waiting.push(run);
    this.#kick();
  }

  #kick(): void {
    if (this.#sending) return;
    this.#sending = new Promise<void>((resolve) => setImmediate(resolve)).then(async () => {
      while (this.#waiting.length) {
        const batch = this.#waiting.splice(0, BATCH);
        try {
          await this.#broker.recordFinished(batch, Date.now());
        } catch (err) {
          this.#dropped += batch.length;
          this.#logError(err);
        }
      }
      this.#sending = undefined;
    });
  }

  #logError(err: unknown): void {
    const now = Date.now();
    if (now - this.#lastError < 10_000) return;
    this.#lastError = now;
    this.#logger?.warn(
      { err: (err as Error)?.message, dropped: this.#dropped },
      "celery worker: could not record finished tasks in Errand's broker (the dashboard will miss them; the result backend has them)",
    );
  }

  /** Announces the worker in the Errand broker every few seconds, when the broker keeps workers. */
  startHeartbeat(info: () => { queues: string[]; concurrency: number; active: number }, startedAt: number): void {
    const inspector = this.#broker as Partial<BrokerInspector>;
    if (typeof inspector.heartbeat !== 'function') return;
    const beat = () => {
      const i = info();
      inspector
        .heartbeat?.(
          {
            id: this.#workerId,
            host: osHostname(),
            pid: process.pid,
            queues: i.queues.map(recordQueueName),
            concurrency: i.concurrency,
            active: i.active,
            startedAt,
          },
          HEARTBEAT_EVERY_MS * 3,
          Date.now(),
        )
        .catch((err: unknown) => this.#logError(err));
    };
    beat();
    this.#timer = setInterval(beat, HEARTBEAT_EVERY_MS);
    this.#timer.unref();
  }

  /** Sends what is waiting, stops the heartbeat and removes the worker from the broker's list. */
  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    while (this.#sending) await this.#sending;
    const inspector = this.#broker as Partial<BrokerInspector>;
    if (this.#timer && typeof inspector.removeWorker === 'function') await inspector.removeWorker(this.#workerId).catch(() => {});
    this.#timer = undefined;
  }
}
