// The run JSON of GET /runs/{id}: snake_case keys always present, ISO times, decoded errors,
// stacks only on request, corrupt stored JSON shown rather than failing the request.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { RunRecord } from '../../src/broker/types.ts';
import { RunSchema, runToJson } from '../../src/http/index.ts';

const base: RunRecord = {
  id: 'default.01ARZ3NDEKTSV4RRFFQ69G5FAV',
  task: 'echo',
  queue: 'default',
  state: 'failed',
  priority: 0,
  input: '{"text":"hi"}',
  error: JSON.stringify({ name: 'TypeError', message: 'bad', stack: 'TypeError: bad\n    at /srv/app/tasks.ts:1:1', reason: 'timeout' }),
  attempts: 2,
  leaseLosses: 0,
  enqueuedAt: Date.UTC(2030, 0, 1),
  startedAt: Date.UTC(2030, 0, 1, 0, 0, 1),
  finishedAt: Date.UTC(2030, 0, 1, 0, 0, 2),
  expiresAt: Date.UTC(2030, 0, 8),
  worker: 'host:1:abc',
  history: [
    {
      attempt: 1,
      worker: 'host:1:abc',
      startedAt: Date.UTC(2030, 0, 1),
      finishedAt: Date.UTC(2030, 0, 1),
      outcome: 'retry',
      error: base0Error(),
    },
  ],
};

function base0Error() {
  return JSON.stringify({ name: 'Error', message: 'first', stack: 'Error: first\n    at x' });
}

describe('run JSON', () => {
  it('shows flow control: the group and key, and for a queued run what holds it back', () => {
    const queued: RunRecord = {
      ...base,
      state: 'queued',
      error: undefined,
      history: [],
      flow: { group: 'sync', key: 'tenant-a', waiting: { reason: 'key_rate', until: Date.UTC(2030, 0, 1, 0, 0, 30) } },
    };
    const json = runToJson(queued);
    assert.deepStrictEqual(json.flow, {
      group: 'sync',
      key: 'tenant-a',
      waiting: { reason: 'key_rate', until: '2030-01-01T00:00:30.000Z' },
    });
    assert.ok(RunSchema.safeParse(json).success);
    const held = runToJson({ ...queued, flow: { group: 'sync', key: '', waiting: { reason: 'group_concurrency', active: 5, limit: 5 } } });
    assert.deepStrictEqual(held.flow?.waiting, { reason: 'group_concurrency', active: 5, limit: 5 });
    assert.equal(runToJson(base).flow, undefined, 'absent for a run without limits');
  });

  it('shows a back-off (what holds a queued run back, until when) and the deadline to start', () => {
    const queued: RunRecord = {
      ...base,
      state: 'queued',
      error: undefined,
      history: [],
      startBy: Date.UTC(2030, 0, 1, 0, 5),
      flow: { group: 'sync', key: 'tenant-a', waiting: { reason: 'key_backoff', until: Date.UTC(2030, 0, 1, 0, 0, 30) } },
    };
    const json = runToJson(queued);
    assert.deepStrictEqual(json.flow?.waiting, { reason: 'key_backoff', until: '2030-01-01T00:00:30.000Z' });
    assert.equal(json.start_by, '2030-01-01T00:05:00.000Z');
    assert.ok(RunSchema.safeParse(json).success);
    assert.equal(runToJson(base).start_by, undefined, 'absent without a deadline');
  });

  it('has every key, ISO times, and the error without its stack by default', () => {
    const json = runToJson(base);
    assert.deepEqual(Object.keys(json), [
      'id',
      'task',
      'queue',
      'state',
      'priority',
      'input',
      'result',
      'error',
      'progress',
      'attempts',
      'lease_losses',
      'enqueued_at',
      'run_at',
      'started_at',
      'finished_at',
      'expires_at',
      'worker',
      'idempotency_key',
      'traceparent',
      'schedule',
      'history',
    ]);
    assert.equal(json.enqueued_at, '2030-01-01T00:00:00.000Z');
    assert.equal(json.finished_at, '2030-01-01T00:00:02.000Z');
    assert.deepEqual(json.error, { name: 'TypeError', message: 'bad', reason: 'timeout' });
    assert.deepEqual(json.history[0]!.error, { name: 'Error', message: 'first' });
    assert.equal(json.result, null);
    assert.equal(json.run_at, null);
    assert.ok(RunSchema.safeParse(json).success);
  });

  it('includes stacks with errorStacks: true', () => {
    const json = runToJson(base, { errorStacks: true });
    assert.match(json.error!.stack!, /tasks\.ts/);
    assert.match(json.history[0]!.error!.stack!, /first/);
  });

  it('shows corrupt stored JSON as text and names the fields, without failing', () => {
    const json = runToJson({ ...base, input: '{not json', error: 'also not json', result: '[', state: 'succeeded' });
    assert.equal(json.input, '{not json');
    assert.equal(json.result, '[');
    assert.deepEqual(json.error, { name: 'Error', message: 'also not json' });
    assert.deepEqual(json.corrupt, ['input', 'result', 'error']);
    assert.ok(RunSchema.safeParse(json).success);
  });

  it('never throws on out-of-range times', () => {
    const json = runToJson({ ...base, state: 'scheduled', runAt: 9e15, startedAt: Number.NaN });
    assert.equal(json.run_at, null);
    assert.equal(json.started_at, null);
  });
});
