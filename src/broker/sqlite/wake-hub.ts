/**
 * Wake-ups for the SQLite broker, without polling.
 *
 * One hub per database file per process, shared by every SqliteBroker opened on that file:
 * - in-process, brokers emit `work` (queues where work may have appeared), `runs` (ids of runs that
 *   changed) and `cancel` (ids of active runs cancelled) on it, after their transaction commits;
 * - across processes, it watches the file's folder (inotify on Linux) and emits `change` when the
 *   database or its `-wal` file is written by anyone. Readers in WAL mode only touch the `-shm`
 *   file (through mmap), and a transaction that changes nothing writes nothing, so an idle system
 *   produces no events.
 * - for a shared memory database (a memory URI, which any thread of this process can open), hubs
 *   are per thread (each thread has its own modules), so the hub of each thread joins a
 *   BroadcastChannel named after the URI: after its brokers' in-process events it posts one message
 *   (per turn), and a message from another thread's hub is emitted as `change`.
 *
 * `change` is throttled: the first write after a quiet period is reported at once (latency), writes
 * within the next `THROTTLE_MS` are coalesced, and one more `change` always follows the window. That
 * trailing report covers a writer whose last WAL write was seen before it published the commit in
 * the WAL index (a reader woken in between would still see the old snapshot).
 *
 * The folder watcher never keeps the process alive (`persistent: false`): waiters hold their own timers.
 */
import { EventEmitter } from 'node:events';
import { type FSWatcher, watch } from 'node:fs';
import { basename, dirname } from 'node:path';
import { BroadcastChannel } from 'node:worker_threads';
import type { Logger } from 'pino';

export const THROTTLE_MS = 10;

export interface WakeHubEvents {
  work: [queues: string[]];
  runs: [ids: string[]];
  cancel: [ids: string[]];
  change: [];
}

/** A listener of one of the hub's events. */
export type WakeHubListener<K extends keyof WakeHubEvents> = (...args: WakeHubEvents[K]) => void;

/**
 * The hub holds its EventEmitter rather than being one: its declaration (dist/*.d.ts, which
 * consumers' tsc checks with skipLibCheck false) then depends on no signature of @types/node's
 * EventEmitter, which differs between its versions (an override of `emit` no longer fits 26's).
 */
export class WakeHub {
  readonly key: string;
  refs = 0;
  /** Untyped inside: the methods below give the types. */
  readonly #events = new EventEmitter();
  #watcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #pending = false;
  #closed = false;
  /** A shared memory database's channel to the hubs of the same URI in other threads. */
  #channel: BroadcastChannel | undefined;
  #posting = false;

  constructor(key: string, file: string | null, logger?: Logger, sharedMemory?: string) {
    this.#events.setMaxListeners(0);
    this.key = key;
    if (sharedMemory !== undefined) {
      const channel = new BroadcastChannel(`errand sqlite memory ${sharedMemory}`);
      channel.onmessage = () => {
        if (!this.#closed) this.#events.emit('change');
      };
      channel.unref(); // waiters hold their own timers
      this.#channel = channel;
      return;
    }
    if (file === null) return;
    const names = new Set([basename(file), `${basename(file)}-wal`]);
    try {
      this.#watcher = watch(dirname(file), { persistent: false }, (_event, name) => {
        if (name === null || names.has(String(name))) this.#fileChanged();
      });
      this.#watcher.on('error', (err) => {
        logger?.warn(
          { err, file },
          'SQLite broker: watching the database folder failed; other processes wake this one only every few seconds',
        );
        this.#stopWatching();
      });
    } catch (err) {
      logger?.warn({ err, file }, 'SQLite broker: cannot watch the database folder; other processes wake this one only every few seconds');
    }
  }

  /** In-process events, and for a shared memory database one message (per turn) to the other threads. */
  emit<K extends keyof WakeHubEvents>(event: K, ...args: WakeHubEvents[K]): boolean {
    const listened = this.#events.emit(event, ...args);
    if (this.#channel && event !== 'change' && !this.#posting) {
      this.#posting = true;
      queueMicrotask(() => {
        this.#posting = false;
        if (!this.#closed) this.#channel?.postMessage(0);
      });
    }
    return listened;
  }

  on<K extends keyof WakeHubEvents>(event: K, listener: WakeHubListener<K>): this {
    this.#events.on(event, listener);
    return this;
  }

  off<K extends keyof WakeHubEvents>(event: K, listener: WakeHubListener<K>): this {
    this.#events.off(event, listener);
    return this;
  }

  #fileChanged(): void {
    if (this.#closed) return;
    if (this.#timer) {
      this.#pending = true;
      return;
    }
    this.emit('change');
    this.#timer = setTimeout(this.#flush, THROTTLE_MS);
    this.#timer.unref();
  }

  readonly #flush = (): void => {
    this.#timer = undefined;
    if (this.#closed) return;
    const more = this.#pending;
    this.#pending = false;
    this.emit('change');
    if (more) {
      this.#timer = setTimeout(this.#flush, THROTTLE_MS);
      this.#timer.unref();
    }
  };

  #stopWatching(): void {
    try {
      this.#watcher?.close();
    } catch {
      // already closed
    }
    this.#watcher = undefined;
  }

  close(): void {
    this.#closed = true;
    this.#stopWatching();
    if (this.#posting) this.#channel?.postMessage(0); // the last events, before the channel goes
    this.#channel?.close();
    this.#channel = undefined;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#events.removeAllListeners();
  }
}

const hubs = new Map<string, WakeHub>();

/**
 * The hub of a database file (shared within the process, watching its folder); for a memory database
 * (file null), the hub of its memory URI `shared` (shared within the process, nothing to watch), or a
 * private one for `:memory:`.
 */
export function acquireHub(file: string | null, logger?: Logger, shared?: string): WakeHub {
  if (file === null && shared === undefined) {
    const hub = new WakeHub(':memory:', null, logger);
    hub.refs = 1;
    return hub;
  }
  const key = file ?? `memory ${shared}`;
  let hub = hubs.get(key);
  if (!hub) {
    hub = new WakeHub(key, file, logger, file === null ? shared : undefined);
    hubs.set(key, hub);
  }
  hub.refs++;
  return hub;
}

export function releaseHub(hub: WakeHub): void {
  hub.refs--;
  if (hub.refs > 0) return;
  if (hubs.get(hub.key) === hub) hubs.delete(hub.key);
  hub.close();
}
