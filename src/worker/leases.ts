// The lease book: every run this worker holds a lease on, and what becomes of the leases. A lease is
// held from reservation until the broker has stored the run's outcome or taken the run back: while
// the run is prefetched (buffer), while its handler runs (active), and while its outcome waits to be
// stored (pending, then settling). The book renews them all, stops the handlers of runs whose lease
// is lost (cancelled, or recovered by another worker), stores outcomes in batches, and hands runs
// back to the queue on shutdown.
import type { Logger } from 'pino';
import type { Broker, Lease, Reservation, Settlement, SettleStatus } from '../broker/types.ts';
import { ErrandError } from '../core/errors.ts';
import type { RunEvent } from './options.ts';
import { type ActiveRun, abort } from './run-context.ts';

export class WorkerStoppedError extends ErrandError {
  override name = 'WorkerStoppedError';
}

export class LeaseLostError extends ErrandError {
  override name = 'LeaseLostError';
}

/** What the lease book needs from its worker. */
export interface LeaseBookHost {
  readonly id: string;
  readonly leaseMs: number;
  readonly logger: Logger;
  /** Logs a broker failure (rate-limited). */
  brokerError(err: unknown, message: string): void;
  /** Reports a run that is dropped from the book before it started (`lost` or `released`). */
  report(event: RunEvent): void;
}

export const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

/** Back-off after `failures` consecutive broker errors, in ms: 200 ms doubling up to 5 s. */
export const backOffMs = (failures: number) => Math.min(5000, 100 * 2 ** Math.min(failures, 6));

export class LeaseBook {
  /** Runs whose handler is running. */
  readonly active = new Map<string, ActiveRun>();
  /** Prefetched runs, not started yet (see ReserveLoop#prefetchOk in reserve-loop.ts). */
  buffer: Reservation[] = [];
  /** Outcomes not yet sent to the broker: they go with the next reservation, or on their own (flush). */
  pending: Settlement[] = [];
  /** Finished runs whose outcome is not yet stored: their leases are still renewed. */
  readonly #settling = new Map<string, Settlement>();
  #flushing: Promise<void> | undefined;
  /** Set by the worker once connected. */
  broker!: Broker;
  readonly #host: LeaseBookHost;

  constructor(host: LeaseBookHost) {
    this.#host = host;
  }

  /** Whether outcomes are being stored on their own (flush). */
  get flushing(): Promise<void> | undefined {
    return this.#flushing;
  }

  /** Queues an outcome: the caller sends it with its next reservation, or on its own (flush). */
  settle(s: Settlement): void {
    this.#settling.set(s.id, s);
    this.pending.push(s);
  }

  /** Takes the pending outcomes, to send them with a reservation. */
  takePending(): Settlement[] {
    const batch = this.pending;
    this.pending = [];
    return batch;
  }

  /** Puts back outcomes whose call failed, ahead of those queued meanwhile. */
  putBack(batch: Settlement[]): void {
    this.pending = batch.concat(this.pending);
  }

  /** Outcomes the broker has stored (or found lost): their leases need no more renewing. */
  settled(batch: readonly Settlement[], statuses: readonly SettleStatus[] | undefined): void {
    batch.forEach((s, i) => {
      this.#settling.delete(s.id);
      if (statuses?.[i] === 'lost')
        this.#host.logger.warn(
          { runId: s.id, outcome: s.outcome },
          'outcome not stored: the run was cancelled or its lease expired meanwhile',
        );
    });
  }

  /** Starts storing the pending outcomes on their own, unless that is already under way. */
  flush(): Promise<void> {
    this.#flushing ??= this.#flush();
    return this.#flushing;
  }

  /** Stores pending outcomes in batches, one call at a time; on broker errors keeps them and tries again (their leases are still renewed). */
  async #flush(): Promise<void> {
    let failures = 0;
    while (this.pending.length) {
      const batch = this.takePending();
      try {
        const statuses = await this.broker.settle(this.#host.id, batch, Date.now());
        failures = 0;
        this.settled(batch, statuses);
      } catch (err) {
        failures++;
        this.putBack(batch);
        this.#host.brokerError(err, `storing ${batch.length} outcome(s) failed; retrying`);
        await sleep(backOffMs(failures));
      }
    }
    this.#flushing = undefined;
  }

  /** Every lease held: active runs (unless detached), outcomes not yet stored, prefetched runs. */
  leases(): Lease[] {
    const leases: Lease[] = [];
    for (const e of this.active.values()) if (!e.detached) leases.push({ id: e.run.id, attempt: e.run.attempt });
    for (const s of this.#settling.values()) if (!this.active.has(s.id)) leases.push({ id: s.id, attempt: s.attempt });
    for (const r of this.buffer) leases.push({ id: r.id, attempt: r.attempt });
    return leases;
  }

  /** Extends every lease; the runs whose lease is gone are detached (`lost`) and their outcomes dropped. */
  async renew(): Promise<void> {
    const leases = this.leases();
    if (leases.length === 0) return;
    try {
      const lost = await this.broker.renew(this.#host.id, leases, this.#host.leaseMs, Date.now());
      for (const id of lost) {
        this.detach(id, 'lost', new LeaseLostError(`Run ${id} is no longer held by this worker (cancelled, or its lease expired)`));
        if (this.#settling.delete(id)) this.pending = this.pending.filter((s) => s.id !== id);
      }
    } catch (err) {
      this.#host.brokerError(err, 'lease renewal failed; retrying');
    }
  }

  /** Stops a run's handler without settling it: its lease is gone, or it is being handed back. */
  detach(id: string, why: 'lost' | 'released', reason: Error): void {
    // A prefetched run not started yet: dropped (its lease is gone, or it is being handed back).
    const held = this.buffer.findIndex((r) => r.id === id);
    if (held >= 0) {
      const [run] = this.buffer.splice(held, 1);
      this.#host.report({ type: why, run: run!, durationMs: 0 });
    }
    const entry = this.active.get(id);
    if (!entry || entry.detached) return;
    entry.detached = why;
    abort(entry, reason);
  }

  /**
   * On shutdown: empties the buffer and detaches every active run (`released`, their handlers see
   * their signal abort). Returns the leases to hand back once the outcomes are stored.
   */
  detachAll(): Lease[] {
    const leases: Lease[] = this.buffer.map((r) => ({ id: r.id, attempt: r.attempt }));
    this.buffer = [];
    for (const e of this.active.values()) {
      if (e.detached) continue;
      leases.push({ id: e.run.id, attempt: e.run.attempt });
      this.detach(e.run.id, 'released', new WorkerStoppedError(`Worker ${this.#host.id} is stopping; the run is handed back to the queue`));
    }
    return leases;
  }

  /** Hands runs back to their queue (a few tries: their leases expire and the runs come back anyway). */
  async release(leases: Lease[]): Promise<void> {
    for (let i = 0; ; i++) {
      try {
        await this.broker.release(this.#host.id, leases, Date.now());
        return;
      } catch (err) {
        this.#host.brokerError(err, 'handing runs back failed');
        // Their leases will expire and the runs come back anyway; do not hold the shutdown forever.
        if (i >= 3) return;
        await sleep(200 * 2 ** i);
      }
    }
  }
}
