/** The run routes of `errandRoutes`: `GET /runs/{id}`, `GET /runs/{id}/events` (SSE), `POST /runs/{id}/cancel` and `/retry`. */
import { z } from 'zod';
import type { Broker } from '../broker/types.ts';
import { RunNotFoundError } from '../core/errors.ts';
import { HttpError } from '../web/errors.ts';
import { errorResponses, RunActionSchema, RunSchema } from './schemas.ts';
import { RunStream } from './sse.ts';

import type { RouteContext } from './route-context.ts';

const RunParams = z.object({ id: z.string().describe('The run id') });

export function registerRunRoutes(ctx: RouteContext): void {
  const { app, guard, security, toJson, brokerCall, checkRunId, streams, heartbeatMs } = ctx;

  // ---- runs ----------------------------------------------------------------------------------------

  app.get(
    '/runs/:id',
    {
      onRequest: guard('read'),
      schema: {
        summary: 'Get a run',
        operationId: 'get_run',
        description: 'The run: state, input, result or error, progress, attempts, times (ISO 8601), worker and attempt history.',
        tags: ['runs'],
        params: RunParams,
        response: { 200: RunSchema, ...errorResponses(401, 404, 503) },
        security: security('read'),
      },
    },
    async (request) => {
      const { id } = request.params;
      checkRunId(id);
      const rec = await brokerCall((b) => b.getRun(id));
      if (!rec) throw new RunNotFoundError(id);
      return toJson(rec);
    },
  );

  app.get(
    '/runs/:id/events',
    {
      onRequest: guard('read'),
      exposeHeadRoute: false,
      schema: {
        summary: 'Follow a run (server-sent events)',
        operationId: 'follow_run',
        description:
          'A text/event-stream. `event: state` carries the run JSON (as GET /runs/{id}): once at once, then on each change of state, attempt or progress. ' +
          '`event: end` (`{"id", "state"}`) follows the final state, then the server closes the stream: close your EventSource on it, or it reconnects. ' +
          '`event: error` (`{"detail"}`) when the run disappears or the broker fails; reconnecting resumes. A comment line is sent every 15 s as a heartbeat.',
        tags: ['runs'],
        params: RunParams,
        response: {
          200: { description: 'Server-sent events', content: { 'text/event-stream': { schema: z.string() } } },
          ...errorResponses(401, 404, 503),
        },
        security: security('read'),
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      checkRunId(id);
      const broker = await brokerCall(async (b) => b);
      let stream: RunStream | undefined;
      let early = false;
      const unwatch = await brokerCall((b) =>
        b.watch(id, () => {
          if (stream) stream.changed();
          else early = true;
        }),
      );
      let first: Awaited<ReturnType<Broker['getRun']>>;
      try {
        first = await brokerCall((b) => b.getRun(id));
      } catch (err) {
        unwatch();
        throw err;
      }
      if (!first) {
        unwatch();
        throw new RunNotFoundError(id);
      }
      if (request.raw.destroyed) {
        unwatch();
        return reply;
      }
      stream = new RunStream({
        reply,
        first,
        read: () => brokerCall(() => broker.getRun(id)),
        unwatch,
        toJson,
        heartbeatMs,
        registry: streams,
        onError: (err) => request.log.warn({ err, runId: id }, 'run event stream failed'),
      });
      if (early) stream.changed();
      return reply;
    },
  );

  app.post(
    '/runs/:id/cancel',
    {
      onRequest: guard('admin'),
      schema: {
        summary: 'Cancel a run',
        operationId: 'cancel_run',
        description:
          'A queued or scheduled run never starts; an active run has its signal aborted. Cancelling a run that is already cancelled answers 200 (`previous_state: "cancelled"`) and changes nothing, as `run.cancel()` does; 409 when the run has succeeded or failed (the detail names its state).',
        tags: ['runs'],
        params: RunParams,
        response: { 200: RunActionSchema, ...errorResponses(401, 403, 404, 409, 503) },
        security: security('admin'),
      },
    },
    async (request) => {
      const { id } = request.params;
      checkRunId(id);
      const out = await brokerCall((b) => b.cancel(id, Date.now()));
      if (out.outcome === 'not_found') throw new RunNotFoundError(id);
      if (out.outcome === 'finished') {
        if (out.state === 'cancelled') return { id, state: 'cancelled' as const, previous_state: 'cancelled' as const };
        throw new HttpError(409, `Run "${id}" has already finished: it is ${out.state}`);
      }
      request.log.info({ runId: id, previous: out.previous }, 'run cancelled');
      return { id, state: 'cancelled' as const, previous_state: out.previous };
    },
  );

  app.post(
    '/runs/:id/retry',
    {
      onRequest: guard('admin'),
      schema: {
        summary: 'Retry a failed or cancelled run',
        operationId: 'retry_run',
        description:
          'Moves a failed run (the dead-letter state) or a cancelled run back to queued with its attempts reset, under the same id. 409 when the run is queued, scheduled, active or succeeded, or a record of a task that ran elsewhere (a Celery task).',
        tags: ['runs'],
        params: RunParams,
        response: { 200: RunActionSchema, ...errorResponses(401, 403, 404, 409, 503) },
        security: security('admin'),
      },
    },
    async (request) => {
      const { id } = request.params;
      checkRunId(id);
      const out = await brokerCall((b) => b.retry(id, Date.now()));
      if (out.outcome === 'not_found') throw new RunNotFoundError(id);
      if (out.outcome === 'not_failed')
        throw new HttpError(409, `Run "${id}" is ${out.state}: only failed or cancelled runs can be retried`);
      if (out.outcome === 'recorded')
        throw new HttpError(409, `Run "${id}" is a record of a task that ran in ${out.origin}: retry it there, not here`);
      request.log.info({ runId: id }, 'run retried');
      return { id, state: 'queued' as const };
    },
  );
}
