/** The worker registry's records, as both brokers store them (heartbeats). */
import type { WorkerInfo, WorkerStatus } from '../types.ts';

/** The fields of a worker's announcement, copied (nothing else a caller's object carries is stored). */
export function workerRecord(worker: WorkerInfo): WorkerInfo {
  return {
    id: worker.id,
    host: worker.host,
    pid: worker.pid,
    queues: [...worker.queues],
    concurrency: worker.concurrency,
    active: worker.active,
    startedAt: worker.startedAt,
  };
}

/** A stored record read back, or undefined when it is not readable JSON of an object (it is then skipped: the worker rewrites it on its next heartbeat). */
export function parseWorkerRecord(text: string): WorkerInfo | undefined {
  try {
    const parsed: unknown = JSON.parse(text);
    return parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as WorkerInfo) : undefined;
  } catch {
    return undefined;
  }
}

export type { WorkerStatus };
