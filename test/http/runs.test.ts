// Task and run routes end to end with a real worker, on SQLite and (when available) Redis:
// enqueue options, idempotency, trace context, the run JSON, cancel and retry, and SSE over a real
// socket (queued -> active -> succeeded, heartbeats, clean-up on disconnect and on server close).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { createErrand, type Errand } from '../../src/errand.ts';
import { createServer } from '../../src/http/index.ts';
import type { Worker } from '../../src/worker/worker.ts';
import { tempDir, waitFor } from '../helpers.ts';
import { countingBroker, defineTasks, openEvents, quiet, type SseEvent } from './setup.ts';
import { availableSetups } from '../fixtures/brokers.ts';
import { requires } from '../fixtures/prereq.ts';

const { setups: all, skipped } = await availableSetups('errand-http');
for (const reason of skipped) describe('runs over HTTP on redis', { skip: requires('Redis', reason) }, () => {});

const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

for (const setup of all) {
  describe(`runs over HTTP on ${setup.name}`, () => {
    let errand: Errand;
    let app: FastifyInstance;
    let worker: Worker | undefined;
    let base: string;
    const gates = new Map<string, () => void>();

    before(async () => {
      errand = setup.app();
      defineTasks(errand);
      errand.task('stepped', { input: z.object({ key: z.string() }), retries: 0 }, async ({ key }, ctx) => {
        ctx.progress({ step: 1 });
        await new Promise<void>((resolve) => gates.set(key, resolve));
        return { done: key };
      });
      errand.task('flaky_once', { input: z.object({ key: z.string() }), retries: 0 }, async ({ key }) => {
        if (!gates.has(`ok:${key}`)) throw new TypeError(`first time for ${key}`);
        return 'fine';
      });
      app = await createServer({ errand, logger: false, heartbeatMs: 50 });
      base = await app.listen({ port: 0, host: '127.0.0.1' });
    });

    after(async () => {
      for (const open of gates.values()) open();
      await worker?.stop({ graceMs: 0 });
      await app.close();
      await errand.close();
      await setup.cleanup();
    });

    const enqueue = async (task: string, payload: unknown, query = '', headers: Record<string, string> = {}) => {
      const res = await app.inject({ method: 'POST', url: `/tasks/${task}${query}`, payload: payload as object, headers });
      assert.equal(res.statusCode, 202, res.body);
      return res.json() as { id: string; status: string; created: boolean; status_url: string; events_url: string };
    };
    const getRun = async (id: string) => {
      const res = await app.inject({ method: 'GET', url: `/runs/${id}` });
      assert.equal(res.statusCode, 200, res.body);
      return res.json();
    };

    it('answers 202 with the run id and its URLs, and a Location header', async () => {
      const res = await app.inject({ method: 'POST', url: '/tasks/send_email', payload: { email: 'a@example.com', name: 'Ann' } });
      assert.equal(res.statusCode, 202);
      const body = res.json();
      assert.deepEqual(Object.keys(body), ['id', 'status', 'created', 'status_url', 'events_url']);
      assert.match(body.id, /^default\.[0-9A-Z]{26}$/);
      assert.equal(body.status, 'queued');
      assert.equal(body.created, true);
      assert.equal(body.status_url, `/runs/${body.id}`);
      assert.equal(body.events_url, `/runs/${body.id}/events`);
      assert.equal(res.headers.location, body.status_url);
    });

    it('takes delay, run_at and priority from the query string', async () => {
      const delayed = await enqueue('echo', { text: 'later' }, '?delay=3600000&priority=7');
      assert.equal(delayed.status, 'scheduled');
      const run = await getRun(delayed.id);
      assert.equal(run.state, 'scheduled');
      assert.equal(run.priority, 7);
      assert.ok(Date.parse(run.run_at) >= Date.parse(run.enqueued_at) + 3_000_000, `${run.enqueued_at} + an hour, ${run.run_at}`);

      const at = '2099-05-04T03:02:01.123Z';
      const timed = await enqueue('echo', { text: 'at' }, `?run_at=${encodeURIComponent('2099-05-04T05:02:01.123+02:00')}`);
      assert.equal((await getRun(timed.id)).run_at, at);
    });

    it('returns the same run for the same Idempotency-Key (202, created: false)', async () => {
      const key = `signup-${Date.now()}`;
      const first = await enqueue('echo', { text: 'once' }, '?delay=3600000', { 'idempotency-key': key });
      const second = await enqueue('echo', { text: 'once' }, '?delay=3600000', { 'idempotency-key': key });
      assert.equal(first.created, true);
      assert.equal(second.created, false);
      assert.equal(second.id, first.id);
      assert.equal(second.status, 'scheduled');
      assert.equal((await getRun(first.id)).idempotency_key, key);
    });

    it('carries a valid traceparent header to the run, and ignores an invalid one', async () => {
      const traced = await enqueue('echo', { text: 'traced' }, '?delay=3600000', { traceparent: TRACEPARENT });
      assert.equal((await getRun(traced.id)).traceparent, TRACEPARENT);
      const bad = await enqueue('echo', { text: 'untraced' }, '?delay=3600000', { traceparent: '00-zz-not-valid' });
      assert.equal((await getRun(bad.id)).traceparent, null);
    });

    it('lists the tasks', async () => {
      const res = await app.inject({ method: 'GET', url: '/tasks' });
      assert.equal(res.statusCode, 200);
      const names = res.json().tasks.map((t: { name: string }) => t.name);
      assert.deepEqual(names, ['send_email', 'echo', 'fail', 'stepped', 'flaky_once']);
      assert.equal(res.json().tasks[0].description, 'Sends the welcome email');
    });

    it('streams queued -> active -> succeeded over SSE for a run processed by a real worker', async () => {
      const { id, events_url } = await enqueue('stepped', { key: 'sse' });
      const stream = await openEvents(base + events_url);
      assert.equal(stream.res.status, 200);
      assert.match(stream.res.headers.get('content-type') ?? '', /^text\/event-stream/);
      await waitFor(() => stream.events.length >= 1, { timeoutMs: 10_000, message: 'the first state event' });
      assert.equal(JSON.parse(stream.events[0]!.data).state, 'queued');

      worker = await errand.worker({ concurrency: 2 }).start();
      const states = (events: SseEvent[]) => events.filter((e) => e.event === 'state').map((e) => JSON.parse(e.data));
      await waitFor(() => states(stream.events).some((r) => r.state === 'active' && r.progress?.step === 1), {
        timeoutMs: 15_000,
        message: 'an active event with progress',
      });
      await waitFor(() => gates.has('sse'), { timeoutMs: 10_000 });
      gates.get('sse')!();
      await waitFor(() => stream.ended, { timeoutMs: 15_000, message: 'the server closes the stream' });

      const seen = states(stream.events).map((r) => r.state);
      assert.deepEqual([...new Set(seen)], ['queued', 'active', 'succeeded']);
      const last = stream.events.at(-1)!;
      assert.equal(last.event, 'end');
      assert.deepEqual(JSON.parse(last.data), { id, state: 'succeeded' });
      const final = states(stream.events).at(-1)!;
      assert.deepEqual(final.result, { done: 'sse' });
    });

    it('shows a finished run with ISO times, worker and history', async () => {
      const { id } = await enqueue('send_email', { email: 'b@example.com', name: 'Bo' });
      await waitFor(async () => (await getRun(id)).state === 'succeeded', { timeoutMs: 15_000 });
      const run = await getRun(id);
      assert.equal(run.task, 'send_email');
      assert.equal(run.queue, 'default');
      assert.deepEqual(run.input, { email: 'b@example.com', name: 'Bo' });
      assert.deepEqual(run.result, { sent: 'b@example.com' });
      assert.equal(run.error, null);
      assert.equal(run.attempts, 1);
      for (const f of ['enqueued_at', 'started_at', 'finished_at']) {
        assert.match(run[f], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, f);
      }
      assert.equal(run.worker, worker!.id);
      assert.equal(run.history.length, 1);
      assert.equal(run.history[0].outcome, 'succeeded');
      assert.equal(run.history[0].worker, worker!.id);
    });

    it('keeps run_at of a delayed run once it has started and finished; null for a run due at once', async () => {
      const delayed = await enqueue('send_email', { email: 'd@example.com', name: 'Di' }, '?delay=300');
      assert.equal(delayed.status, 'scheduled');
      const due = (await getRun(delayed.id)).run_at;
      assert.match(due, /^\d{4}-\d\d-\d\dT/);
      await waitFor(async () => (await getRun(delayed.id)).state === 'succeeded', { timeoutMs: 15_000 });
      const run = await getRun(delayed.id);
      assert.equal(run.run_at, due, 'the due time it waited for is still shown');
      const now = await enqueue('send_email', { email: 'n@example.com', name: 'No' });
      await waitFor(async () => (await getRun(now.id)).state === 'succeeded', { timeoutMs: 15_000 });
      assert.equal((await getRun(now.id)).run_at, null);
    });

    it('sends one state and the end at once for a finished run, then closes', async () => {
      const { id, events_url } = await enqueue('send_email', { email: 'c@example.com', name: 'Cy' });
      await waitFor(async () => (await getRun(id)).state === 'succeeded', { timeoutMs: 15_000 });
      const stream = await openEvents(base + events_url);
      await stream.done;
      assert.deepEqual(
        stream.events.map((e) => e.event),
        ['state', 'end'],
      );
    });

    it('shows a failed run with its error (no stack by default), retries it (failed -> queued), and refuses a second retry', async () => {
      const { id } = await enqueue('flaky_once', { key: 'r1' });
      await waitFor(async () => (await getRun(id)).state === 'failed', { timeoutMs: 15_000 });
      const failed = await getRun(id);
      assert.equal(failed.error.name, 'TypeError');
      assert.equal(failed.error.message, 'first time for r1');
      assert.equal(failed.error.stack, undefined);
      assert.equal(failed.history[0].outcome, 'failed');
      assert.equal(failed.history[0].error.name, 'TypeError');

      gates.set('ok:r1', () => {});
      await worker!.stop();
      worker = undefined;
      const retry = await app.inject({ method: 'POST', url: `/runs/${id}/retry` });
      assert.equal(retry.statusCode, 200);
      assert.deepEqual(retry.json(), { id, state: 'queued' });
      assert.equal((await getRun(id)).state, 'queued');
      const again = await app.inject({ method: 'POST', url: `/runs/${id}/retry` });
      assert.equal(again.statusCode, 409);
      assert.match(again.json().detail, /is queued: only failed or cancelled runs can be retried/);
      worker = await errand.worker({ concurrency: 2 }).start();
      await waitFor(async () => (await getRun(id)).state === 'succeeded', { timeoutMs: 15_000 });
    });

    it('cancels an active run (200); cancelling it again answers 200 as run.cancel() does; retry queues it again', async () => {
      const { id } = await enqueue('stepped', { key: 'to-cancel' });
      await waitFor(async () => (await getRun(id)).state === 'active', { timeoutMs: 15_000 });
      const res = await app.inject({ method: 'POST', url: `/runs/${id}/cancel` });
      assert.equal(res.statusCode, 200);
      assert.deepEqual(res.json(), { id, state: 'cancelled', previous_state: 'active' });
      // Issue 20: the library answered "cancelled" here, the HTTP API 409.
      const again = await app.inject({ method: 'POST', url: `/runs/${id}/cancel` });
      assert.equal(again.statusCode, 200);
      assert.deepEqual(again.json(), { id, state: 'cancelled', previous_state: 'cancelled' });
      assert.equal(await errand.run(id).cancel(), 'cancelled', 'the library agrees');
      // A cancelled run can be replayed under its id.
      const retry = await app.inject({ method: 'POST', url: `/runs/${id}/retry` });
      assert.equal(retry.statusCode, 200);
      assert.deepEqual(retry.json(), { id, state: 'queued' });
      const { state } = await getRun(id);
      assert.ok(state === 'queued' || state === 'active', `replayed run is ${state}`);
      assert.equal((await app.inject({ method: 'POST', url: `/runs/${id}/cancel` })).statusCode, 200, 'and cancelled again');
    });

    it('sends heartbeat comments while a run waits', async () => {
      const { events_url } = await enqueue('echo', { text: 'wait' }, '?delay=3600000');
      const stream = await openEvents(base + events_url);
      await waitFor(() => stream.comments.includes(': heartbeat'), { timeoutMs: 10_000, message: 'a heartbeat comment' });
      stream.close();
      await stream.done;
    });

    it('answers 404 before streaming for an unknown run', async () => {
      const res = await fetch(`${base}/runs/default.01ARZ3NDEKTSV4RRFFQ69G5FAV/events`);
      assert.equal(res.status, 404);
      assert.match((await res.json()).detail, /not found/);
    });
  });
}

describe('SSE clean-up', () => {
  it('stops the broker watch when the client disconnects, and ends open streams when the server closes', async () => {
    const url = `sqlite:${join(tempDir('errand-http'), 'errand.db')}`;
    const { broker, activeWatches } = await countingBroker(url);
    const errand = createErrand({ broker, logger: quiet });
    defineTasks(errand);
    const app = await createServer({ errand, logger: false, docs: false });
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const res = await app.inject({ method: 'POST', url: '/tasks/echo?delay=3600000', payload: { text: 'x' } });
      const { events_url } = res.json();

      const a = await openEvents(base + events_url);
      await waitFor(() => a.events.length === 1);
      assert.equal(activeWatches(), 1);
      a.close();
      await a.done;
      await waitFor(() => activeWatches() === 0, { message: 'the watch stopped after the client left' });

      const b = await openEvents(base + events_url);
      await waitFor(() => b.events.length === 1);
      assert.equal(activeWatches(), 1);
      await app.close(); // must not hang on the open stream
      await b.done;
      assert.equal(activeWatches(), 0);
    } finally {
      await app.close();
      await errand.close();
    }
  });
});
