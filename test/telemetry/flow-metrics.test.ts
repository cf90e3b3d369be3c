// Prometheus gauges of flow control (docs/flow-control.md): runs queued under limits, and keys and
// tasks held back by their rate, read from the broker at scrape time.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { z } from 'zod';
import { createErrand } from '../../src/index.ts';
import { createMetrics } from '../../src/telemetry/metrics.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { tempDir } from '../helpers.ts';

test('errand_flow_queued_runs and errand_flow_throttled follow the broker', async () => {
  const app = createErrand({ broker: `sqlite:${join(tempDir('errand-flow-metrics'), 'e.db')}`, logger: quietLogger });
  try {
    const t = app.task(
      'limited',
      { input: z.object({ tenant: z.string() }), queue: 'lim', limits: { key: (i) => i.tenant, rate: { limit: 1, period: 60_000 } } },
      () => 1,
    );
    app.task('plain', { input: z.object({}), queue: 'plain' }, () => 1);
    await t.enqueueMany([{ input: { tenant: 'a' } }, { input: { tenant: 'a' } }, { input: { tenant: 'b' } }, { input: { tenant: 'b' } }]);
    const metrics = createMetrics(app);
    const before = await metrics.render();
    assert.match(before, /errand_flow_queued_runs\{queue="lim"\} 4/);
    assert.match(before, /errand_flow_throttled\{queue="lim",scope="key"\} 0/);
    assert.doesNotMatch(before, /errand_flow_queued_runs\{queue="plain"\}/, 'a queue without flow control is left out');
    const broker = await app.broker();
    const r = await broker.reserve({ workerId: 'w', queues: ['lim'], max: 10, leaseMs: 60_000, now: Date.now() });
    assert.equal(r.runs.length, 2, 'one start per key');
    const after = await metrics.render();
    assert.match(after, /errand_flow_queued_runs\{queue="lim"\} 2/);
    assert.match(after, /errand_flow_throttled\{queue="lim",scope="key"\} 2/);
    assert.match(after, /errand_flow_throttled\{queue="lim",scope="task"\} 0/);
    // The two runs left are held by their keys' rate (one each).
    assert.match(after, /errand_flow_held_runs\{queue="lim",reason="key_rate"\} 2/);
    assert.match(after, /errand_flow_held_runs\{queue="lim",reason="key_concurrency"\} 0/);
    assert.doesNotMatch(after, /errand_flow_held_runs\{queue="plain"/);
  } finally {
    await app.close();
  }
});
