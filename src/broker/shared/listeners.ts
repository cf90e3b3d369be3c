/**
 * Listener registries with error-safe dispatch, as both brokers keep them (a run's watchers, the
 * onCancel listeners): a listener's error is its own, logged and never stops the dispatch, and a
 * listener added twice is two registrations, each removed by its own `remove`.
 */
import type { Logger } from 'pino';

export class Listeners<A extends unknown[]> {
  readonly #entries = new Set<(...args: A) => void>();
  readonly #what: string;
  readonly #logger: Logger | undefined;

  /** `what` names the listeners in the log line of one that throws (e.g. "SQLite broker: a watch listener"). */
  constructor(what: string, logger?: Logger) {
    this.#what = what;
    this.#logger = logger;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Adds a listener; the returned function removes this registration (again: nothing). */
  add(listener: (...args: A) => void): () => void {
    const entry = (...args: A) => listener(...args);
    this.#entries.add(entry);
    return () => {
      this.#entries.delete(entry);
    };
  }

  /** Calls every listener (those added during the dispatch wait for the next one). */
  emit(...args: A): void {
    if (this.#entries.size === 0) return;
    for (const fn of [...this.#entries]) {
      try {
        fn(...args);
      } catch (err) {
        this.#logger?.error({ err }, `${this.#what} threw`);
      }
    }
  }

  clear(): void {
    this.#entries.clear();
  }
}

/** Listener registries by key (e.g. run id): a key's registry exists while it has listeners. */
export class KeyedListeners<K, A extends unknown[]> {
  readonly #byKey = new Map<K, Listeners<A>>();
  readonly #what: string;
  readonly #logger: Logger | undefined;

  constructor(what: string, logger?: Logger) {
    this.#what = what;
    this.#logger = logger;
  }

  get size(): number {
    return this.#byKey.size;
  }

  has(key: K): boolean {
    return this.#byKey.has(key);
  }

  keys(): IterableIterator<K> {
    return this.#byKey.keys();
  }

  add(key: K, listener: (...args: A) => void): () => void {
    let set = this.#byKey.get(key);
    if (!set) this.#byKey.set(key, (set = new Listeners<A>(this.#what, this.#logger)));
    const registry = set;
    const remove = registry.add(listener);
    return () => {
      remove();
      if (registry.size === 0 && this.#byKey.get(key) === registry) this.#byKey.delete(key);
    };
  }

  emit(key: K, ...args: A): void {
    this.#byKey.get(key)?.emit(...args);
  }

  emitAll(...args: A): void {
    for (const set of [...this.#byKey.values()]) set.emit(...args);
  }

  clear(): void {
    this.#byKey.clear();
  }
}
