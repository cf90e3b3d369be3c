/**
 * Scenario 5, memory.
 * (a) Redis bytes per queued run: `used_memory` before and after queueing N runs (batch API), divided
 *     by N; and the sum of `MEMORY USAGE` over every key, divided by N. For Errand on SQLite, the
 *     file's growth (database + WAL) per queued run, for reference.
 * (b) Worker RSS across many runs: one worker process (concurrency 50, results not kept) kept busy by
 *     a producer process that tops the queue up in batches; RSS sampled every 100 ms. Growth is the
 *     RSS over the last 10% of the runs against the RSS between 20% and 30% (after start-up, JIT
 *     warm-up and V8 sizing its heap to the load, which takes some 50,000 runs).
 */
import { statSync } from 'node:fs';
import { Collector, type Ctx, errMessage, type ScenarioResult } from '../lib/context.ts';
import { median } from '../lib/stats.ts';

export async function memoryScenario(ctx: Ctx): Promise<ScenarioResult> {
  const s = ctx.sizes;
  const col = new Collector();
  const notes: string[] = [];
  const raw: Record<string, unknown> = {};

  // (a) bytes per queued run
  for (const p of ctx.peers) {
    let c: Awaited<ReturnType<Ctx['child']>> | undefined;
    try {
      c = await ctx.child(`memory-${p.id}`, p.driver);
      for (let round = 0; round < s.rounds; round++) {
        const url = await p.freshUrl();
        await c.request({ cmd: 'open', url, keep: true }, 30_000);
        if (url.startsWith('redis')) {
          const before = await ctx.redis.usedMemory();
          await c.request({ cmd: 'enqueue', mode: 'batch', n: s.memoryRuns, batch: s.batchSize }, 300_000);
          const after = await ctx.redis.usedMemory();
          const keys = await ctx.redis.keyBytes();
          col.add('Redis used_memory per queued run', p.id, (after - before) / s.memoryRuns, 'bytes');
          col.add('MEMORY USAGE of all keys per queued run', p.id, keys.bytes / s.memoryRuns, 'bytes');
          col.extra('MEMORY USAGE of all keys per queued run', p.id, { keys: keys.keys });
        } else {
          const path = url.slice('sqlite:'.length);
          const size = () => ['', '-wal'].reduce((a, suffix) => a + (statSync(path + suffix, { throwIfNoEntry: false })?.size ?? 0), 0);
          const before = size();
          await c.request({ cmd: 'enqueue', mode: 'batch', n: s.memoryRuns, batch: s.batchSize }, 300_000);
          col.add('SQLite file growth per queued run', p.id, (size() - before) / s.memoryRuns, 'bytes');
        }
        await c.request({ cmd: 'close' }, 30_000);
      }
    } catch (err) {
      for (const m of ['Redis used_memory per queued run', 'MEMORY USAGE of all keys per queued run'])
        if (p.id !== 'errand-sqlite') col.fail(m, p.id, errMessage(err), 'bytes');
      ctx.log(`  memory bytes ${p.id}: ${errMessage(err)}`);
    } finally {
      await c?.close();
    }
  }
  ctx.log('  memory: bytes per queued run done');

  // (b) worker RSS over many runs (one long round per peer); --quick leaves Errand on SQLite out.
  const rssPeers = ctx.quick ? ctx.peers.filter((p) => p.id !== 'errand-sqlite') : ctx.peers;
  if (rssPeers.length < ctx.peers.length) notes.push('--quick: worker RSS of Errand (SQLite) not measured.');
  for (const p of rssPeers) {
    let worker: Awaited<ReturnType<Ctx['child']>> | undefined;
    let producer: Awaited<ReturnType<Ctx['child']>> | undefined;
    const samples: { count: number; rss: number; heapUsed: number; t: number }[] = [];
    try {
      worker = await ctx.child(`rss-worker-${p.id}`, p.driver, ['--expose-gc']);
      producer = await ctx.child(`rss-producer-${p.id}`, p.driver);
      const url = await p.freshUrl();
      await worker.request({ cmd: 'open', url, keep: false }, 30_000);
      await producer.request({ cmd: 'open', url, keep: false }, 30_000);
      let handled = 0;
      const t0 = performance.now();
      const off = worker.on((m) => {
        if (m.type === 'progress') handled = Number(m.count);
        if (m.type === 'mem')
          samples.push({ count: Number(m.count), rss: Number(m.rss), heapUsed: Number(m.heapUsed), t: performance.now() - t0 });
      });
      let enqueued = 0;
      const chunk = Math.min(10_000, s.rssBacklog);
      enqueued += s.rssBacklog;
      await producer.request({ cmd: 'enqueue', mode: 'batch', n: s.rssBacklog, batch: s.batchSize, offset: 0 }, 300_000);
      await worker.request({ cmd: 'work', concurrency: 50 }, 30_000);
      const deadline = performance.now() + Math.max(120_000, s.rssRuns * 2); // 2 ms per run at worst
      let lastLog = performance.now();
      type Mem = { rss: number; heapUsed: number; count: number };
      let gcBase: Mem | undefined;
      while (handled < s.rssRuns) {
        if (!gcBase && handled >= s.rssRuns * 0.1)
          gcBase = await worker.request<Mem & { type: string }>({ cmd: 'memory', gc: true }, 30_000);
        if (performance.now() > deadline) throw new Error(`only ${handled} of ${s.rssRuns} runs handled before the deadline`);
        if (enqueued < s.rssRuns && enqueued - handled < s.rssBacklog) {
          const n = Math.min(chunk, s.rssRuns - enqueued);
          await producer.request({ cmd: 'enqueue', mode: 'batch', n, batch: s.batchSize, offset: enqueued }, 300_000);
          enqueued += n;
        } else await new Promise((r) => setTimeout(r, 20));
        if (performance.now() - lastLog > 30_000) {
          lastLog = performance.now();
          ctx.log(`  rss ${p.id}: ${handled.toLocaleString('en-US')} / ${s.rssRuns.toLocaleString('en-US')} runs`);
        }
      }
      const seconds = (performance.now() - t0) / 1000;
      await new Promise((r) => setTimeout(r, 300)); // a few more samples after the last run
      const gcEnd = await worker.request<Mem & { type: string }>({ cmd: 'memory', gc: true }, 30_000);
      off();
      await worker.request({ cmd: 'stopwork' }, 30_000);
      // Baseline: the RSS once warm (JIT, V8 heap sized to the load): median of the samples taken
      // between 20% and 30% of the runs. End: median of the samples of the last 10% and after.
      const window = (from: number, to: number) =>
        samples.filter((x) => x.count >= s.rssRuns * from && x.count <= s.rssRuns * to).map((x) => x.rss);
      let baseSamples = window(0.2, 0.3);
      // A short run may have no sample in that window: take the first one after 20%.
      if (baseSamples.length === 0)
        baseSamples = samples
          .filter((x) => x.count >= s.rssRuns * 0.2)
          .slice(0, 1)
          .map((x) => x.rss);
      const endSamples = samples.filter((x) => x.count >= s.rssRuns * 0.9).map((x) => x.rss);
      if (baseSamples.length === 0 || endSamples.length === 0) throw new Error(`not enough RSS samples (${samples.length})`);
      const base = { rss: median(baseSamples) };
      const end = median(endSamples);
      const peak = Math.max(...samples.map((x) => x.rss));
      col.add(`worker RSS growth over ${s.rssRuns.toLocaleString('en-US')} runs`, p.id, ((end - base.rss) / base.rss) * 100, '%');
      col.add('worker RSS at 20-30% of the runs', p.id, base.rss / 2 ** 20, 'MiB');
      col.add('worker RSS at the end', p.id, end / 2 ** 20, 'MiB');
      col.add('worker RSS peak', p.id, peak / 2 ** 20, 'MiB');
      if (gcBase) {
        col.add('worker heap used after a full GC: growth', p.id, ((gcEnd.heapUsed - gcBase.heapUsed) / gcBase.heapUsed) * 100, '%');
        col.extra('worker heap used after a full GC: growth', p.id, {
          baseMiB: gcBase.heapUsed / 2 ** 20,
          endMiB: gcEnd.heapUsed / 2 ** 20,
          baseCount: gcBase.count,
        });
      }
      col.extra(`worker RSS growth over ${s.rssRuns.toLocaleString('en-US')} runs`, p.id, {
        runsPerSecond: Math.round(s.rssRuns / seconds),
      });
      raw[`rss ${p.id}`] = samples.filter((_, i) => i % Math.max(1, Math.floor(samples.length / 300)) === 0);
    } catch (err) {
      col.fail(`worker RSS growth over ${s.rssRuns.toLocaleString('en-US')} runs`, p.id, errMessage(err), '%');
      ctx.log(`  rss ${p.id}: ${errMessage(err)}`);
      raw[`rss ${p.id}`] = samples;
    } finally {
      await worker?.close();
      await producer?.close();
    }
    ctx.log(`  memory: worker RSS ${p.id} done`);
  }
  notes.push(
    `Bytes per queued run: ${s.memoryRuns.toLocaleString('en-US')} runs queued with the batch API, the seed's payload, results-kept settings; ${s.rounds} rounds. ` +
      `Worker RSS: one round of ${s.rssRuns.toLocaleString('en-US')} runs per peer (concurrency 50, results not kept, the queue topped up to at most ${s.rssBacklog.toLocaleString('en-US')} waiting runs); ` +
      'growth = median RSS over the last 10% of the runs / median RSS between 20% and 30% of the runs - 1 (RSS sampled every 100 ms; ' +
      'the first ~50,000 runs are warm-up: V8 grows its heap to the load, so in --quick, with few runs, the growth figure means little). ' +
      'The heap after a full GC (forced, --expose-gc, at the same two points) tells a leak from V8 growing its heap lazily.',
  );
  return { title: 'Memory', metrics: col.figures(), notes, raw };
}
