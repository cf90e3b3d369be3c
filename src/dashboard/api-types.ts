/**
 * The JSON shapes of the dashboard's API (`/dashboard/api/...`), shared by the server
 * (`src/dashboard/plugin.ts`) and the browser code (`src/dashboard/ui`). Types only: no runtime code,
 * so the browser bundle never pulls in server modules. Times are epoch milliseconds.
 */
import type { QueueCounts, RunError, RunState, WorkerStatus } from '../broker/types.ts';

export type { QueueCounts, RunError, RunState };

/** p50, p95, p99 in ms, estimated from a latency histogram; null when nothing was measured. */
export interface Percentiles {
  count: number;
  p50: number | null;
  p95: number | null;
  p99: number | null;
}

export interface QueueOverview {
  name: string;
  paused: boolean;
  counts: QueueCounts;
  /** Runs finished (succeeded or failed) per minute, averaged over the last 5 minutes. */
  throughputPerMin: number;
  /** Over the whole window: finished runs, failed ones, and failed / finished (null when none finished). */
  finished: number;
  failed: number;
  failureRate: number | null;
  /** Enqueue (or due time) to start, and start to finish, over the window. */
  wait: Percentiles;
  run: Percentiles;
}

/** Per-minute series over all queues, oldest first; one entry per minute of the window, gaps filled with zeros. */
export interface OverviewSeries {
  minutes: number[];
  enqueued: number[];
  succeeded: number[];
  failed: number[];
  retried: number[];
  /** Latency percentiles per minute, null for minutes without a measurement. */
  waitP50: (number | null)[];
  waitP95: (number | null)[];
  runP50: (number | null)[];
  runP95: (number | null)[];
}

export interface Overview {
  now: number;
  broker: 'redis' | 'sqlite';
  /** What the broker's storage is set to do that can lose runs (`BrokerInspector.storageWarnings`): a Redis that evicts keys. */
  warnings: string[];
  windowMinutes: number;
  queues: QueueOverview[];
  totals: QueueCounts;
  workers: { alive: number; lost: number };
  throughputPerMin: number;
  failureRate: number | null;
  wait: Percentiles;
  run: Percentiles;
  series: OverviewSeries;
}

/** One row of the runs list: no input, result or stack (those are on the run page). */
export interface RunSummary {
  id: string;
  task: string;
  queue: string;
  state: RunState;
  priority: number;
  attempts: number;
  enqueuedAt: number;
  runAt?: number;
  startedAt?: number;
  finishedAt?: number;
  worker?: string;
  /** `Name: message` of the stored error, cut to 300 characters. */
  error?: string;
  /** The workflow the run is a step of. */
  workflow?: string;
  /** Where a run recorded from elsewhere ran (e.g. `celery`): such a run cannot be retried here. */
  origin?: string;
}

/** One step of a workflow: the run, its value, and its dependencies. */
export interface WorkflowStep extends RunSummary {
  input: unknown;
  result?: unknown;
  dependsOn: { id: string; onFailure: 'cancel' | 'skip' | 'continue'; name?: string }[];
  /** For a waiting step: the steps it still waits for (not finished). */
  waitingFor: string[];
}

export interface WorkflowDetail {
  id: string;
  state: 'running' | 'succeeded' | 'failed' | 'cancelled';
  createdAt: number;
  /** Its steps (those not yet pruned), in creation order. */
  steps: WorkflowStep[];
}

export interface RunList {
  runs: RunSummary[];
  /** Cursor of the next (older) page, or null at the end. */
  next: string | null;
  /** How many runs match the filter, when the broker's counts can tell (not with a task filter or an id search). */
  total: number | null;
}

export interface AttemptJson {
  attempt: number;
  worker: string;
  startedAt: number;
  finishedAt?: number;
  durationMs?: number;
  /** `succeeded`, `failed`, `retry`, `lost`, `released`, `cancelled`; absent while running. */
  outcome?: string;
  error?: RunError;
}

export interface TimelineEvent {
  at: number;
  kind: 'enqueued' | 'scheduled' | 'started' | 'attempt' | 'succeeded' | 'failed' | 'cancelled' | 'expires';
  label: string;
  detail?: string;
}

export interface RunDetail extends RunSummary {
  input: unknown;
  result?: unknown;
  /** The error with its stack. */
  runError?: RunError;
  progress?: unknown;
  leaseLosses: number;
  expiresAt?: number;
  idempotencyKey?: string;
  traceparent?: string;
  /** Set when a schedule created the run: its id, the nominal fire time (epoch ms), whether it was created late. */
  schedule?: { id: string; at: number; backfilled: boolean };
  /** The deadline to start (`expiresIn`/`expiresAt`): a run not started by then is dropped (failed, reason `expired`). */
  startBy?: number;
  /** Fields whose stored JSON could not be read (their raw text is shown instead). */
  corrupt?: string[];
  history: AttemptJson[];
  timeline: TimelineEvent[];
}

/** A worker as the broker lists it (`WorkerStatus`), with what the dashboard derives from its heartbeat. */
export interface WorkerJson extends WorkerStatus {
  heartbeatAgeMs: number;
  /** No heartbeat for longer than its TTL: the process died or cannot reach the broker. */
  lost: boolean;
}

export interface WorkerList {
  now: number;
  workers: WorkerJson[];
}

/** What the presented token may do (`GET /session`, when it is accepted or auth is off). */
export interface Session {
  authenticated: true;
  /** Whether the server requires tokens at all. */
  auth: boolean;
  scope: 'read' | 'admin';
  /** Task names this app defines (the standalone dashboard knows none). */
  tasks: string[];
  broker: 'redis' | 'sqlite';
}

/**
 * `GET /session` without a token, or with one that matches none: the sign-in form's probe answers
 * 200 with this (nothing of the data), so that a browser shows no error for the normal way in. Every
 * other API call answers such a request 401.
 */
export interface SignedOut {
  authenticated: false;
  auth: true;
  /** Why: no token was sent, or it matches no configured token. */
  reason: 'missing' | 'invalid';
  detail: string;
}

export interface ApiError {
  detail: string;
}

/** A stored schedule, as the dashboard lists it (times are epoch ms). */
export interface ScheduleJson {
  id: string;
  queue: string;
  task: string;
  state: 'active' | 'paused' | 'ended';
  /** The time spec in words: `cron 0 9 * * * Europe/Paris`, `every 15m`. */
  when: string;
  /** The time spec as stored: `{ cron, timezone?, start?, end? }` or `{ every, start?, end? }` (ms). */
  spec: Record<string, unknown>;
  /** The runs' input, its secrets (the task's redact paths) as "[redacted]". */
  input: unknown;
  /** True when `input` has redacted values: an edit must give the input again. */
  inputRedacted: boolean;
  next: number | null;
  upcoming: number[];
  lastFire?: number;
  lastRun?: string;
  fires: number;
  missed: number;
  /** The policies, as stored. */
  policies: Record<string, unknown>;
}

export interface ScheduleList {
  schedules: ScheduleJson[];
  /** The app's tasks, for the form that creates a schedule. */
  tasks: { name: string; queue: string }[];
  now: number;
}

/** One key of a queue under flow control (`GET /api/flow/:queue`). */
export interface FlowKeyJson {
  group: string;
  key: string;
  queued: number;
  active: number;
  /** 0: no concurrency limit. */
  concurrency: number;
  /** Starts per `period` ms, `burst` at once at most; absent: no rate limit. */
  rate?: { limit: number; period: number; burst: number };
  /** When it may start its next run: `now` (ready), a time (held by its rate), or null (at its concurrency limit: when a slot frees; or nothing queued). */
  nextAt: number | null;
  /** What holds it back: 'concurrency' (at its limit), 'rate' (until nextAt), or absent. */
  held?: 'concurrency' | 'rate';
}

/** `GET /api/flow`: the queues with flow control and their counts. */
export interface FlowQueues {
  queues: { name: string; queued: number; keys: number; rateLimitedKeys: number; rateLimitedGroups: number }[];
  now: number;
}

/** `GET /api/flow/:queue`: a page of its keys. */
export interface FlowKeyList {
  queue: string;
  sort: 'queued' | 'active' | 'key';
  offset: number;
  limit: number;
  total: number;
  keys: FlowKeyJson[];
  now: number;
}
