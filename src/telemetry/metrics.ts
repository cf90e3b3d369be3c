// Prometheus metrics. Counters and histograms count what this process did (its enqueues, its
// workers' runs); gauges (queue depth by state, workers alive, active runs) are read from the broker
// at scrape time, so every process sees the same cluster-wide figures.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { BrokerInspector, FlowCounts } from '../broker/types.ts';
import { RUN_STATES } from '../broker/types.ts';
import type { Errand } from '../errand.ts';
import type { FireEvent } from '../worker/schedules.ts';
import type { RunEvent, Worker } from '../worker/worker.ts';

const SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

export interface ErrandMetrics {
  registry: Registry;
  /** Text for a `/metrics` response. */
  render(): Promise<string>;
  contentType: string;
}

function isInspector(b: unknown): b is BrokerInspector {
  return typeof (b as BrokerInspector)?.listWorkers === 'function';
}

/** Metrics for an app: its enqueues, the runs of every worker it makes, and broker gauges. */
export function createMetrics(app: Errand, registry = new Registry()): ErrandMetrics {
  const labelNames = ['task', 'queue'] as const;
  const enqueued = new Counter({
    name: 'errand_runs_enqueued_total',
    help: 'Runs enqueued by this process',
    labelNames,
    registers: [registry],
  });
  const started = new Counter({
    name: 'errand_runs_started_total',
    help: 'Attempts started by workers of this process',
    labelNames,
    registers: [registry],
  });
  const succeeded = new Counter({
    name: 'errand_runs_succeeded_total',
    help: 'Runs that succeeded in workers of this process',
    labelNames,
    registers: [registry],
  });
  const failed = new Counter({
    name: 'errand_runs_failed_total',
    help: 'Runs that failed for good (dead-lettered) in workers of this process',
    labelNames,
    registers: [registry],
  });
  const retried = new Counter({
    name: 'errand_runs_retried_total',
    help: 'Failed attempts scheduled for retry in workers of this process',
    labelNames,
    registers: [registry],
  });
  const wait = new Histogram({
    name: 'errand_run_wait_seconds',
    help: 'Time from enqueue to the start of an attempt',
    labelNames,
    buckets: SECONDS_BUCKETS,
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'errand_run_duration_seconds',
    help: 'Time an attempt ran',
    labelNames,
    buckets: SECONDS_BUCKETS,
    registers: [registry],
  });

  const scheduleLabels = ['schedule', 'queue'] as const;
  const fires = new Counter({
    name: 'errand_schedule_fires_total',
    help: 'Runs created by schedule fires of workers of this process (each nominal time fires once over all workers)',
    labelNames: scheduleLabels,
    registers: [registry],
  });
  const missed = new Counter({
    name: 'errand_schedule_missed_total',
    help: 'Nominal fire times given up by fires of workers of this process (missed-fire and overlap policies)',
    labelNames: scheduleLabels,
    registers: [registry],
  });
  const lag = new Histogram({
    name: 'errand_schedule_lag_seconds',
    help: 'Time from the nominal fire time to the start of its run (runs not backfilled), in workers of this process',
    labelNames: scheduleLabels,
    buckets: SECONDS_BUCKETS,
    registers: [registry],
  });
  new Gauge({
    name: 'errand_schedules_missed',
    help: 'Nominal fire times each stored schedule has missed, over all workers (read from the broker)',
    labelNames: scheduleLabels,
    registers: [registry],
    async collect() {
      this.reset();
      for (const s of await (await app.broker()).listSchedules()) this.set({ schedule: s.id, queue: s.queue }, s.missed);
    },
  });

  new Gauge({
    name: 'errand_queue_runs',
    help: 'Runs in the broker by queue and state',
    labelNames: ['queue', 'state'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      const counts = await (await app.broker()).counts();
      for (const [queue, byState] of Object.entries(counts))
        for (const state of RUN_STATES) this.set({ queue, state }, byState[state] ?? 0);
    },
  });
  new Gauge({
    name: 'errand_workers_alive',
    help: 'Workers whose heartbeat is current',
    registers: [registry],
    async collect() {
      const broker = await app.broker();
      if (!isInspector(broker)) return;
      const now = Date.now();
      this.set((await broker.listWorkers(now)).filter((w) => w.lastSeen + w.ttlMs >= now).length);
    },
  });
  new Gauge({
    name: 'errand_runs_active',
    help: 'Runs executing right now, over all workers',
    registers: [registry],
    async collect() {
      const counts = await (await app.broker()).counts();
      this.set(Object.values(counts).reduce((sum, c) => sum + (c.active ?? 0), 0));
    },
  });

  // Flow control (docs/flow-control.md): what limits hold back right now, per queue.
  const flow = async (): Promise<Record<string, FlowCounts>> => {
    const broker = await app.broker();
    if (!isInspector(broker) || typeof broker.flowCounts !== 'function') return {};
    return broker.flowCounts(await broker.listQueues());
  };
  new Gauge({
    name: 'errand_flow_queued_runs',
    help: 'Runs queued under flow control (waiting for their turn, a free slot of their key or task, or their rate)',
    labelNames: ['queue'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      for (const [queue, f] of Object.entries(await flow())) if (f.keys > 0 || f.queued > 0) this.set({ queue }, f.queued);
    },
  });
  new Gauge({
    name: 'errand_flow_throttled',
    help: 'Keys and tasks held back by their rate limit right now (scope: key or task)',
    labelNames: ['queue', 'scope'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      for (const [queue, f] of Object.entries(await flow())) {
        if (f.keys === 0 && f.rateLimitedGroups === 0) continue;
        this.set({ queue, scope: 'key' }, f.rateLimitedKeys);
        this.set({ queue, scope: 'task' }, f.rateLimitedGroups);
      }
    },
  });
  new Gauge({
    name: 'errand_flow_held_runs',
    help: 'Queued runs held back by a limit right now, by the limit (reason: key_concurrency, key_rate, group_concurrency, group_rate; group: the task)',
    labelNames: ['queue', 'reason'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      for (const [queue, f] of Object.entries(await flow())) {
        if (f.keys === 0 && f.queued === 0) continue;
        for (const [reason, n] of Object.entries(f.heldRuns ?? {})) this.set({ queue, reason }, n);
      }
    },
  });

  app.on('enqueued', (runs: { task: string; queue: string }[], results: { created: boolean }[]) => {
    runs.forEach((r, i) => {
      if (results[i]?.created) enqueued.inc({ task: r.task, queue: r.queue });
    });
  });
  const observe = (worker: Worker) => {
    worker.on('run', (e: RunEvent) => {
      const labels = { task: e.run.task, queue: e.run.queue };
      if (e.type === 'start') {
        started.inc(labels);
        wait.observe(labels, Math.max(0, e.run.startedAt - e.run.enqueuedAt) / 1000);
        const s = e.run.schedule;
        if (s && !s.backfilled) lag.observe({ schedule: s.id, queue: e.run.queue }, Math.max(0, e.run.startedAt - s.at) / 1000);
        return;
      }
      if (e.durationMs !== undefined) duration.observe(labels, e.durationMs / 1000);
      if (e.type === 'success') succeeded.inc(labels);
      else if (e.type === 'failure') failed.inc(labels);
      else if (e.type === 'retry') retried.inc(labels);
    });
    worker.on('schedule', (e: FireEvent) => {
      const labels = { schedule: e.schedule, queue: e.queue };
      if (e.created) fires.inc(labels, e.created);
      if (e.missed) missed.inc(labels, e.missed);
    });
  };
  for (const w of app.workers) observe(w);
  app.on('worker', observe);

  return { registry, render: () => registry.metrics(), contentType: registry.contentType };
}
