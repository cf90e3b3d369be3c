/**
 * Wake-ups for idle workers: one blocking connection per queue (BLPOP on the queue's wake list),
 * shared by every `waitForWork` of this broker instance that waits on that queue.
 *
 * A token popped wakes every local waiter of the queue (spurious wake-ups are allowed); a token
 * popped when nobody waits any more (the waiter timed out or aborted during the BLPOP) is put
 * back, so no wake-up is lost. Each BLPOP blocks at most BLOCK_SECONDS: the connection stops
 * blocking shortly after its last waiter leaves, and `close()` disconnects it at once.
 */
import type { RedisClient } from './connection.ts';

export const BLOCK_SECONDS = 5;
const RETRY_MS = 500;

export class WakeListener {
  readonly #client: RedisClient;
  readonly #key: string;
  readonly #putBack: () => Promise<unknown>;
  readonly #isClosed: () => boolean;
  readonly #waiters = new Set<() => void>();
  #running = false;

  constructor(client: RedisClient, key: string, putBack: () => Promise<unknown>, isClosed: () => boolean) {
    this.#client = client;
    this.#key = key;
    this.#putBack = putBack;
    this.#isClosed = isClosed;
  }

  add(waiter: () => void): void {
    this.#waiters.add(waiter);
    if (!this.#running) void this.#loop();
  }

  delete(waiter: () => void): void {
    this.#waiters.delete(waiter);
  }

  async #loop(): Promise<void> {
    this.#running = true;
    try {
      while (this.#waiters.size > 0 && !this.#isClosed()) {
        let token: unknown;
        try {
          token = await this.#client.blpop(this.#key, BLOCK_SECONDS);
        } catch {
          // Disconnected (the client reconnects by itself) or closed: try again a little later.
          if (this.#isClosed()) break;
          await new Promise((r) => setTimeout(r, RETRY_MS).unref());
          continue;
        }
        if (!token) continue;
        if (this.#waiters.size > 0) {
          const waiters = [...this.#waiters];
          this.#waiters.clear();
          for (const w of waiters) w();
        } else if (!this.#isClosed()) {
          await this.#putBack().catch(() => {});
        }
      }
    } finally {
      this.#running = false;
    }
  }
}
