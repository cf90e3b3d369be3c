/** The workflow routes of `errandRoutes` (docs/workflows.md): `GET /workflows/{id}`, `POST /workflows/{id}/cancel`. */
import { z } from 'zod';
import { WorkflowNotFoundError } from '../core/errors.ts';
import { FINISHED_STATES, type WorkflowRecord } from '../broker/types.ts';
import { workflowState } from '../task/workflow-handle.ts';
import type { RouteContext } from './route-context.ts';
import { errorResponses, RunSchema, type RunJson } from './schemas.ts';

const WorkflowParams = z.object({ id: z.string().describe('The workflow id') });

export const WorkflowSchema = z
  .object({
    id: z.string(),
    state: z
      .enum(['running', 'succeeded', 'failed', 'cancelled'])
      .describe('running while a step is not finished; then failed if a step failed, else cancelled if one was cancelled, else succeeded'),
    created_at: z.string().describe('ISO 8601 time (UTC)'),
    runs: z.array(RunSchema).describe('Its steps (those not yet pruned), each a run as GET /runs/{id} shows it'),
    edges: z
      .array(
        z.object({
          from: z.string().describe('The dependency'),
          to: z.string().describe('The step that waits for it'),
          on_failure: z.enum(['cancel', 'skip', 'continue']),
          name: z.string().nullable().describe("The key of the dependency's result in the step's input (dag joins)"),
        }),
      )
      .describe('Dependencies between its steps'),
    waiting_for: z
      .record(z.string(), z.array(z.string()))
      .describe('For each waiting step: the steps it still waits for (not finished yet)'),
  })
  .describe('A workflow');

export const WorkflowCancelSchema = z.object({ id: z.string(), cancelled: z.number().int().describe('How many steps were cancelled') });

/** A stored workflow as the HTTP layer shows it. */
export function workflowToJson(
  rec: WorkflowRecord,
  toJson: (run: WorkflowRecord['runs'][number]) => RunJson,
): z.infer<typeof WorkflowSchema> {
  const state = new Map(rec.runs.map((r) => [r.id, r.state]));
  const waiting: Record<string, string[]> = {};
  for (const r of rec.runs) if (r.state === 'waiting') waiting[r.id] = [];
  for (const e of rec.edges) {
    const s = state.get(e.from);
    if (waiting[e.to] && (s === undefined || !FINISHED_STATES.has(s))) waiting[e.to]!.push(e.from);
  }
  return {
    id: rec.id,
    state: workflowState(rec.runs.map((r) => r.state)),
    created_at: new Date(rec.createdAt).toISOString(),
    runs: rec.runs.map(toJson),
    edges: rec.edges.map((e) => ({ from: e.from, to: e.to, on_failure: e.onFailure, name: e.name ?? null })),
    waiting_for: waiting,
  };
}

export function registerWorkflowRoutes(ctx: RouteContext): void {
  const { app, guard, security, toJson, brokerCall, checkRunId } = ctx;
  const checkId = (id: string) => {
    try {
      checkRunId(id);
    } catch {
      throw new WorkflowNotFoundError(id.length > 200 ? `${id.slice(0, 200)}...` : id);
    }
  };

  app.get(
    '/workflows/:id',
    {
      onRequest: guard('read'),
      schema: {
        summary: 'Get a workflow',
        operationId: 'get_workflow',
        description:
          'The workflow: its state, every step (as GET /runs/{id}), the dependencies between them, and what each waiting step waits for.',
        tags: ['workflows'],
        params: WorkflowParams,
        response: { 200: WorkflowSchema, ...errorResponses(401, 404, 503) },
        security: security('read'),
      },
    },
    async (request) => {
      const { id } = request.params;
      checkId(id);
      const rec = await brokerCall((b) => b.getWorkflow(id));
      if (!rec) throw new WorkflowNotFoundError(id);
      return workflowToJson(rec, toJson);
    },
  );

  app.post(
    '/workflows/:id/cancel',
    {
      onRequest: guard('admin'),
      schema: {
        summary: 'Cancel a workflow',
        operationId: 'cancel_workflow',
        description:
          'Cancels every step not finished: waiting, queued and scheduled ones never start, active ones have their signal aborted.',
        tags: ['workflows'],
        params: WorkflowParams,
        response: { 200: WorkflowCancelSchema, ...errorResponses(401, 403, 404, 503) },
        security: security('admin'),
      },
    },
    async (request) => {
      const { id } = request.params;
      checkId(id);
      const out = await brokerCall((b) => b.cancelWorkflow(id, Date.now()));
      if (out.outcome === 'not_found') throw new WorkflowNotFoundError(id);
      request.log.info({ workflowId: id, cancelled: out.runs }, 'workflow cancelled');
      return { id, cancelled: out.runs };
    },
  );
}
