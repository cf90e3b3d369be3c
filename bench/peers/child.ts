/**
 * A benchmark child process: one peer (`BENCH_PEER=errand|bullmq`), driven by the harness over IPC.
 * Each command carries a `reqId`; the reply carries it back. Unsolicited messages: `progress`
 * (handler starts so far, every few ms while a worker runs) and `mem` (RSS, every 100 ms).
 */
import type { Payload, Peer, Session, SessionOptions } from './types.ts';
import { nowUs } from './types.ts';

type Cmd = { cmd: string; reqId?: number; [k: string]: unknown };

const peerName = process.env.BENCH_PEER ?? 'errand';
let peer: Peer;
let session: Session | undefined;
let count = 0;
let reported = -1;
let samples: number[] = [];
/** Start times of the handlers (ms, performance.now()), when the session records them (`open` with `starts`). */
let starts: number[] | undefined;
let progressTimer: NodeJS.Timeout | undefined;
let memTimer: NodeJS.Timeout | undefined;

const send = (m: Record<string, unknown>) => process.send?.(m);

const payload = (i: number): Payload => ({ username: `user${i}`, email: `user${i}@example.com` });

function onRun(data: Payload): void {
  count++;
  starts?.push(performance.now());
  if (data.m === 1 && typeof data.t === 'number') samples.push(nowUs() - data.t);
}

function memory() {
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, count };
}

const cpuNow = () => {
  const c = process.cpuUsage();
  return c.user + c.system;
};
let workCpu0 = 0;

async function enqueue(mode: string, n: number, batch: number, offset: number): Promise<{ ms: number; cpuUs: number }> {
  const s = session!;
  const cpu0 = cpuNow();
  const t0 = performance.now();
  if (mode === 'serial') {
    for (let i = 0; i < n; i++) await s.enqueueOne(payload(offset + i));
  } else if (mode === 'concurrent') {
    const all: Promise<unknown>[] = new Array(n);
    for (let i = 0; i < n; i++) all[i] = s.enqueueOne(payload(offset + i));
    await Promise.all(all);
  } else if (mode === 'batch') {
    for (let i = 0; i < n; i += batch) {
      const chunk: Payload[] = [];
      for (let j = i; j < Math.min(n, i + batch); j++) chunk.push(payload(offset + j));
      await s.enqueueMany(chunk);
    }
  } else throw new Error(`unknown enqueue mode ${mode}`);
  return { ms: performance.now() - t0, cpuUs: cpuNow() - cpu0 };
}

/** Enqueues one run at a time at a steady `rate` per second for `durationMs`, without awaiting each. */
async function produce(rate: number, durationMs: number, warmupMs: number) {
  const s = session!;
  let sent = 0;
  let measured = 0;
  let errors = 0;
  let lastError = '';
  let outstanding = 0;
  let maxOutstanding = 0;
  let drained: (() => void) | undefined;
  const t0 = performance.now();
  const done = () => {
    outstanding--;
    if (outstanding === 0) drained?.();
  };
  for (;;) {
    const elapsed = performance.now() - t0;
    if (elapsed >= durationMs) break;
    const due = Math.floor((elapsed / 1000) * rate);
    const m = elapsed >= warmupMs ? 1 : 0;
    while (sent < due) {
      const data: Payload = { ...payload(sent), t: nowUs(), m };
      sent++;
      measured += m;
      outstanding++;
      if (outstanding > maxOutstanding) maxOutstanding = outstanding;
      s.enqueueOne(data).then(done, (err: Error) => {
        errors++;
        lastError = err.message;
        done();
      });
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  const sendMs = performance.now() - t0;
  if (outstanding > 0) await new Promise<void>((r) => (drained = r));
  return { sent, measured, errors, lastError, sendMs, achievedRate: sent / (sendMs / 1000), maxOutstanding };
}

function latencySummary() {
  const sorted = Float64Array.from(samples).sort();
  samples = [];
  const pick = (p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]! : Number.NaN);
  return {
    n: sorted.length,
    p50: pick(50),
    p90: pick(90),
    p99: pick(99),
    p999: pick(99.9),
    max: sorted.length ? sorted[sorted.length - 1]! : Number.NaN,
  };
}

function startReports(): void {
  stopReports();
  progressTimer = setInterval(() => {
    if (count !== reported) {
      reported = count;
      send({ type: 'progress', count });
    }
  }, 5);
  memTimer = setInterval(() => send({ type: 'mem', ...memory() }), 100);
}

function stopReports(): void {
  clearInterval(progressTimer);
  clearInterval(memTimer);
}

async function handle(msg: Cmd): Promise<Record<string, unknown>> {
  switch (msg.cmd) {
    case 'open': {
      if (session) await session.close();
      session = await peer.open({
        url: String(msg.url),
        keep: Boolean(msg.keep),
        limits: msg.limits as SessionOptions['limits'],
      });
      starts = msg.starts ? [] : undefined;
      count = 0;
      reported = -1;
      samples = [];
      return {};
    }
    case 'enqueue':
      return await enqueue(String(msg.mode), Number(msg.n), Number(msg.batch ?? 1000), Number(msg.offset ?? 0));
    case 'work': {
      count = 0;
      reported = -1;
      workCpu0 = cpuNow();
      await session!.startWorker(Number(msg.concurrency), onRun);
      startReports();
      return { startedAt: nowUs() };
    }
    case 'pending': {
      // CPU used since the worker started, read before the query so that polling is not counted.
      const cpuUs = cpuNow() - workCpu0;
      return { pending: await session!.pending(), cpuUs };
    }
    case 'stopwork': {
      stopReports();
      await session!.stopWorker();
      return { count };
    }
    case 'flows': {
      const t0 = performance.now();
      await session!.enqueueFlows(Number(msg.flows), Number(msg.children));
      return { ms: performance.now() - t0 };
    }
    case 'produce':
      return await produce(Number(msg.rate), Number(msg.durationMs), Number(msg.warmupMs));
    case 'starts': {
      // The recorded start times, then a fresh record.
      const out = starts ?? [];
      if (starts) starts = [];
      return { starts: out };
    }
    case 'latency':
      return latencySummary();
    case 'memory':
      if (msg.gc && typeof globalThis.gc === 'function') globalThis.gc();
      return memory();
    case 'close':
      stopReports();
      await session?.close();
      session = undefined;
      return {};
    default:
      throw new Error(`unknown command ${msg.cmd}`);
  }
}

async function main(): Promise<void> {
  if (peerName === 'errand') peer = (await import('./errand.ts')).errandPeer;
  else if (peerName === 'bullmq') peer = (await import('./bullmq.ts')).bullmqPeer;
  else if (peerName === 'bullmq-autopipe') peer = (await import('./bullmq.ts')).bullmqAutopipePeer;
  else throw new Error(`unknown BENCH_PEER ${peerName}`);
  process.on('message', (msg: Cmd) => {
    if (msg.cmd === 'exit') {
      stopReports();
      const t = setTimeout(() => process.exit(0), 3000);
      t.unref();
      void (session?.close() ?? Promise.resolve()).finally(() => process.exit(0));
      return;
    }
    handle(msg).then(
      (reply) => send({ type: 'reply', reqId: msg.reqId, ...reply }),
      (err: Error) => send({ type: 'error', reqId: msg.reqId, message: err.stack ?? err.message }),
    );
  });
  process.on('disconnect', () => process.exit(0));
  send({ type: 'ready', peer: peer.name, version: peer.version, pid: process.pid });
}

main().catch((err: Error) => {
  send({ type: 'fatal', message: err.stack ?? err.message });
  process.stderr.write(`${err.stack ?? err}\n`);
  process.exit(1);
});
