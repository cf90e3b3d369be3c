/**
 * The guard: the one door every caller above the broker layer goes through (the app's `broker()`
 * hands out a guarded broker, so the worker, run handles, HTTP, the dashboard and the CLI all do).
 * Modelled on Oban's engine dispatch. It
 *
 * - refuses a broker that does not say its `maxLeaseLosses` (the workers' last-chance threshold);
 * - checks and normalises what brokers would otherwise each check (or not): `now` must be a finite
 *   number of ms (rounded down), queue names must be queue names (`ConfigError` otherwise; an
 *   invalid name given to `purge` or `retryFailed` names no run: 0, without a call);
 * - maps failures: an Errand error (`ConfigError`, `BrokerUnavailableError`, `CorruptRunError`...)
 *   passes as it is, anything else (a driver's error, a bug) becomes `BrokerUnavailableError` with
 *   the original as its `cause`; so every failure out of a guarded broker is an Errand error;
 * - adds tracing: with an OpenTelemetry SDK registered, one client span per call
 *   (`errand.broker <method>`); without one, nothing.
 *
 * Cost: no extra await; one `.then` per call (the error mapping), plus for `reserve` a copy of the
 * request only when its `now` is not already an integer. The inspection methods exist on the
 * guard only when the broker has them (`BrokerInspector` is optional).
 */
import { context, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { ConfigError } from '../../core/errors.ts';
import { tracing } from '../../core/tracing.ts';
import { checkQueueName, QUEUE_NAME } from '../../core/ids.ts';
import { show } from '../../core/show.ts';
import { asBrokerError, checkFlow, checkNow } from './checks.ts';
import type {
  Broker,
  BrokerInspector,
  CancelOutcome,
  DueSchedules,
  EnqueueResult,
  FinishedRun,
  FlowCounts,
  FlowKeyPage,
  FlowKeyQuery,
  FireOutcome,
  FireRequest,
  Lease,
  MinuteStats,
  NewRun,
  NewWorkflow,
  WorkflowCreated,
  QueueCounts,
  ReserveRequest,
  ReserveResult,
  RetryOutcome,
  RunFilter,
  RunPage,
  RunRecord,
  WorkflowCancelOutcome,
  WorkflowRecord,
  ScheduleDefinition,
  ScheduleRecord,
  Settlement,
  SettleStatus,
  WorkerInfo,
  UpsertScheduleResult,
  WorkerStatus,
} from '../types.ts';
import { checkFlowKeyQuery } from './flow.ts';
import { checkWorkflow } from './workflow.ts';
import { checkDefinition, checkFire, checkScheduleId } from './schedules.ts';

/** The marker of a guarded broker (so that guarding twice is a no-op). */
const GUARDED = Symbol.for('errand.guardedBroker');

export function isGuarded(broker: Broker): boolean {
  return (broker as unknown as Record<symbol, unknown>)[GUARDED] === true;
}

/** The broker behind the guard (the broker itself when it is not guarded). */
export function unguarded<B extends Broker>(broker: B): B {
  return ((broker as unknown as { [GUARDED]?: boolean; inner?: B })[GUARDED] ? (broker as unknown as { inner: B }).inner : broker) as B;
}

type Inspecting = Broker & Partial<BrokerInspector>;

class GuardedBroker implements Broker {
  readonly [GUARDED] = true;
  readonly kind: Broker['kind'];
  readonly remote: boolean | undefined;
  readonly maxLeaseLosses: number;
  readonly inner: Inspecting;
  /** Queue names already checked (a worker asks for the same few on every reserve). */
  readonly #valid = new Set<string>();
  readonly #fail: (err: unknown) => never;

  constructor(inner: Inspecting) {
    this.inner = inner;
    this.kind = inner.kind;
    this.remote = inner.remote;
    // The workers' last-chance threshold comes from here: a broker that does not say is refused, not guessed at.
    const losses: unknown = inner.maxLeaseLosses;
    if (typeof losses !== 'number' || !Number.isInteger(losses) || losses < 1) {
      throw new ConfigError(
        `The ${inner.kind} broker: maxLeaseLosses (how many lost leases fail a run, which workers must know) must be a positive integer, got ${show(losses)}`,
      );
    }
    this.maxLeaseLosses = losses;
    const kind = inner.kind;
    this.#fail = (err: unknown): never => {
      throw asBrokerError(err, kind);
    };
    // The inspector's methods only when the broker has them (callers test for them).
    const self = this as unknown as Record<string, unknown>;
    for (const [name, impl] of Object.entries(INSPECTOR)) {
      if (typeof (inner as unknown as Record<string, unknown>)[name] === 'function') self[name] = impl;
    }
  }

  #queues(queues: readonly string[], method: string): void {
    for (const q of queues) {
      if (this.#valid.has(q)) continue;
      checkQueueName(q, method);
      if (this.#valid.size < 10_000) this.#valid.add(q);
    }
  }

  /** Calls the broker: errors mapped, a span when tracing. `call` runs synchronously inside. */
  run<T>(method: string, call: (b: Inspecting) => Promise<T>): Promise<T> {
    if (tracing()) return this.#traced(method, call);
    try {
      return call(this.inner).then(undefined, this.#fail);
    } catch (err) {
      return Promise.reject(asBrokerError(err, this.kind));
    }
  }

  #traced<T>(method: string, call: (b: Inspecting) => Promise<T>): Promise<T> {
    const span = trace.getTracer('errand').startSpan(`errand.broker ${method}`, {
      kind: SpanKind.CLIENT,
      attributes: { 'errand.broker': this.kind, 'errand.broker.method': method },
    });
    const done = (err?: unknown) => {
      if (err !== undefined) {
        if (err instanceof Error) span.recordException(err);
        span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
      }
      span.end();
    };
    let p: Promise<T>;
    try {
      p = context.with(trace.setSpan(context.active(), span), () => call(this.inner));
    } catch (err) {
      const e = asBrokerError(err, this.kind);
      done(e);
      return Promise.reject(e);
    }
    return p.then(
      (v) => {
        done();
        return v;
      },
      (err: unknown) => {
        const e = asBrokerError(err, this.kind);
        done(e);
        throw e;
      },
    );
  }

  // The hot path (reserve, settle, renew) is written out, without closures when not tracing.

  reserve(req: ReserveRequest): Promise<ReserveResult> {
    try {
      this.#queues(req.queues, 'reserve');
      if (!Number.isInteger(req.now)) req = { ...req, now: checkNow(req.now, 'reserve') };
    } catch (err) {
      return Promise.reject(err);
    }
    if (tracing()) return this.#traced('reserve', (b) => b.reserve(req));
    try {
      return this.inner.reserve(req).then(undefined, this.#fail);
    } catch (err) {
      return Promise.reject(asBrokerError(err, this.kind));
    }
  }

  settle(workerId: string, settlements: readonly Settlement[], now: number): Promise<SettleStatus[]> {
    if (!Number.isInteger(now)) {
      try {
        now = checkNow(now, 'settle');
      } catch (err) {
        return Promise.reject(err);
      }
    }
    if (tracing()) return this.#traced('settle', (b) => b.settle(workerId, settlements, now));
    try {
      return this.inner.settle(workerId, settlements, now).then(undefined, this.#fail);
    } catch (err) {
      return Promise.reject(asBrokerError(err, this.kind));
    }
  }

  renew(workerId: string, leases: readonly Lease[], leaseMs: number, now: number): Promise<string[]> {
    return this.#timed('renew', now, (t) => this.run('renew', (b) => b.renew(workerId, leases, leaseMs, t)));
  }

  /** Checks `now`, then calls `fn` with it normalised (a rejected promise when it is invalid). */
  #timed<T>(method: string, now: number, fn: (now: number) => Promise<T>): Promise<T> {
    let t: number;
    try {
      t = checkNow(now, method);
    } catch (err) {
      return Promise.reject(err);
    }
    return fn(t);
  }

  enqueue(runs: readonly NewRun[], now: number): Promise<EnqueueResult[]> {
    for (const run of runs) {
      if (run.startBy !== undefined && !Number.isFinite(run.startBy)) {
        return Promise.reject(new ConfigError(`enqueue: run ${String(run.id)}: startBy must be epoch ms, got ${show(run.startBy)}`));
      }
      const d = run.debounce;
      if (
        d !== undefined &&
        (typeof d?.key !== 'string' || (d.maxAt !== null && !Number.isFinite(d.maxAt)) || run.idempotencyKey !== undefined)
      ) {
        return Promise.reject(
          new ConfigError(
            `enqueue: run ${String(run.id)}: debounce must be { key: string, maxAt: epoch ms | null }, without an idempotency key`,
          ),
        );
      }
      if (run.flow !== undefined) {
        try {
          checkFlow(run.flow, `enqueue: run ${String(run.id)}`);
        } catch (err) {
          return Promise.reject(err);
        }
      }
    }
    return this.#timed('enqueue', now, (t) => this.run('enqueue', (b) => b.enqueue(runs, t)));
  }

  recordFinished(runs: readonly FinishedRun[], now: number): Promise<boolean[]> {
    return this.#timed('recordFinished', now, (t) => this.run('recordFinished', (b) => b.recordFinished(runs, t)));
  }

  release(workerId: string, leases: readonly Lease[], now: number): Promise<void> {
    return this.#timed('release', now, (t) => this.run('release', (b) => b.release(workerId, leases, t)));
  }

  progress(workerId: string, lease: Lease, progress: string): Promise<SettleStatus> {
    return this.run('progress', (b) => b.progress(workerId, lease, progress));
  }

  getRun(id: string): Promise<RunRecord | null> {
    return this.run('getRun', (b) => b.getRun(id));
  }

  cancel(id: string, now: number): Promise<CancelOutcome> {
    return this.#timed('cancel', now, (t) => this.run('cancel', (b) => b.cancel(id, t)));
  }

  createWorkflow(workflow: NewWorkflow, now: number): Promise<WorkflowCreated> {
    return this.#timed('createWorkflow', now, (t) =>
      this.run('createWorkflow', (b) => {
        this.#queues(checkWorkflow(workflow), 'createWorkflow');
        return b.createWorkflow(workflow, t);
      }),
    );
  }

  getWorkflow(id: string): Promise<WorkflowRecord | null> {
    return this.run('getWorkflow', (b) => b.getWorkflow(id));
  }

  cancelWorkflow(id: string, now: number): Promise<WorkflowCancelOutcome> {
    return this.#timed('cancelWorkflow', now, (t) => this.run('cancelWorkflow', (b) => b.cancelWorkflow(id, t)));
  }

  retry(id: string, now: number): Promise<RetryOutcome> {
    return this.#timed('retry', now, (t) => this.run('retry', (b) => b.retry(id, t)));
  }

  counts(queues?: readonly string[]): Promise<Record<string, QueueCounts>> {
    return this.run('counts', (b) => b.counts(queues));
  }

  prune(now: number): Promise<number> {
    return this.#timed('prune', now, (t) => this.run('prune', (b) => b.prune(t)));
  }

  waitForWork(queues: readonly string[], until: number | null, signal: AbortSignal): Promise<void> {
    try {
      this.#queues(queues, 'waitForWork');
    } catch (err) {
      return Promise.reject(err);
    }
    // Not traced: an idle worker's sleep is not a broker call worth a span.
    try {
      return this.inner.waitForWork(queues, until, signal).then(undefined, this.#fail);
    } catch (err) {
      return Promise.reject(asBrokerError(err, this.kind));
    }
  }

  watch(id: string, listener: () => void): Promise<() => void> {
    return this.run('watch', (b) => b.watch(id, listener));
  }

  onCancel(listener: (ids: string[]) => void): () => void {
    return this.inner.onCancel(listener);
  }

  ping(): Promise<void> {
    return this.run('ping', (b) => b.ping());
  }

  close(): Promise<void> {
    return this.run('close', (b) => b.close());
  }

  // Schedules: ids, queues, times and definitions checked here, once for every broker.

  upsertSchedule(def: ScheduleDefinition, now: number): Promise<UpsertScheduleResult> {
    return this.run('upsertSchedule', (b) => {
      checkDefinition(def);
      checkQueueName(def.queue, 'upsertSchedule');
      return b.upsertSchedule(def, checkNow(now, 'upsertSchedule'));
    });
  }

  fireSchedule(req: FireRequest): Promise<FireOutcome> {
    return this.run('fireSchedule', (b) => {
      checkFire(req);
      checkQueueName(req.queue, 'fireSchedule');
      return b.fireSchedule({ ...req, now: checkNow(req.now, 'fireSchedule') });
    });
  }

  listSchedules(queues?: readonly string[]): Promise<ScheduleRecord[]> {
    return this.run('listSchedules', (b) => {
      if (queues) this.#queues(queues, 'listSchedules');
      return b.listSchedules(queues);
    });
  }

  dueSchedules(queues: readonly string[], until: number, limit: number): Promise<DueSchedules> {
    return this.run('dueSchedules', (b) => {
      this.#queues(queues, 'dueSchedules');
      const n = Math.max(1, Math.min(10_000, Math.floor(Number(limit) || 1)));
      return b.dueSchedules(queues, checkNow(until, 'dueSchedules'), n);
    });
  }

  getSchedule(queue: string, id: string): Promise<ScheduleRecord | null> {
    return this.run('getSchedule', (b) => b.getSchedule(checkQueueName(queue, 'getSchedule'), checkScheduleId(id, 'getSchedule')));
  }

  pauseSchedule(queue: string, id: string, paused: boolean, now: number): Promise<boolean> {
    return this.run('pauseSchedule', (b) =>
      b.pauseSchedule(
        checkQueueName(queue, 'pauseSchedule'),
        checkScheduleId(id, 'pauseSchedule'),
        paused === true,
        checkNow(now, 'pauseSchedule'),
      ),
    );
  }

  deleteSchedule(queue: string, id: string): Promise<boolean> {
    return this.run('deleteSchedule', (b) =>
      b.deleteSchedule(checkQueueName(queue, 'deleteSchedule'), checkScheduleId(id, 'deleteSchedule')),
    );
  }
}

type Self = GuardedBroker & { inner: Broker & BrokerInspector };

/** The guarded inspection methods, installed on a guard whose broker has them. */
const INSPECTOR: { [K in keyof BrokerInspector]: (this: Self, ...args: Parameters<BrokerInspector[K]>) => ReturnType<BrokerInspector[K]> } =
  {
    listRuns(this: Self, filter: RunFilter): Promise<RunPage> {
      return this.run('listRuns', (b) => (b as Self['inner']).listRuns(filter));
    },
    listQueues(this: Self): Promise<string[]> {
      return this.run('listQueues', (b) => (b as Self['inner']).listQueues());
    },
    heartbeat(this: Self, worker: WorkerInfo, ttlMs: number, now: number): Promise<void> {
      return this.run('heartbeat', (b) => (b as Self['inner']).heartbeat(worker, ttlMs, checkNow(now, 'heartbeat')));
    },
    removeWorker(this: Self, id: string): Promise<void> {
      return this.run('removeWorker', (b) => (b as Self['inner']).removeWorker(id));
    },
    listWorkers(this: Self, now: number): Promise<WorkerStatus[]> {
      return this.run('listWorkers', (b) => (b as Self['inner']).listWorkers(checkNow(now, 'listWorkers')));
    },
    pause(this: Self, queue: string): Promise<void> {
      return this.run('pause', (b) => (b as Self['inner']).pause(checkQueueName(queue, 'pause')));
    },
    resume(this: Self, queue: string): Promise<void> {
      return this.run('resume', (b) => (b as Self['inner']).resume(checkQueueName(queue, 'resume')));
    },
    pausedQueues(this: Self): Promise<string[]> {
      return this.run('pausedQueues', (b) => (b as Self['inner']).pausedQueues());
    },
    purge(this: Self, queue: string, now: number): Promise<number> {
      return this.run('purge', (b) => {
        const t = checkNow(now, 'purge');
        return typeof queue === 'string' && QUEUE_NAME.test(queue) ? (b as Self['inner']).purge(queue, t) : Promise.resolve(0);
      });
    },
    retryFailed(this: Self, queue: string, task: string | undefined, now: number): Promise<number> {
      return this.run('retryFailed', (b) => {
        const t = checkNow(now, 'retryFailed');
        return typeof queue === 'string' && QUEUE_NAME.test(queue) ? (b as Self['inner']).retryFailed(queue, task, t) : Promise.resolve(0);
      });
    },
    storageWarnings(this: Self): Promise<string[]> {
      return this.run('storageWarnings', (b) => (b as Self['inner']).storageWarnings());
    },
    stats(this: Self, queues: readonly string[], since: number): Promise<Record<string, MinuteStats[]>> {
      return this.run('stats', (b) => (b as Self['inner']).stats(queues, checkNow(since, 'stats')));
    },
    flowCounts(this: Self, queues: readonly string[]): Promise<Record<string, FlowCounts>> {
      return this.run('flowCounts', (b) => {
        for (const q of queues) checkQueueName(q, 'flowCounts');
        return (b as Self['inner']).flowCounts(queues);
      });
    },
    flowKeys(this: Self, queue: string, query: FlowKeyQuery = {}): Promise<FlowKeyPage> {
      return this.run('flowKeys', (b) => (b as Self['inner']).flowKeys(checkQueueName(queue, 'flowKeys'), checkFlowKeyQuery(query)));
    },
  };

/**
 * The broker behind the guard (see the file comment). A guarded broker is returned as it is. The
 * result is a `Broker`, and a `BrokerInspector` too when `broker` is one.
 */
export function guardBroker(broker: Broker): Broker {
  if (isGuarded(broker)) return broker;
  return new GuardedBroker(broker);
}
