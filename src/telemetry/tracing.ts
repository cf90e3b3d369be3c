// OpenTelemetry: the trace context of whoever enqueues (an HTTP request, a script) travels with the
// run as a W3C traceparent, and the worker's span for each attempt is its child. Only the
// @opentelemetry/api package is used: with no SDK registered every call here is a cheap no-op (the
// worker makes no span at all), and the traceparent still travels.
import { context, type Context, ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, trace, TraceFlags } from '@opentelemetry/api';

import { tracing } from '../core/tracing.ts';

export { tracing };

const TRACER = 'errand';
const TRACEPARENT = /^00-([\da-f]{32})-([\da-f]{16})-([\da-f]{2})$/;

/** The W3C traceparent of a span context, or undefined when it is not valid. */
export function toTraceparent(span: Span | undefined): string | undefined {
  const sc = span?.spanContext();
  if (!sc || !trace.isSpanContextValid(sc)) return undefined;
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

/** A context whose parent is the remote span a traceparent names (ROOT_CONTEXT when absent or malformed). */
export function contextFromTraceparent(traceparent: string | undefined): Context {
  const m = traceparent ? TRACEPARENT.exec(traceparent) : null;
  if (!m) return ROOT_CONTEXT;
  const sc = { traceId: m[1]!, spanId: m[2]!, traceFlags: Number.parseInt(m[3]!, 16) & TraceFlags.SAMPLED, isRemote: true };
  if (!trace.isSpanContextValid(sc)) return ROOT_CONTEXT;
  return trace.setSpanContext(ROOT_CONTEXT, sc);
}

/**
 * Runs `fn` inside a producer span for an enqueue of `task` (attributes made only when the span
 * is). The parent is `traceparent` when given (the HTTP layer passes the request's), else the
 * active context. `fn` gets the traceparent to store on the runs.
 */
export async function enqueueSpan<T>(
  task: string,
  attributes: () => Record<string, string | number>,
  traceparent: string | undefined,
  fn: (traceparent: string | undefined) => Promise<T>,
): Promise<T> {
  // No tracer provider: no span to make, but the caller's trace context (a given traceparent, or
  // the active span's, which a propagator may have set) still travels with the runs.
  if (!tracing()) return fn(traceparent ?? toTraceparent(trace.getSpan(context.active())));
  const parent = traceparent ? contextFromTraceparent(traceparent) : context.active();
  const span = trace
    .getTracer(TRACER)
    .startSpan(
      `errand.enqueue ${task}`,
      { kind: SpanKind.PRODUCER, attributes: { 'messaging.system': 'errand', ...attributes() } },
      parent,
    );
  try {
    return await context.with(trace.setSpan(parent, span), () => fn(toTraceparent(span) ?? traceparent));
  } catch (err) {
    span.recordException(err as Error);
    span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error)?.message });
    throw err;
  } finally {
    span.end();
  }
}

/**
 * Starts the consumer span of one attempt, child of the run's stored traceparent. Undefined when no
 * tracer provider is registered: nothing would record the span, and making it costs a few objects
 * per run.
 */
export function startRunSpan(
  task: string,
  attributes: () => Record<string, string | number>,
  traceparent: string | undefined,
): { span: Span; ctx: Context } | undefined {
  if (!tracing()) return undefined;
  const parent = contextFromTraceparent(traceparent);
  const span = trace
    .getTracer(TRACER)
    .startSpan(`errand.run ${task}`, { kind: SpanKind.CONSUMER, attributes: { 'messaging.system': 'errand', ...attributes() } }, parent);
  return { span, ctx: trace.setSpan(parent, span) };
}

export function endRunSpan(span: Span | undefined, error?: unknown): void {
  if (!span) return;
  if (error !== undefined) {
    if (error instanceof Error) span.recordException(error);
    span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error)?.message ?? String(error) });
  } else {
    span.setStatus({ code: SpanStatusCode.OK });
  }
  span.end();
}

export { context };
