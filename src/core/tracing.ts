// Whether OpenTelemetry tracing is on: the one test used by the broker guard and by
// telemetry/tracing.ts (in core, so that the broker layer need not import a layer above it).
import { ProxyTracerProvider, trace } from '@opentelemetry/api';

/** What the global tracer provider delegates to while no SDK has registered one. */
const NO_PROVIDER = new ProxyTracerProvider().getDelegate();

/** Whether an SDK has registered a tracer provider (checked on each use: it may be registered late). */
export function tracing(): boolean {
  const p = trace.getTracerProvider();
  return !(p instanceof ProxyTracerProvider) || p.getDelegate() !== NO_PROVIDER;
}
