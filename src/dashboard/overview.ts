/**
 * The broker as the dashboard reads it (an inspector; failures as 503, a broker without inspection
 * as 501) and the overview every page and the event stream show: each queue's counts, paused or
 * not, throughput, failure rate and latency over the window, and the workers alive and lost.
 */
import { type Broker, type BrokerInspector, RUN_STATES } from '../broker/types.ts';
import { brokerFailure, ConfigError, InputError } from '../core/errors.ts';
import type { Errand } from '../errand.ts';
import { HttpError } from '../web/errors.ts';
import type { Overview, QueueOverview } from './api-types.ts';
import { buildSeries, emptyCounts, MINUTE, summarise } from './stats.ts';

export type Inspector = Broker & BrokerInspector;

function isInspector(b: Broker): b is Broker & BrokerInspector {
  const i = b as Partial<BrokerInspector>;
  return typeof i.listRuns === 'function' && typeof i.stats === 'function' && typeof i.listWorkers === 'function';
}

export interface BrokerAccess {
  /** The broker, as an inspector; broker failures become 503, a broker without inspection 501. */
  inspector(): Promise<Inspector>;
  /** `fn` on the inspector; any failure but an HttpError becomes BrokerUnavailableError (503). */
  call<T>(fn: (b: Inspector) => Promise<T>): Promise<T>;
}

export function brokerAccess(errand: Errand): BrokerAccess {
  async function inspector(): Promise<Broker & BrokerInspector> {
    let broker: Broker;
    try {
      broker = await errand.broker();
    } catch (err) {
      throw brokerFailure(err, 'Cannot connect to the broker');
    }
    if (!isInspector(broker))
      throw new HttpError(501, `The ${broker.kind} broker in use does not support inspection (listRuns, stats, workers)`);
    return broker;
  }

  async function call<T>(fn: (b: Broker & BrokerInspector) => Promise<T>): Promise<T> {
    const b = await inspector();
    try {
      return await fn(b);
    } catch (err) {
      if (err instanceof HttpError) throw err;
      // A request the broker refused (a cursor not from a previous page, a filter out of range): the
      // request's fault, not the broker's.
      if (err instanceof ConfigError || err instanceof InputError) throw new HttpError(400, err.message);
      throw brokerFailure(err);
    }
  }

  return { inspector, call };
}

/** The overview of every queue the broker or the app knows, over the last `windowMinutes`. */
export async function overviewOf(access: BrokerAccess, errand: Errand, windowMinutes: number): Promise<Overview> {
  return access.call(async (b) => {
    const now = Date.now();
    const [counts, known, paused, workers, warnings] = await Promise.all([
      b.counts(),
      b.listQueues(),
      b.pausedQueues(),
      b.listWorkers(now),
      // A broker of another make may not have it (the guard offers only what the broker has).
      typeof b.storageWarnings === 'function' ? b.storageWarnings() : Promise.resolve([]),
    ]);
    const pausedSet = new Set(paused);
    const names = [...new Set([...known, ...Object.keys(counts), ...paused, ...[...errand.tasks.values()].map((t) => t.queue)])].sort();
    const since = now - windowMinutes * MINUTE;
    const stats = names.length ? await b.stats(names, since) : {};
    const totals = emptyCounts();
    const queues: QueueOverview[] = names.map((name) => {
      const c = { ...emptyCounts(), ...(counts[name] ?? {}) };
      for (const s of RUN_STATES) totals[s] += c[s] ?? 0;
      return { name, paused: pausedSet.has(name), counts: c, ...summarise(stats[name] ?? [], now) };
    });
    const all = summarise(Object.values(stats).flat(), now);
    const lost = workers.filter((w) => w.lastSeen + w.ttlMs < now).length;
    return {
      now,
      broker: b.kind,
      warnings,
      windowMinutes,
      queues,
      totals,
      workers: { alive: workers.length - lost, lost },
      throughputPerMin: all.throughputPerMin,
      failureRate: all.failureRate,
      wait: all.wait,
      run: all.run,
      series: buildSeries(stats, since, now),
    };
  });
}
