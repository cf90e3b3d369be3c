// Fault: dynamic fan-out (ctx.spawn, docs/workflows.md) while worker processes are killed with
// SIGKILL, on Redis (its own redis-server): reports, each spawning one part per page and a gather,
// run by 3 worker processes, one killed every 400 ms (8 times) while more reports arrive. Reconciled exactly:
// - every report succeeds with the gather's value (the count and the exact sum of its pages);
// - each report's workflow holds exactly the report, its pages and one gather: a report whose
//   attempt was cut short (its process killed, its lease lost) and ran again spawned once, because
//   a spawn settled without the lease creates nothing and a killed attempt settles nothing;
// - the counts: every run succeeded, none failed, cancelled or left waiting;
// - one report stalled (SIGSTOP) past its lease, run again elsewhere, then resumed: its late spawn
//   settles without the lease and creates nothing;
// - a handler ran again only after running in a killed (or that stalled) process.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { waitFor } from '../helpers.ts';
import { figure, type Proc, START_LIMIT_MS, workflowKillRig } from './harness.ts';

const REPORTS = 20;
const PAGES = 25;
const WORKERS = 3;
const PART_MS = 60;
const MAX_KILLS = 8;

describe('fault: dynamic fan-out while workers are killed', () => {
  it('spawns each report once and finishes each with its exact value', { timeout: 600_000 }, async () => {
    const rig = await workflowKillRig({
      label: 'errand-fault-spawn',
      prefix: 'fault-spawn',
      queues: ['wflow'],
      partMs: PART_MS,
      // A report works this long before it spawns: kills land in reports too.
      env: { FAULT_WF_REPORT_MS: '300' },
    });
    const { procs, broker } = rig;
    // The report task as the workers define it (test/faults/fixtures/tasks.ts), to enqueue here.
    const report = rig.app.task(
      'wf_report',
      { queue: 'wflow', retries: { maxAttempts: 1 }, retention: 3_600_000, input: z.object({ pages: z.number().int() }) },
      (): { count: number; sum: number } => {
        throw new Error('run by the worker processes');
      },
    );
    const counts = async () => (await broker.counts(['wflow'])).wflow!;
    const workers: Proc[] = [];
    let kills = 0;
    try {
      // A few reports first, then more during the storm, so that reports are running when killed.
      const more = () => Promise.all(Array.from({ length: 2 }, () => report.enqueue({ pages: PAGES })));
      const handles = await Promise.all(Array.from({ length: REPORTS - 2 * MAX_KILLS }, () => report.enqueue({ pages: PAGES })));
      for (let i = 0; i < WORKERS; i++) workers.push(rig.worker(`worker-${i}`));
      await waitFor(async () => (await counts()).succeeded > 10, { timeoutMs: START_LIMIT_MS, message: 'the first runs to succeed' });
      while (kills < MAX_KILLS) {
        const fresh = await more();
        handles.push(...fresh);
        // Kill the process running one of them, while its report works (before it spawns), if one
        // starts soon; else any worker.
        const active = await waitFor(
          async () => {
            for (const h of fresh) {
              const rec = await broker.getRun(h.id);
              if (rec?.state === 'active') return rec;
            }
            return undefined;
          },
          { timeoutMs: 5_000, intervalMs: 20, message: 'a new report to start' },
        ).catch(() => undefined);
        const holder = active?.worker?.split(':')[1];
        const found = workers.findIndex((w) => String(w.pid) === holder);
        const i = found >= 0 ? found : kills % WORKERS;
        if (found < 0) await sleep(400);
        await procs.kill(workers[i]!, 'SIGKILL');
        kills++;
        workers[i] = rig.worker(`worker-${i}-after-kill-${kills}`);
      }
      // A stall: the process running a report is stopped (SIGSTOP) past its lease, the report runs
      // again elsewhere and spawns; then the stalled process resumes and settles its spawn with the
      // lease lost, which must create nothing.
      const stalled = new Set<number>();
      let stalledReport: string | undefined;
      const late = await more();
      handles.push(...late);
      const target = await waitFor(
        async () => {
          for (const h of late) {
            const rec = await broker.getRun(h.id);
            if (rec?.state === 'active') return rec;
          }
          return undefined;
        },
        { timeoutMs: START_LIMIT_MS, intervalMs: 20, message: 'a late report to start' },
      );
      const stallee = workers.find((w) => String(w.pid) === target.worker?.split(':')[1]);
      if (stallee) {
        stallee.child.kill('SIGSTOP');
        stalled.add(stallee.pid);
        stalledReport = target.id;
        await waitFor(async () => ((await broker.getRun(target.id))?.attempts ?? 0) > target.attempts, {
          timeoutMs: START_LIMIT_MS,
          message: 'the stalled report to be redelivered',
        });
        stallee.child.kill('SIGCONT');
      }
      const done = await waitFor(
        async () => {
          const c = await counts();
          return c.waiting + c.queued + c.scheduled + c.active === 0 ? c : undefined;
        },
        { timeoutMs: START_LIMIT_MS, intervalMs: 50, message: 'every run finished' },
      );
      assert.ok(kills >= 3, `workers were killed (got ${kills})`);
      const total = handles.length * (1 + PAGES + 1);
      assert.deepEqual(done, { waiting: 0, queued: 0, scheduled: 0, active: 0, succeeded: total, failed: 0, cancelled: 0 });

      const sum = 2 * ((PAGES * (PAGES - 1)) / 2);
      let reran = 0;
      for (const h of handles) {
        assert.deepEqual(await h.result({ timeout: 10_000 }), { count: PAGES, sum });
        const wf = await broker.getWorkflow(h.id);
        assert.ok(wf, `report ${h.id} has its workflow`);
        const byTask = (t: string) => wf.runs.filter((r) => r.task === t).length;
        assert.deepEqual([byTask('wf_report'), byTask('wf_part'), byTask('wf_gather')], [1, PAGES, 1], `report ${h.id} spawned once`);
        const rec = (await broker.getRun(h.id))!;
        if (rec.attempts > 1) reran++;
        assert.equal(rec.history.at(-1)?.outcome, 'spawned');
      }
      // At least once, and again only after a kill: every execution but the last was in a killed process.
      const duplicates = rig.ranAgainOnlyAfterKills(workers, stalled);
      assert.ok(reran >= 1, 'a report was killed while it worked and ran again (and still spawned once)');
      assert.ok(stalledReport, 'a report was stalled past its lease');
      figure('spawn-kill', {
        reports: handles.length,
        pages: PAGES,
        kills,
        stalled: stalled.size,
        reportsRunAgain: reran,
        duplicateExecutions: duplicates,
      });
    } finally {
      await rig.close();
    }
  });
});
