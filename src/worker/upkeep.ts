// The worker's upkeep: what it does on timers beside running handlers. It renews its leases (through
// the lease book), prunes finished runs past their retention, and, with a broker that is also an
// inspector, writes the heartbeat record that lists it among the live workers (and removes it on
// stop). The worker (worker.ts) starts it once connected and stops it last.
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { Broker, BrokerInspector } from '../broker/types.ts';
import type { LeaseBook } from './leases.ts';

/** What the upkeep needs from its worker. */
export interface UpkeepHost {
  readonly id: string;
  readonly queues: string[];
  readonly concurrency: number;
  readonly renewEvery: number;
  readonly pruneEvery: number;
  readonly logger: Logger;
  readonly book: LeaseBook;
  /** Logs a broker failure (rate-limited). */
  brokerError(err: unknown, message: string): void;
}

const HEARTBEAT_EVERY_MS = 5000;

export class Upkeep {
  readonly #host: UpkeepHost;
  readonly #startedAt = Date.now();
  #broker: Broker | undefined;
  #renewTimer: NodeJS.Timeout | undefined;
  #pruneTimer: NodeJS.Timeout | undefined;
  #heartbeatTimer: NodeJS.Timeout | undefined;

  constructor(host: UpkeepHost) {
    this.#host = host;
  }

  /** Starts the timers (the first heartbeat at once). */
  start(broker: Broker): void {
    const host = this.#host;
    this.#broker = broker;
    this.#renewTimer = setInterval(() => void host.book.renew(), host.renewEvery);
    this.#pruneTimer = setInterval(() => void this.#prune(), host.pruneEvery);
    this.#renewTimer.unref();
    this.#pruneTimer.unref();
    if (isInspector(broker)) {
      void this.#heartbeat(broker);
      this.#heartbeatTimer = setInterval(() => void this.#heartbeat(broker), HEARTBEAT_EVERY_MS);
      this.#heartbeatTimer.unref();
    }
  }

  /** Stops the timers and removes the worker's heartbeat record (a failure to do so is ignored: it expires). */
  async stop(): Promise<void> {
    clearInterval(this.#renewTimer);
    clearInterval(this.#pruneTimer);
    clearInterval(this.#heartbeatTimer);
    if (this.#heartbeatTimer && isInspector(this.#broker)) await this.#broker.removeWorker(this.#host.id).catch(() => {});
  }

  async #heartbeat(broker: BrokerInspector): Promise<void> {
    const host = this.#host;
    try {
      await broker.heartbeat(
        {
          id: host.id,
          host: hostname(),
          pid: process.pid,
          queues: host.queues,
          concurrency: host.concurrency,
          active: host.book.active.size,
          startedAt: this.#startedAt,
        },
        HEARTBEAT_EVERY_MS * 3,
        Date.now(),
      );
    } catch (err) {
      host.brokerError(err, 'heartbeat failed');
    }
  }

  async #prune(): Promise<void> {
    try {
      const removed = await this.#broker!.prune(Date.now());
      if (removed) this.#host.logger.debug({ removed }, 'pruned finished runs past their retention');
    } catch (err) {
      this.#host.brokerError(err, 'pruning failed');
    }
  }
}

function isInspector(b: unknown): b is Broker & BrokerInspector {
  return typeof (b as BrokerInspector)?.heartbeat === 'function';
}
