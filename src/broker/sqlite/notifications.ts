/**
 * The SQLite broker's notifications: `waitForWork`, `watch` and `onCancel`. Events come from the
 * wake hub (`wake-hub.ts`: in-process events, and a watch on the database folder for writes from
 * other processes); a safety timer re-checks watched runs and the cancel log every `safetyWakeMs`
 * while anyone listens, against lost file events.
 */
import { KeyedListeners, Listeners } from '../shared/listeners.ts';
import { sleepUntilWoken } from '../shared/wait.ts';
import type { SqliteCore } from './core.ts';
import { num, type Row } from './statements.ts';

interface Waiter {
  queues: readonly string[];
  wake: () => void;
}

export class SqliteNotifications {
  readonly #c: SqliteCore;
  readonly #waiters = new Set<Waiter>();
  /** Queue signal revisions as of this broker's last reserve (see `queue_signals` in schema.ts); reserve fills it. */
  readonly seen = new Map<string, number>();
  readonly #watched: KeyedListeners<string, []>;
  /** The last revision of each watched run given to its listeners (null: no such run). */
  readonly #revs = new Map<string, number | null>();
  readonly #cancelListeners: Listeners<[string[]]>;
  /** Last cancel_log entry given to the onCancel listeners. */
  #cancelCursor = 0;
  /** Re-checks watched runs and the cancel log every `safetyWakeMs` while anyone listens. */
  #safetyTimer: NodeJS.Timeout | undefined;

  constructor(core: SqliteCore) {
    this.#c = core;
    this.#watched = new KeyedListeners('SQLite broker: a watch listener', core.logger);
    this.#cancelListeners = new Listeners('SQLite broker: an onCancel listener', core.logger);
    core.hub.on('work', this.#onWork);
    core.hub.on('runs', this.#onRuns);
    core.hub.on('cancel', this.#onCancelled);
    core.hub.on('change', this.#onChange);
  }

  waitForWork(queues: readonly string[], until: number | null, signal: AbortSignal): Promise<void> {
    const c = this.#c;
    if (c.closed || signal.aborted) return Promise.resolve();
    const delay = until === null ? c.safetyWakeMs : Math.min(until - Date.now(), c.safetyWakeMs);
    if (delay <= 0) return Promise.resolve();
    // Work that appeared since this broker's last reserve: e.g. another process's enqueue between
    // that reserve and this call, whose file event found no waiter.
    try {
      if (this.#signalsMoved(queues, this.#readSignals())) return Promise.resolve();
    } catch {
      return Promise.resolve(); // storage trouble: let the caller's reserve meet it
    }
    return sleepUntilWoken(delay, signal, (wake) => {
      const waiter: Waiter = { queues, wake };
      this.#waiters.add(waiter);
      return () => this.#waiters.delete(waiter);
    });
  }

  watch(id: string, listener: () => void): () => void {
    const c = this.#c;
    c.open();
    if (!this.#watched.has(id)) {
      const rows = c.read(() => c.rows('revs', JSON.stringify([id])));
      this.#revs.set(id, rows[0] ? (num(rows[0].rev) ?? -1) : null);
    }
    const remove = this.#watched.add(id, listener);
    this.#updateSafetyTimer();
    return () => {
      remove();
      if (!this.#watched.has(id)) this.#revs.delete(id);
      this.#updateSafetyTimer();
    };
  }

  onCancel(listener: (ids: string[]) => void): () => void {
    const c = this.#c;
    if (this.#cancelListeners.size === 0 && !c.closed) {
      // Report cancellations from now on.
      try {
        this.#cancelCursor = num(c.row('cancelsLast')?.seq) ?? 0;
      } catch (err) {
        c.logger?.warn({ err }, 'SQLite broker: reading the cancel log failed');
      }
    }
    const remove = this.#cancelListeners.add(listener);
    this.#updateSafetyTimer();
    return () => {
      remove();
      this.#updateSafetyTimer();
    };
  }

  /** Stops everything: waiters resolve, listeners are dropped, the hub is left. */
  close(): void {
    this.#wakeAll();
    this.#watched.clear();
    this.#revs.clear();
    this.#cancelListeners.clear();
    this.#updateSafetyTimer();
    const hub = this.#c.hub;
    hub.off('work', this.#onWork);
    hub.off('runs', this.#onRuns);
    hub.off('cancel', this.#onCancelled);
    hub.off('change', this.#onChange);
  }

  /**
   * The safety timer runs while anyone watches a run or listens for cancels. It keeps the process
   * alive only for watchers (someone awaits a result); a worker's onCancel does not need to.
   */
  #updateSafetyTimer(): void {
    const needed = !this.#c.closed && (this.#watched.size > 0 || this.#cancelListeners.size > 0);
    if (!needed) {
      if (this.#safetyTimer) clearInterval(this.#safetyTimer);
      this.#safetyTimer = undefined;
      return;
    }
    this.#safetyTimer ??= setInterval(() => {
      this.#checkRevs(null);
      this.#checkCancels();
    }, this.#c.safetyWakeMs);
    if (this.#watched.size > 0) this.#safetyTimer.ref();
    else this.#safetyTimer.unref();
  }

  #readSignals(): Map<string, number> {
    const map = new Map<string, number>();
    for (const r of this.#c.rows('signalAll')) map.set(String(r.queue), num(r.rev) ?? 0);
    return map;
  }

  #signalsMoved(queues: readonly string[], current: Map<string, number>): boolean {
    for (const q of queues) {
      const cur = current.get(q) ?? 0;
      const seen = this.seen.get(q);
      if (seen === undefined) this.seen.set(q, cur);
      else if (cur !== seen) return true;
    }
    return false;
  }

  #wakeAll(): void {
    for (const w of [...this.#waiters]) w.wake();
  }

  readonly #onWork = (queues: string[]): void => {
    if (this.#waiters.size === 0) return;
    for (const w of [...this.#waiters]) if (w.queues.some((q) => queues.includes(q))) w.wake();
  };

  readonly #onRuns = (ids: string[]): void => {
    if (this.#watched.size === 0) return;
    const mine = ids.filter((id) => this.#watched.has(id));
    if (mine.length) this.#checkRevs(mine);
  };

  readonly #onCancelled = (): void => {
    this.#checkCancels();
  };

  /** Someone (another process, or this one) wrote the file: wake the waiters whose queues moved, tell watchers and cancel listeners. */
  readonly #onChange = (): void => {
    if (this.#c.closed) return;
    try {
      if (this.#waiters.size) {
        const current = this.#readSignals();
        for (const w of [...this.#waiters]) if (this.#signalsMoved(w.queues, current)) w.wake();
      }
    } catch (err) {
      // The file is busy or gone: wake everyone, they will see for themselves.
      this.#c.logger?.warn({ err }, 'SQLite broker: reading queue signals failed');
      this.#wakeAll();
    }
    this.#checkRevs(null);
    this.#checkCancels();
  };

  /** Calls the listeners of watched runs (all, or `ids`) whose revision changed since last seen. */
  #checkRevs(ids: string[] | null): void {
    if (this.#c.closed || this.#watched.size === 0) return;
    const list = ids ?? [...this.#watched.keys()];
    let rows: Row[];
    try {
      rows = this.#c.rows('revs', JSON.stringify(list));
    } catch (err) {
      this.#c.logger?.warn({ err }, 'SQLite broker: reading watched runs failed');
      return;
    }
    const revs = new Map<string, number>();
    for (const r of rows) revs.set(String(r.id), num(r.rev) ?? -1);
    for (const id of list) {
      if (!this.#watched.has(id)) continue;
      const rev = revs.get(id) ?? null;
      if (rev === this.#revs.get(id)) continue;
      this.#revs.set(id, rev);
      this.#watched.emit(id);
    }
  }

  /** Gives the onCancel listeners the active runs cancelled (anywhere) since last time. */
  #checkCancels(): void {
    if (this.#c.closed || this.#cancelListeners.size === 0) return;
    let rows: Row[];
    try {
      rows = this.#c.rows('cancelsSince', this.#cancelCursor);
    } catch (err) {
      this.#c.logger?.warn({ err }, 'SQLite broker: reading the cancel log failed');
      return;
    }
    if (rows.length === 0) return;
    this.#cancelCursor = num(rows[rows.length - 1]?.seq) ?? this.#cancelCursor;
    this.#cancelListeners.emit(rows.map((r) => String(r.run_id)));
  }
}
