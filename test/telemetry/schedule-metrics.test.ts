// Prometheus metrics of schedules: fires and misses counted from this process's workers, the lag
// from nominal fire time to start, and the stored misses of every schedule read at scrape time.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { createErrand } from '../../src/index.ts';
import { createMetrics } from '../../src/telemetry/metrics.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { tempDir, waitFor } from '../helpers.ts';

describe('schedule metrics', () => {
  it('fires, lag and stored misses', { timeout: 30_000 }, async () => {
    const app = createErrand({ broker: `sqlite:${join(tempDir('errand-sched-metrics'), 'e.db')}`, logger: quietLogger });
    let ran = 0;
    const t = app.task('m.tick', { input: z.object({}), queue: 'm' }, async () => {
      ran++;
    });
    app.schedule('tick', t, { every: '1s', input: {} });
    const metrics = createMetrics(app);
    const w = app.worker();
    await w.start();
    try {
      await waitFor(() => ran >= 2, { timeoutMs: 20_000, message: 'two scheduled runs' });
    } finally {
      await w.stop();
    }
    const text = await metrics.render();
    const fires = Number(/errand_schedule_fires_total\{schedule="tick",queue="m"\} (\d+)/.exec(text)?.[1]);
    assert.ok(fires >= 2, text);
    const lagCount = Number(/errand_schedule_lag_seconds_count\{schedule="tick",queue="m"\} (\d+)/.exec(text)?.[1]);
    assert.ok(lagCount >= 2, text);
    assert.match(text, /errand_schedules_missed\{schedule="tick",queue="m"\} 0/);
    await app.close();
  });
});
