/**
 * `errand/celery`: speak Celery's protocol (version 2, JSON, kombu's Redis transport) from
 * TypeScript. Send tasks to Python Celery workers and read their results; serve Celery tasks with
 * TypeScript handlers that Python producers call with `.delay()`. See docs/celery.md.
 */
export {
  type CeleryExceptionInfo,
  type CeleryMeta,
  type CeleryState,
  CeleryTaskError,
  CeleryTimeoutError,
  exceptionInfo,
  READY_STATES,
  ResultBackend,
  TASK_META_PREFIX,
} from './backend.ts';
export {
  CeleryClient,
  type CeleryClientOptions,
  CeleryResult,
  createCeleryClient,
  type RevokeOptions,
  type SendTaskOptions,
  signature,
} from './client.ts';
export { type CeleryMetrics, createCeleryMetrics } from './metrics.ts';
export {
  buildMessage,
  type CeleryEmbed,
  type CeleryEnvelope,
  CeleryMessageError,
  type CelerySignature,
  type CeleryTaskMessage,
  decodeMessage,
  queueListFor,
} from './protocol.ts';
export { Pidbox } from './pidbox.ts';
export { type CeleryRecordOptions, recordQueueName } from './record.ts';
export { CeleryRetry } from './run.ts';
export {
  type CeleryHandler,
  type CeleryTaskContext,
  type CeleryTaskOptions,
  CeleryWorker,
  type CeleryWorkerOptions,
  createCeleryWorker,
} from './worker.ts';
