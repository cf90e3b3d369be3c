// Fault 7 (scaled down): 20,000 runs through four worker processes; the counts reconcile exactly
// (enqueued = succeeded + failed + cancelled), the handler executed every run but the cancelled ones
// exactly once (counted in the handler, not by the broker), and no worker's memory grows. No
// throughput is asserted: the soak gives up only when nothing moves for a minute. The full soak,
// one million runs, is `npm run soak` (bench/soak.ts, the same code).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runSoak } from '../../bench/soak.ts';
import { figure } from './harness.ts';

const RUNS = 20_000;

describe('fault: soak (scaled down)', () => {
  it(`reconciles the counts of ${RUNS} runs exactly, executes each once and keeps worker memory flat`, async () => {
    const r = await runSoak({ runs: RUNS, workers: 4, concurrency: 50, sampleEveryMs: 200, stallMs: 60_000 });
    const { rss: _rss, ...summary } = r;
    figure('soak', summary);
    assert.equal(r.enqueued, RUNS);
    assert.deepEqual(r.leftover, { queued: 0, scheduled: 0, active: 0 });
    assert.equal(r.succeeded + r.failed + r.cancelled, r.enqueued, 'enqueued = succeeded + failed + cancelled');
    assert.equal(r.failed, r.plannedFailures);
    assert.equal(r.cancelled, r.plannedCancels);
    // No process died: the bound on duplicate executions is 0 (docs/reliability.md).
    assert.deepEqual(
      r.executions,
      { total: RUNS - r.plannedCancels, duplicates: 0, missing: 0, workers: 4 },
      'every run but the cancelled ones executed exactly once, as counted in the handler',
    );
    assert.ok(r.reconciled);
    // A generous bound: the scaled-down soak is short, and V8 grows its heap in steps. The 1M soak
    // (npm run soak) is the real measure.
    for (const m of r.memory) assert.ok(m.growthMb < 64, `worker ${m.pid}: RSS grew by ${m.growthMb} MB (${JSON.stringify(m)})`);
  });
});
