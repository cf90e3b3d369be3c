// A minimal Errand app: one typed task. Enqueue from any process, run with
//   node src/cli/main.ts worker ./examples/hello/tasks.ts
import { z } from 'zod';
import { createErrand } from '../../src/index.ts';

export const errand = createErrand();

export const greet = errand.task(
  'greet',
  {
    input: z.object({ name: z.string().min(1), times: z.number().int().min(1).max(10).default(1) }),
    retries: { maxAttempts: 3, backoff: 'exponential', base: 500 },
    timeout: 10_000,
  },
  async ({ name, times }, ctx) => {
    ctx.logger.info({ attempt: ctx.attempt }, `greeting ${name}`);
    return { greeting: Array.from({ length: times }, () => `Hello, ${name}!`).join(' ') };
  },
);
