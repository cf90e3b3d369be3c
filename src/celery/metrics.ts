/**
 * Prometheus counters for Celery-bridged runs: one counter, `errand_celery_messages_total`, by task
 * and outcome (received, success, failure, invalid, retry, revoked, scheduled, requeued, rejected).
 * Pass `registry` to expose them with the rest of the service's metrics.
 */
import { Counter, Registry } from 'prom-client';

export interface CeleryMetrics {
  registry: Registry;
  count(task: string, outcome: string): void;
}

export function createCeleryMetrics(registry = new Registry()): CeleryMetrics {
  const counter =
    (registry.getSingleMetric('errand_celery_messages_total') as Counter<'task' | 'outcome'> | undefined) ??
    new Counter({
      name: 'errand_celery_messages_total',
      help: 'Celery messages handled by Errand workers of this process, by task and outcome',
      labelNames: ['task', 'outcome'] as const,
      registers: [registry],
    });
  return {
    registry,
    count(task, outcome) {
      counter.inc({ task, outcome });
    },
  };
}
