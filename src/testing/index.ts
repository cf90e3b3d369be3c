/**
 * Errand's testing helpers (`import { createTesting, runTask } from 'errand/testing'`), in the spirit of
 * Oban.Testing, Sidekiq::Testing and Celery's eager mode, but running your handlers through the same
 * code as production:
 *
 * - `createTesting(errand)` gives the app a throwaway in-memory broker (SQLite `:memory:`, the
 *   embedded broker itself, so every state transition is the real one), and returns helpers to
 *   look at what was enqueued (`enqueued`, `assertEnqueued`, `refuteEnqueued`), to run the queued
 *   runs inline with a real worker (`drain`), to move the clock (`advance`), and to start over
 *   between tests (`reset`).
 * - `runTask(task, input, { attempt })` runs one handler directly with a test context: no broker.
 *
 * See the README's "Testing your tasks".
 */
export type { DeepPartial, EnqueuedMatch, EnqueuedRun } from './enqueued.ts';
export {
  createTesting,
  type DrainAttempt,
  type DrainOptions,
  type DrainResult,
  ErrandTesting,
  type TestingOptions,
} from './errand-testing.ts';
export { type RunTaskOptions, runTask } from './run-task.ts';
export { type MemoryBrokerOptions, memoryBroker, memoryUri, TestBroker } from './test-broker.ts';
