// Fault 7 (scaled down): 20,000 runs through four worker processes; the counts reconcile exactly
// (enqueued = succeeded + failed + cancelled) and no worker's memory grows. The full soak, one
// million runs, is `npm run soak` (bench/soak.ts, the same code).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runSoak } from '../../bench/soak.ts';
import { figure } from './harness.ts';

const RUNS = 20_000;

describe('fault: soak (scaled down)', () => {
  it(`reconciles the counts of ${RUNS} runs exactly and keeps worker memory flat`, async () => {
    const r = await runSoak({ runs: RUNS, workers: 4, concurrency: 50, sampleEveryMs: 200, limitMs: 150_000 });
    const { rss: _rss, ...summary } = r;
    figure('soak', summary);
    assert.equal(r.enqueued, RUNS);
    assert.deepEqual(r.leftover, { queued: 0, scheduled: 0, active: 0 });
    assert.equal(r.succeeded + r.failed + r.cancelled, r.enqueued, 'enqueued = succeeded + failed + cancelled');
    assert.equal(r.failed, r.plannedFailures);
    assert.equal(r.cancelled, r.plannedCancels);
    assert.ok(r.reconciled);
    // A generous bound: the scaled-down soak is short, and V8 grows its heap in steps. The 1M soak
    // (npm run soak) is the real measure.
    for (const m of r.memory) assert.ok(m.growthMb < 64, `worker ${m.pid}: RSS grew by ${m.growthMb} MB (${JSON.stringify(m)})`);
  });
});
