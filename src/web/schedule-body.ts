/**
 * The body that defines a schedule at run time, one schema for HTTP `PUT /schedules/{id}` and the
 * dashboard's save (each adds its own fields: HTTP the version, the dashboard the id), and the body
 * of a backfill. Described for the OpenAPI document; docs/schedules.md has what each field means.
 */
import { z } from 'zod';
import { POLICY_BOUNDS } from '../schedule/plan.ts';

const Instant = z.union([z.number(), z.string()]).describe('Epoch ms, or ISO 8601 with Z or an offset');

export const ScheduleDefinitionFields = {
  task: z.string().min(1).max(256).describe("A task defined on the server's app"),
  cron: z.string().optional().describe('5 or 6 fields (seconds first), or a nickname (@daily)'),
  every: z.union([z.number(), z.string()]).optional().describe('An interval: ms, or "30s", "15m", "2h"'),
  timezone: z.string().optional().describe('IANA zone, default UTC'),
  start: Instant.optional(),
  end: Instant.optional(),
  input: z.unknown().optional(),
  missed: z.enum(['skip', 'latest', 'all']).optional(),
  maxBackfill: z.number().int().min(POLICY_BOUNDS.maxBackfill.min).max(POLICY_BOUNDS.maxBackfill.max).optional(),
  catchUpMs: z.number().int().min(POLICY_BOUNDS.catchUpMs.min).optional(),
  overlap: z.enum(['allow', 'skip', 'cancel', 'buffer']).optional(),
  expire: z.union([z.literal('period'), z.literal('never'), z.number().int().min(POLICY_BOUNDS.expire.min)]).optional(),
  priority: z.number().int().min(POLICY_BOUNDS.priority.min).max(POLICY_BOUNDS.priority.max).optional(),
};

export const BackfillBody = z.strictObject({ from: Instant, to: Instant });
