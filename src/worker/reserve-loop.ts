// The reservation loop: the worker's engine. It asks the broker for runs sized to the free slots
// (with the outcomes of finished runs riding along), hands each run to the worker to execute or to
// hold (prefetch), sleeps on the broker's wake-up signal when there is nothing to do, and backs off
// after a broker error. The worker (worker.ts) owns it, starts it once connected and waits for its
// calls on shutdown; the leases of what it reserves are kept by the lease book (leases.ts).
import type { Broker, Reservation } from '../broker/types.ts';
import { backOffMs, type LeaseBook, sleep } from './leases.ts';

/** What the loop needs from its worker. */
export interface ReserveLoopHost {
  readonly id: string;
  readonly queues: string[];
  readonly concurrency: number;
  readonly leaseMs: number;
  readonly book: LeaseBook;
  /** Aborted on stop: ends the wait for work and a back-off. */
  readonly signal: AbortSignal;
  /** Whether the worker still takes runs (false once stopping). */
  running(): boolean;
  /** Starts a run in a free slot. */
  execute(run: Reservation): void;
  /** Logs a broker failure (rate-limited). */
  brokerError(err: unknown, message: string): void;
  /** Logs an error that should not happen. */
  unexpected(err: unknown): void;
}

/** Runs shorter than this on average (ms) let the worker prefetch one run (see ReserveLoop#prefetchOk). */
const PREFETCH_RUN_MS = 10;

export class ReserveLoop {
  readonly #host: ReserveLoopHost;
  /** Set by the worker once connected. */
  broker!: Broker;
  /** Broker calls of the engine (#pump) in progress: reservations, the wait for work, a back-off. */
  readonly #calls = new Set<Promise<void>>();
  #pumpScheduled = false;
  /** Reservation calls in flight, and the slots they may fill. */
  #inflight = 0;
  #reserving = 0;
  /** The last reply brought no run: wait for work once no call is in flight. */
  #drained = false;
  #nextAt: number | null = null;
  /** The `now` of the reserve that gave #nextAt. */
  #reservedAt = 0;
  #waiting = false;
  #backingOff = false;
  #failures = 0;
  #lastFull = false;
  /** Average handler time of recent runs, in ms (exponentially weighted). */
  #runMs = Number.POSITIVE_INFINITY;
  /**
   * The run on its last chance this worker holds, if any. A run that has lost all but one of its
   * leases (the connected broker's `maxLeaseLosses`, less one) may be what killed its workers, and
   * every run of a dead worker loses its lease: two such runs never share a worker, so a run that
   * kills its worker takes the runs beside it down only while they have leases to spare. A second
   * one is handed back (`release`: no attempt, no lost lease counted) for a worker that holds none;
   * having handed one back, the worker reserves nothing more until its own is done (it would be
   * handed the same run again at once: handed-back runs go to the head of the queue), or for one
   * lease at most (its own may hang: the worker then goes on, handing the other back again when it
   * comes).
   */
  #lastChance: string | undefined;
  /** When the worker last handed a run on its last chance back (0: it holds nothing back). */
  #handedBackAt = 0;

  constructor(host: ReserveLoopHost) {
    this.#host = host;
  }

  /** The loop's broker calls in progress (stop waits for them), settled or not. */
  get calls(): ReadonlySet<Promise<void>> {
    return this.#calls;
  }

  /** Runs the engine at the next turn of the event loop (at most once per turn): something changed. */
  schedule(): void {
    if (this.#pumpScheduled) return;
    this.#pumpScheduled = true;
    setImmediate(() => this.pump());
  }

  /** A run's handler took `ms`: feeds the average that decides prefetch. */
  observeRunTime(ms: number): void {
    this.#runMs = this.#runMs === Number.POSITIVE_INFINITY ? ms : this.#runMs * 0.9 + ms * 0.1;
  }

  /**
   * The worker's engine, run (at most once per turn of the event loop, see #schedule) whenever
   * something changes: a run finished, a reservation came back, a wait or a back-off ended.
   *
   * Reservations: with a remote broker, while the last reply filled every slot it asked for (runs
   * are waiting), up to two calls in flight, each for at most half the slots, so that the runs of
   * one reply execute while the broker serves the other call (the worker's and the broker's work
   * overlap instead of taking turns); otherwise one call at a time (at a low rate a second call
   * would come back empty: one more broker call per run, for nothing).
   * Outcomes of finished runs ride along with the next reservation (one round trip for both);
   * when no reservation goes out, they are sent on their own (LeaseBook#flush). When a reply brings
   * no run, the worker waits for the broker's wake-up signal (or the next due time) once its other
   * call is back.
   */
  pump(): void {
    this.#pumpScheduled = false;
    const { book, concurrency } = this.#host;
    if (this.#host.running() && !this.#waiting && !this.#backingOff && !this.#holdingBack()) {
      const calls = this.broker.remote && this.#lastFull ? 2 : 1;
      const chunk = Math.ceil(concurrency / calls);
      const capacity = concurrency + (this.#prefetchOk() ? 1 : 0);
      const free = capacity - book.active.size - book.buffer.length - this.#reserving;
      if (!this.#drained && free > 0 && this.#inflight < calls && (this.#inflight === 0 || free >= chunk)) {
        this.#reserve(Math.min(free, chunk));
        // The second call goes out a turn later, so that the broker's replies come apart.
        if (free > chunk) this.schedule();
      }
      if (this.#drained && this.#inflight === 0) this.#wait();
    }
    if (book.pending.length && !book.flushing) void book.flush();
  }

  /**
   * Prefetch: while runs are short (their average time under PREFETCH_RUN_MS) and the last
   * reservation filled every slot it asked for (more runs are likely queued), the worker holds one
   * run more than its concurrency, so that the next run starts as soon as a slot frees instead of
   * a round trip later (at concurrency 1 the worker's and the broker's work then overlap). The
   * held run waits at most about one short run; it is renewed, handed back on stop, and recovered
   * like an active run if the worker dies.
   */
  #prefetchOk(): boolean {
    return this.#lastFull && this.#runMs < PREFETCH_RUN_MS;
  }

  #reserve(max: number): void {
    const host = this.#host;
    const book = host.book;
    const settle = book.takePending();
    const now = Date.now();
    this.#inflight++;
    this.#reserving += max;
    this.#track(
      this.broker
        .reserve({
          workerId: host.id,
          queues: host.queues,
          max,
          leaseMs: host.leaseMs,
          now,
          ...(settle.length ? { settle } : {}),
        })
        .then(
          async (result) => {
            this.#inflight--;
            this.#reserving -= max;
            this.#failures = 0;
            if (settle.length) book.settled(settle, result.settled);
            if (!host.running()) {
              // Stopped while reserving: hand these back at once.
              if (result.runs.length) await book.release(result.runs.map((r) => ({ id: r.id, attempt: r.attempt })));
              return;
            }
            const handBack = this.#handBack(result.runs);
            for (const run of result.runs) {
              if (handBack.includes(run)) continue;
              if (book.active.size < host.concurrency) host.execute(run);
              else book.buffer.push(run);
            }
            if (handBack.length) await book.release(handBack.map((r) => ({ id: r.id, attempt: r.attempt })));
            this.#drained = result.runs.length === 0;
            this.#lastFull = result.runs.length === max;
            this.#nextAt = result.nextAt;
            this.#reservedAt = now;
            this.schedule();
          },
          (err: unknown) => {
            this.#inflight--;
            this.#reserving -= max;
            book.putBack(settle);
            host.brokerError(err, 'reserve failed; retrying');
            this.#backOff();
          },
        ),
    );
  }

  /** Whether the worker holds its run on its last chance, having handed another back within a lease (see #lastChance). */
  #holdingBack(): boolean {
    const held = this.#lastChance;
    const { book, leaseMs } = this.#host;
    if (held !== undefined && !book.active.has(held) && !book.buffer.some((r) => r.id === held)) {
      this.#lastChance = undefined;
      this.#handedBackAt = 0;
    }
    if (this.#handedBackAt !== 0 && Date.now() - this.#handedBackAt >= leaseMs) this.#handedBackAt = 0;
    return this.#handedBackAt !== 0;
  }

  /** The runs of a reservation on their last chance that the worker hands back: all but one it may keep (see #lastChance). */
  #handBack(runs: readonly Reservation[]): Reservation[] {
    const back: Reservation[] = [];
    this.#holdingBack(); // forgets a run on its last chance that is done
    // The broker's threshold, not an option of the app: it fails a run after its own maxLeaseLosses.
    // At 1 every run is on its last chance: holding one would make the worker run one at a time.
    const lastChance = Math.max(1, this.broker.maxLeaseLosses - 1);
    for (const run of runs) {
      if ((run.leaseLosses ?? 0) < lastChance) continue;
      if (this.#lastChance === undefined) this.#lastChance = run.id;
      else back.push(run);
    }
    if (back.length) {
      this.#handedBackAt = Date.now();
      // The hold ends with the worker's own run (its end runs the engine) or after a lease.
      this.#endHoldLater();
    }
    return back;
  }

  /**
   * Runs the engine once a lease has passed since the hand-back. A timer counts from the event
   * loop's cached time, which can be many ms behind `Date.now()` on a busy loop, so it may fire
   * before the hold is over by the clock; it is then set again for what is left (were it not, the
   * worker would reserve nothing until its own last-chance run ended).
   */
  #endHoldLater(): void {
    const left = this.#handedBackAt === 0 ? 0 : this.#handedBackAt + this.#host.leaseMs - Date.now();
    if (left <= 0) this.schedule();
    else setTimeout(() => this.#endHoldLater(), left + 1).unref();
  }

  /** Keeps a call of the engine in #calls until it has settled (stop waits for them). */
  #track(call: Promise<void>): void {
    this.#calls.add(call);
    void call.catch((err: unknown) => this.#host.unexpected(err)).finally(() => this.#calls.delete(call));
  }

  /**
   * Nothing to reserve: sleeps until the broker signals work, the next due time, or stop. The due
   * time the broker gave (`nextAt`: the earliest scheduled run or lease expiry) was true when the
   * last reserve ran; a lease taken since then by another worker (which may die) expires no earlier
   * than that reserve's time plus a lease, so the worker wakes by then to look again. Among workers
   * with the same `leaseMs`, an idle worker thus reserves a dead worker's runs as their leases
   * expire, without an enqueue to wake it: one reserve per lease period while idle, more only while
   * other workers hold leases (it wakes at each expiry they had when it looked).
   */
  #wait(): void {
    this.#waiting = true;
    const recheck = this.#reservedAt + this.#host.leaseMs;
    const until = this.#nextAt === null ? recheck : Math.min(this.#nextAt, recheck);
    this.#track(
      this.broker.waitForWork(this.#host.queues, until, this.#host.signal).then(
        () => {
          this.#waiting = false;
          this.#drained = false;
          this.schedule();
        },
        (err: unknown) => {
          this.#waiting = false;
          this.#drained = false;
          this.#host.brokerError(err, 'waiting for work failed; retrying');
          this.#backOff();
        },
      ),
    );
  }

  /** After a broker error: no reservation for a while (longer after each consecutive failure). */
  #backOff(): void {
    this.#failures++;
    this.#backingOff = true;
    this.#track(
      sleep(backOffMs(this.#failures), this.#host.signal).then(() => {
        this.#backingOff = false;
        this.schedule();
      }),
    );
  }
}
