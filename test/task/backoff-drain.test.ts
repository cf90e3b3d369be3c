// errand/testing's drain with a handler that backs off: the run is put back, its key waits out
// the back-off on the test clock, and the drain runs it again (docs/flow-control.md).
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { z } from 'zod';
import { createErrand } from '../../src/index.ts';
import { createTesting } from '../../src/testing/index.ts';

it('drain: a backed-off run runs again once its back-off is over, on one attempt', async () => {
  const errand = createErrand({ broker: 'memory:' });
  const t = createTesting(errand);
  let calls = 0;
  const task = errand.task(
    'call_api',
    { input: z.object({ tenant: z.string() }), retries: 0, limits: { key: (i) => i.tenant, concurrency: 1 } },
    (_i, ctx) => {
      calls++;
      if (calls === 1) throw ctx.backOff(50);
      return 'ok';
    },
  );
  const h = await task.enqueue({ tenant: 'a' });
  const out = await t.drain();
  assert.equal(calls, 2);
  assert.equal(out.succeeded, 1);
  assert.deepStrictEqual(
    out.attempts.map((a) => a.outcome),
    ['backoff', 'succeeded'],
  );
  assert.equal((await h.info()).attempts, 1);
  await t.close();
});
