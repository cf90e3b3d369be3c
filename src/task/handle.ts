import type { Broker, RunState } from '../broker/types.ts';
import { FINISHED_STATES } from '../broker/types.ts';
import { ResultTimeoutError, RunCancelledError, RunFailedError, RunNotFoundError } from '../core/errors.ts';
import { decodeRun, type RunInfo } from '../core/run-info.ts';
import { coalesced } from '../core/coalesce.ts';
import { checkTimerMs } from '../core/fields.ts';

const RETENTION_HINT =
  'A task with retention 0 deletes each run as it finishes, result included: to await results, keep finished runs a while (e.g. retention: 60_000)';

/** A reference to one run: ask its state, wait for its result, cancel it. */
export class RunHandle<R = unknown> {
  readonly id: string;
  /** False when an idempotency key matched: this handle then points at the earlier run. */
  readonly created: boolean;
  /** The run's state when the handle was made by an enqueue (the broker's answer); undefined for `errand.run(id)`. */
  readonly enqueuedState: RunState | undefined;
  readonly #broker: () => Promise<Broker>;

  constructor(id: string, broker: () => Promise<Broker>, created = true, enqueuedState?: RunState) {
    this.id = id;
    this.created = created;
    this.enqueuedState = enqueuedState;
    this.#broker = broker;
  }

  /** The run as stored now. Throws `RunNotFoundError` when it does not exist (or expired). */
  async info(): Promise<RunInfo<R>> {
    const rec = await (await this.#broker()).getRun(this.id);
    if (!rec) throw new RunNotFoundError(this.id);
    return decodeRun<R>(rec);
  }

  /** The run's state now. */
  async status(): Promise<RunState> {
    return (await this.info()).state;
  }

  /**
   * Waits until the run finishes, woken by the broker (no busy polling), and returns its result.
   * Throws `RunFailedError` (with the run's error) when it failed, `RunCancelledError` when it was
   * cancelled, `ResultTimeoutError` when `timeout` ms pass first (the run goes on; omit `timeout`
   * to wait without limit, a `timeout` other than a number of ms from 0 to 2147483647, Node's
   * longest timer, is a `ConfigError`), and
   * `RunNotFoundError` when the run does not exist, or no longer does: a task with `retention: 0`
   * (or `retention: { succeeded: 0 }`) deletes each run as it finishes, result included, so its
   * result cannot be awaited; keep finished runs a little while (e.g. `retention: 60_000`) to read it.
   */
  async result(options: { timeout?: number } = {}): Promise<R> {
    // A timer: Node fires a longer one after 1 ms. Omitted, the wait has no limit.
    const timeout = options?.timeout === undefined ? undefined : checkTimerMs(options.timeout, 'run.result(): timeout');
    const broker = await this.#broker();
    return new Promise<R>((resolve, reject) => {
      let done = false;
      let stop: (() => void) | undefined;
      let timer: NodeJS.Timeout | undefined;
      const finish = (fn: () => void) => {
        if (done) return;
        done = true;
        if (timer) clearTimeout(timer);
        stop?.();
        fn();
      };
      const check = coalesced(
        async () => {
          const rec = await broker.getRun(this.id);
          if (!rec) return finish(() => reject(new RunNotFoundError(this.id, RETENTION_HINT)));
          if (FINISHED_STATES.has(rec.state)) {
            const info = decodeRun<R>(rec);
            if (info.state === 'succeeded') return finish(() => resolve(info.result as R));
            if (info.state === 'cancelled') return finish(() => reject(new RunCancelledError(this.id)));
            return finish(() => reject(new RunFailedError(this.id, info.error ?? { name: 'Error', message: 'unknown error' })));
          }
        },
        { stopped: () => done, onError: (err) => finish(() => reject(err)) },
      );
      if (timeout !== undefined) {
        timer = setTimeout(() => finish(() => reject(new ResultTimeoutError(this.id, timeout))), timeout);
      }
      broker
        .watch(this.id, () => void check())
        .then(
          (unwatch) => {
            if (done) unwatch();
            else {
              stop = unwatch;
              void check();
            }
          },
          (err) => finish(() => reject(err)),
        );
    });
  }

  /**
   * Cancels the run if it has not finished. A queued or scheduled run never starts; an active run's
   * handler sees its signal abort. Returns the run's state afterwards (`cancelled`, or the state it
   * had already finished in).
   */
  async cancel(): Promise<RunState> {
    const out = await (await this.#broker()).cancel(this.id, Date.now());
    if (out.outcome === 'not_found') throw new RunNotFoundError(this.id);
    return out.outcome === 'cancelled' ? 'cancelled' : out.state;
  }
}
