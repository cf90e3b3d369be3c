// OpenTelemetry: the enqueuer's trace context travels with the run, and each attempt's span is its child.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { context, SpanKind, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { z } from 'zod';
import type { Errand, Worker } from '../../src/index.ts';
import { setups } from '../fixtures/brokers.ts';

describe('tracing', () => {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  let app: Errand;
  let worker: Worker;
  let innerTraceId: string | undefined;

  before(async () => {
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    trace.setGlobalTracerProvider(provider);
    app = setups()[0]!().app();
    app.task('traced', { input: z.object({ fail: z.boolean() }), retries: { maxAttempts: 2, base: 1 } }, ({ fail }, ctx) => {
      // The handler runs inside the attempt's span: its own spans nest under it.
      innerTraceId = trace.getActiveSpan()?.spanContext().traceId;
      if (fail && ctx.attempt === 1) throw new Error('first attempt fails');
      return 'ok';
    });
    worker = app.worker({ concurrency: 2 });
    await worker.start();
  });

  after(async () => {
    await worker.stop();
    await app.close();
    await provider.shutdown();
    trace.disable();
    context.disable();
  });

  it('makes each attempt span a child of the enqueue span, inside the caller trace', async () => {
    const tracer = trace.getTracer('test');
    const parent = tracer.startSpan('http request');
    const handle = await context.with(trace.setSpan(context.active(), parent), () => app.tasks.get('traced')!.enqueue({ fail: true }));
    parent.end();
    assert.equal(await handle.result({ timeout: 20_000 }), 'ok');

    const spans = exporter.getFinishedSpans();
    const enqueue = spans.find((s) => s.name === 'errand.enqueue traced');
    const runs = spans.filter((s) => s.name === 'errand.run traced');
    assert.ok(enqueue, 'an enqueue span');
    assert.equal(enqueue.kind, SpanKind.PRODUCER);
    assert.equal(enqueue.spanContext().traceId, parent.spanContext().traceId);
    assert.equal(enqueue.parentSpanContext?.spanId, parent.spanContext().spanId);
    assert.equal(runs.length, 2, 'one span per attempt');
    for (const run of runs) {
      assert.equal(run.kind, SpanKind.CONSUMER);
      assert.equal(run.spanContext().traceId, parent.spanContext().traceId);
      assert.equal(run.parentSpanContext?.spanId, enqueue.spanContext().spanId);
      assert.equal(run.attributes['errand.run_id'], handle.id);
    }
    assert.deepEqual(runs.map((r) => r.attributes['errand.attempt']).sort(), [1, 2]);
    assert.equal(runs.find((r) => r.attributes['errand.attempt'] === 1)?.status.code, 2 /* ERROR */);
    assert.equal(innerTraceId, parent.spanContext().traceId);
    assert.equal((await handle.info()).traceparent?.split('-')[1], parent.spanContext().traceId);
  });
});
