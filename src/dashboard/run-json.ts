/** Run records as the dashboard's API shows them: a short row for lists, everything for the run page. */
import { FINISHED_STATES, type RunError, type RunRecord, type WorkerStatus, type WorkflowRecord } from '../broker/types.ts';
import { workflowState } from '../task/workflow-handle.ts';
import { decodeRun, errorLine, readRunError } from '../core/run-info.ts';
import type { AttemptJson, RunDetail, RunSummary, TimelineEvent, WorkerJson, WorkflowDetail, WorkflowStep } from './api-types.ts';

const ERROR_SUMMARY_CHARS = 300;

/** Reads a stored error (JSON text of a RunError, or anything else) without ever throwing. */
export const readError = readRunError;

function shortErrorLine(e: RunError | undefined): string | undefined {
  if (!e) return undefined;
  const line = errorLine(e);
  return line.length > ERROR_SUMMARY_CHARS ? `${line.slice(0, ERROR_SUMMARY_CHARS - 1)}…` : line;
}

export function runSummary(rec: RunRecord): RunSummary {
  const s: RunSummary = {
    id: rec.id,
    task: rec.task,
    queue: rec.queue,
    state: rec.state,
    priority: rec.priority,
    attempts: rec.attempts,
    enqueuedAt: rec.enqueuedAt,
  };
  if (rec.runAt !== undefined && rec.state === 'scheduled') s.runAt = rec.runAt;
  if (rec.startedAt !== undefined) s.startedAt = rec.startedAt;
  if (rec.finishedAt !== undefined) s.finishedAt = rec.finishedAt;
  if (rec.worker !== undefined) s.worker = rec.worker;
  if (rec.workflow !== undefined) s.workflow = rec.workflow;
  const error = shortErrorLine(readError(rec.error));
  if (error !== undefined) s.error = error;
  if (rec.origin !== undefined) s.origin = rec.origin;
  return s;
}

const OUTCOME_LABEL: Record<string, string> = {
  succeeded: 'succeeded',
  failed: 'failed',
  retry: 'failed; retry scheduled',
  lost: 'lease lost (worker died or stalled)',
  released: 'handed back at worker shutdown',
  backoff: 'backed off (ctx.backOff; not counted)',
  cancelled: 'cancelled',
};

export function runDetail(rec: RunRecord): RunDetail {
  const info = decodeRun(rec);
  const history: AttemptJson[] = (rec.history ?? []).map((h) => {
    const a: AttemptJson = { attempt: h.attempt, worker: h.worker, startedAt: h.startedAt };
    if (h.finishedAt !== undefined && h.finishedAt !== null) {
      a.finishedAt = h.finishedAt;
      a.durationMs = Math.max(0, h.finishedAt - h.startedAt);
    }
    if (h.outcome) a.outcome = h.outcome;
    const err = readError(h.error);
    if (err) a.error = err;
    return a;
  });
  const detail: RunDetail = {
    ...runSummary(rec),
    input: info.input,
    leaseLosses: rec.leaseLosses,
    history,
    timeline: timeline(rec, history),
  };
  if (rec.result !== undefined) detail.result = info.result;
  if (info.error) detail.runError = info.error;
  if (rec.progress !== undefined) detail.progress = info.progress;
  if (rec.expiresAt !== undefined) detail.expiresAt = rec.expiresAt;
  if (rec.idempotencyKey !== undefined) detail.idempotencyKey = rec.idempotencyKey;
  if (rec.traceparent !== undefined) detail.traceparent = rec.traceparent;
  if (rec.schedule) detail.schedule = { ...rec.schedule };
  if (rec.startBy !== undefined) detail.startBy = rec.startBy;
  if (info.corrupt) detail.corrupt = info.corrupt;
  return detail;
}

/** A workflow as its dashboard page shows it: each step with its value, dependencies and what it still waits for. */
export function workflowDetail(rec: WorkflowRecord): WorkflowDetail {
  const state = new Map(rec.runs.map((r) => [r.id, r.state]));
  const steps = rec.runs.map((r): WorkflowStep => {
    const info = decodeRun(r);
    const dependsOn = rec.edges
      .filter((e) => e.to === r.id)
      .map((e) => (e.name === undefined ? { id: e.from, onFailure: e.onFailure } : { id: e.from, onFailure: e.onFailure, name: e.name }));
    const waitingFor =
      r.state === 'waiting'
        ? dependsOn
            .filter((d) => {
              const s = state.get(d.id);
              return s === undefined || !FINISHED_STATES.has(s);
            })
            .map((d) => d.id)
        : [];
    const step: WorkflowStep = { ...runSummary(r), input: info.input, dependsOn, waitingFor };
    if (r.result !== undefined) step.result = info.result;
    return step;
  });
  return { id: rec.id, state: workflowState(rec.runs.map((r) => r.state)), createdAt: rec.createdAt, steps };
}

/** What happened to the run, in time order: enqueue, each attempt's start and end, the outcome. */
export function timeline(rec: RunRecord, history: AttemptJson[]): TimelineEvent[] {
  const events: TimelineEvent[] = [{ at: rec.enqueuedAt, kind: 'enqueued', label: `Enqueued on ${rec.queue}` }];
  if (rec.state === 'scheduled' && rec.runAt !== undefined) {
    events.push({ at: rec.runAt, kind: 'scheduled', label: rec.attempts > 0 ? 'Retry due' : 'Due to start' });
  }
  let previous = 0;
  for (const a of history) {
    // A replayed run starts counting attempts again: say so, or "Attempt 1 started" twice reads as a bug.
    if (a.attempt <= previous) events.push({ at: a.startedAt, kind: 'enqueued', label: 'Replayed: queued again with its attempts reset' });
    previous = a.attempt;
    events.push({ at: a.startedAt, kind: 'started', label: `Attempt ${a.attempt} started`, detail: `worker ${a.worker}` });
    if (a.finishedAt !== undefined && a.outcome) {
      const label = `Attempt ${a.attempt} ${OUTCOME_LABEL[a.outcome] ?? a.outcome}`;
      const ev: TimelineEvent = { at: a.finishedAt, kind: 'attempt', label };
      if (a.error) ev.detail = `${a.error.name}: ${a.error.message}`;
      events.push(ev);
    }
  }
  if (rec.finishedAt !== undefined && (rec.state === 'succeeded' || rec.state === 'failed' || rec.state === 'cancelled')) {
    const label = rec.state === 'succeeded' ? 'Succeeded' : rec.state === 'failed' ? 'Failed for good (dead-letter)' : 'Cancelled';
    const ev: TimelineEvent = { at: rec.finishedAt, kind: rec.state, label };
    const err = readError(rec.error);
    if (rec.state === 'failed' && err) ev.detail = `${err.name}: ${err.message}`;
    events.push(ev);
  }
  if (rec.expiresAt !== undefined) events.push({ at: rec.expiresAt, kind: 'expires', label: 'Deleted after its retention' });
  // Stable: events at the same millisecond keep their logical order.
  return events
    .map((e, i) => ({ e, i }))
    .sort((a, b) => a.e.at - b.e.at || a.i - b.i)
    .map(({ e }) => e);
}

export function workerJson(w: WorkerStatus, now: number): WorkerJson {
  return {
    id: w.id,
    host: w.host,
    pid: w.pid,
    queues: w.queues,
    concurrency: w.concurrency,
    active: w.active,
    startedAt: w.startedAt,
    lastSeen: w.lastSeen,
    ttlMs: w.ttlMs,
    heartbeatAgeMs: Math.max(0, now - w.lastSeen),
    lost: w.lastSeen + w.ttlMs < now,
  };
}
