/**
 * The Redis broker's notifications: `waitForWork` (one blocking connection per queue, see
 * `wake.ts`), and `watch` / `onCancel` over pub/sub (one subscriber connection, created on first
 * use): the events channel carries the ids of watched runs that changed, the cancels channel the
 * ids of active runs cancelled.
 */
import { QUEUE_NAME } from '../../core/ids.ts';
import { KeyedListeners, Listeners } from '../shared/listeners.ts';
import { sleepUntilWoken } from '../shared/wait.ts';
import { splitRunId } from './codec.ts';
import { ConnectionGate, createClient } from './connection.ts';
import type { RedisCore } from './core.ts';
import { runScript } from './scripts.ts';
import { WakeListener } from './wake.ts';

export class RedisNotifications {
  readonly #c: RedisCore;
  #sub: ConnectionGate | undefined;
  /** Set by onCancel(): subscribing or subscribed to cancel notices (unset when subscribing failed). */
  #cancelsSubscribed = false;
  /** The subscription to cancel notices while it is being made (reserve waits for it, boundedly). */
  cancelsPending: Promise<void> | undefined;
  readonly #subscriptions = new Map<string, Promise<void>>();
  readonly #watchers: KeyedListeners<string, []>;
  readonly #cancelListeners: Listeners<[string[]]>;
  readonly #wakeGates = new Map<string, ConnectionGate>();
  readonly #wakeListeners = new Map<string, WakeListener>();
  readonly #waits = new Set<() => void>();

  constructor(core: RedisCore) {
    this.#c = core;
    this.#watchers = new KeyedListeners('Redis broker: a watch listener', core.logger);
    this.#cancelListeners = new Listeners('Redis broker: an onCancel listener', core.logger);
  }

  async waitForWork(queues: readonly string[], until: number | null, signal: AbortSignal): Promise<void> {
    if (signal.aborted || this.#c.closed) return;
    const delay = until === null ? null : until - Date.now();
    if (delay !== null && delay <= 0) return;
    const listeners = [...new Set(queues)].filter((q) => QUEUE_NAME.test(q)).map((q) => this.#wakeListener(q));
    await sleepUntilWoken(delay, signal, (wake) => {
      this.#waits.add(wake);
      for (const l of listeners) l.add(wake);
      return () => {
        for (const l of listeners) l.delete(wake);
        this.#waits.delete(wake);
      };
    });
  }

  #wakeListener(queue: string): WakeListener {
    const c = this.#c;
    let l = this.#wakeListeners.get(queue);
    if (!l) {
      const gate = new ConnectionGate(createClient(c.target, 'blocking', c.tls), c.where, c.logger, c.connectWaitMs, true);
      this.#wakeGates.set(queue, gate);
      const k = c.k(queue);
      l = new WakeListener(
        gate.client,
        k.wake,
        () => c.main.ready().then(() => runScript(c.redis, 'wake', [k.wake], [])),
        () => c.closed,
      );
      this.#wakeListeners.set(queue, l);
    }
    return l;
  }

  #subscriber(): ConnectionGate {
    const c = this.#c;
    if (!this.#sub) {
      const gate = new ConnectionGate(createClient(c.target, 'subscriber', c.tls), c.where, c.logger, c.connectWaitMs, true);
      let readyOnce = false;
      gate.client.on('ready', () => {
        // After a reconnect, events may have been missed: tell every watcher to look again.
        if (readyOnce) this.#watchers.emitAll();
        readyOnce = true;
      });
      gate.client.on('message', (channel: string, message: string) => {
        if (channel === c.eventsChannel) this.#watchers.emit(message);
        else if (channel === c.cancelsChannel) this.#cancelListeners.emit([message]);
      });
      this.#sub = gate;
    }
    return this.#sub;
  }

  #subscribe(channel: string): Promise<void> {
    let p = this.#subscriptions.get(channel);
    if (!p) {
      p = this.#subscriber()
        .client.subscribe(channel)
        .then(() => undefined);
      p.catch(() => this.#subscriptions.delete(channel));
      this.#subscriptions.set(channel, p);
    }
    return p;
  }

  async watch(id: string, listener: () => void): Promise<() => void> {
    const c = this.#c;
    // A registration per call: the same function watched twice is stopped twice independently.
    const stop = this.#watchers.add(id, listener);
    const parts = splitRunId(id);
    if (!parts) return stop;
    try {
      await c.main.ready();
      await this.#subscribe(c.eventsChannel);
      await runScript(c.redis, 'watch', [c.k(parts.queue).run(parts.rid)], []);
    } catch (err) {
      stop();
      throw err;
    }
    return stop;
  }

  onCancel(listener: (ids: string[]) => void): () => void {
    const c = this.#c;
    const remove = this.#cancelListeners.add(listener);
    if (!c.closed && !this.#cancelsSubscribed) {
      const subscribed = this.#subscribe(c.cancelsChannel).then(
        () => {
          if (this.cancelsPending === subscribed) this.cancelsPending = undefined;
        },
        (err: unknown) => {
          if (this.cancelsPending === subscribed) {
            this.cancelsPending = undefined;
            this.#cancelsSubscribed = false;
          }
          c.logger?.warn(
            { err: (err as Error).message },
            'Redis: subscribing to cancel notices failed (renew still reports cancelled runs)',
          );
        },
      );
      this.#cancelsSubscribed = true;
      this.cancelsPending = subscribed;
    }
    return remove;
  }

  /** Resolves every wait and closes the blocking and subscriber connections. */
  async close(): Promise<void> {
    for (const done of [...this.#waits]) done();
    for (const gate of this.#wakeGates.values()) gate.client.disconnect();
    await Promise.all([...this.#wakeGates.values()].map((g) => g.close()));
    if (this.#sub) await this.#sub.close();
  }

  /** Drops every listener (after the connections are closed). */
  clear(): void {
    this.#watchers.clear();
    this.#cancelListeners.clear();
  }
}
