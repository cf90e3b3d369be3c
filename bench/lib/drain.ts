/**
 * Times how long worker children take to finish `n` queued runs: from the moment they are told to
 * start until (a) their handlers have started `n` runs, by their progress reports, and (b) the
 * broker reports nothing left waiting or active (every outcome stored).
 */
import { type Child, TimeoutError, withTimeout } from './proc.ts';

export interface DrainResult {
  /** CPU time of the worker processes, user + system, from start to the end of the drain. */
  workerCpuUs: number;
  seconds: number;
  perSecond: number;
  handled: number;
  settleMs: number;
}

export async function drain(workers: Child[], n: number, concurrency: number, timeoutMs: number): Promise<DrainResult> {
  const counts = new Map<Child, number>();
  let resolveAll: (() => void) | undefined;
  const allStarted = new Promise<void>((r) => (resolveAll = r));
  const total = () => [...counts.values()].reduce((a, b) => a + b, 0);
  const offs = workers.map((w) =>
    w.on((m) => {
      if (m.type === 'progress') {
        counts.set(w, Number(m.count));
        if (total() >= n) resolveAll?.();
      }
    }),
  );
  const t0 = performance.now();
  try {
    await Promise.all(workers.map((w) => w.request({ cmd: 'work', concurrency }, 30_000)));
    await withTimeout(allStarted, timeoutMs, `${n} runs to be handled (handled so far: ${total()})`);
    const tHandled = performance.now();
    // Every outcome stored: nothing waiting or active. Polled quickly; it is usually immediate.
    const deadline = performance.now() + Math.max(10_000, timeoutMs / 4);
    let cpu0 = 0;
    for (;;) {
      const r = await workers[0]!.request<{ type: string; pending: number; cpuUs: number }>({ cmd: 'pending' }, 10_000);
      cpu0 = r.cpuUs;
      if (r.pending === 0) break;
      if (performance.now() > deadline) throw new TimeoutError(`${r.pending} runs still pending after all ${n} were handled`);
      await new Promise((res) => setTimeout(res, 2));
    }
    const t1 = performance.now();
    const seconds = (t1 - t0) / 1000;
    let workerCpuUs = cpu0;
    for (const w of workers.slice(1)) workerCpuUs += (await w.request<{ type: string; cpuUs: number }>({ cmd: 'pending' }, 10_000)).cpuUs;
    return { seconds, perSecond: n / seconds, handled: total(), settleMs: t1 - tHandled, workerCpuUs };
  } finally {
    for (const off of offs) off();
    await Promise.all(workers.map((w) => w.request({ cmd: 'stopwork' }, 30_000).catch(() => undefined)));
  }
}
