// A full Redis must never lose work without a trace (docs/reliability.md, "When storage is full").
//
// - Eviction: a Redis whose maxmemory-policy is not noeviction deletes runs silently when full; the
//   broker checks the policy on each connection (INFO memory) and warns once, saying what to set.
// - Full with noeviction: enqueues fail with BrokerFullError (HTTP: 503 saying so); a worker whose
//   outcomes cannot be stored keeps them and keeps its leases (no run executes twice); pruning
//   still deletes finished runs; once memory is freed every accepted run ends exactly once.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import Fastify from 'fastify';
import pino from 'pino';
import { z } from 'zod';
import type { Broker, BrokerInspector } from '../../src/broker/types.ts';
import type { Overview } from '../../src/dashboard/api-types.ts';
import { dashboardPlugin } from '../../src/dashboard/plugin.ts';
import { createServer } from '../../src/http/index.ts';
import { BrokerFullError, createErrand } from '../../src/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { drainAndReconcile, heldTask } from '../fixtures/storage-full.ts';
import { type OwnRedis, redisCli, startRedisServer } from '../fixtures/redis-servers.ts';
import { tempDir, waitFor } from '../helpers.ts';

const run = promisify(execFile);
const CLI = new URL('../../src/cli/main.ts', import.meta.url).pathname;

/** A logger that keeps every line it writes (parsed), for assertions on warnings. */
function capturingLogger(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split('\n')) if (l.trim()) lines.push(JSON.parse(l));
      done();
    },
  });
  return { logger: pino({ level: 'warn' }, stream), lines };
}

const evictionWarnings = (lines: Array<Record<string, unknown>>) => lines.filter((l) => /maxmemory-policy/.test(String(l.msg)));

describe('Redis eviction policy', () => {
  const servers: OwnRedis[] = [];
  after(async () => {
    await Promise.all(servers.map((s) => s.stop()));
  });

  it('warns once per connection when maxmemory-policy is not noeviction, naming what to set', async () => {
    const server = await startRedisServer(tempDir('errand-evict'), ['--maxmemory', '50mb', '--maxmemory-policy', 'allkeys-lru']);
    servers.push(server);
    const { logger, lines } = capturingLogger();
    const app = createErrand({ broker: `redis://127.0.0.1:${server.port}`, logger });
    const task = app.task('evict_probe', { input: z.object({}), queue: 'evict' }, () => 1);
    try {
      for (let i = 0; i < 5; i++) await task.enqueue({});
      await waitFor(() => evictionWarnings(lines).length > 0, { timeoutMs: 10_000, message: 'the eviction warning' });
      const [warning] = evictionWarnings(lines);
      assert.equal(warning!.level, 40);
      assert.match(String(warning!.msg), /maxmemory-policy allkeys-lru/);
      assert.match(String(warning!.msg), /lost/);
      assert.match(String(warning!.msg), /noeviction/);
      // A new connection (Redis dropped it) checks again; the same connection never warns twice.
      await redisCli(server.port, ['CLIENT', 'KILL', 'TYPE', 'normal']);
      await waitFor(
        async () => {
          await task.enqueue({}).catch(() => {});
          return evictionWarnings(lines).length >= 2;
        },
        { timeoutMs: 10_000, intervalMs: 100, message: 'the warning of the new connection' },
      );
      for (let i = 0; i < 5; i++) await task.enqueue({});
      assert.equal(evictionWarnings(lines).length, 2);
      // The dashboard's overview shows it too.
      const dashboard = Fastify();
      await dashboard.register(dashboardPlugin, { errand: app });
      try {
        const overview = (await dashboard.inject('/dashboard/api/overview')).json<Overview>();
        assert.equal(overview.warnings.length, 1);
        assert.match(overview.warnings[0]!, /maxmemory-policy allkeys-lru.*noeviction/);
      } finally {
        await dashboard.close();
      }
      // And `errand inspect queues`, under its table.
      const cli = await run(process.execPath, [CLI, 'inspect', 'queues', '--broker', `redis://127.0.0.1:${server.port}`], {
        timeout: 30_000,
      });
      assert.match(cli.stdout, /^evict\s/m);
      assert.match(cli.stdout, /^Warning: Redis at .* has maxmemory-policy allkeys-lru.*noeviction/m);
    } finally {
      await app.close();
    }
  });

  it('says nothing on noeviction, and says it cannot check when INFO is refused', async () => {
    const ok = await startRedisServer(tempDir('errand-evict'), ['--maxmemory-policy', 'noeviction']);
    servers.push(ok);
    // An ACL user that may run everything but INFO (as some managed services).
    const refused = await startRedisServer(tempDir('errand-evict'), ['--user', 'default', 'on', 'nopass', '~*', '&*', '+@all', '-info']);
    servers.push(refused);
    for (const [server, expected] of [
      [ok, 0],
      [refused, 1],
    ] as const) {
      const { logger, lines } = capturingLogger();
      const app = createErrand({ broker: `redis://127.0.0.1:${server.port}`, logger });
      const task = app.task('evict_probe', { input: z.object({}), queue: 'evict' }, () => 1);
      const warn = console.warn;
      console.warn = () => {}; // ioredis's own note that it skips its ready check without INFO
      try {
        await task.enqueue({});
        if (expected) await waitFor(() => evictionWarnings(lines).length > 0, { timeoutMs: 10_000, message: 'the warning' });
        else await new Promise((r) => setTimeout(r, 300));
        const warnings = evictionWarnings(lines);
        assert.equal(warnings.length, expected, JSON.stringify(warnings));
        assert.equal((await ((await app.broker()) as Broker & BrokerInspector).storageWarnings()).length, expected);
        if (expected)
          assert.match(
            String(warnings[0]!.msg),
            /cannot be checked for its maxmemory-policy \(INFO refused: NOPERM.*make sure it is noeviction/,
          );
      } finally {
        console.warn = warn;
        await app.close();
      }
    }
  });
});

describe('Redis full (maxmemory, noeviction)', () => {
  let server: OwnRedis;
  before(async () => {
    server = await startRedisServer(tempDir('errand-full'), ['--maxmemory', '8mb', '--maxmemory-policy', 'noeviction']);
  });
  after(async () => {
    await server?.stop();
  });

  it('refuses enqueues with BrokerFullError (HTTP 503), keeps outcomes and leases, prunes, and ends every accepted run once', async () => {
    const app = createErrand({ broker: `redis://127.0.0.1:${server.port}`, logger: quietLogger });
    const { executions, count, open, held } = heldTask(app);
    const short = app.task('short', { input: z.object({}), queue: 'short', retention: 1 }, (_input, ctx) => {
      count(ctx.runId);
      return 1;
    });
    const fill = app.task('fill', { input: z.object({ pad: z.string() }), queue: 'fill' }, (_input, ctx) => {
      count(ctx.runId);
      return 1;
    });
    const broker = (await app.broker()) as Broker & BrokerInspector;
    // A 1 s lease, renewed every 250 ms: the wait below outlasts several.
    const worker = app.worker({ queues: ['short', 'held'], concurrency: 10, leaseMs: 1000, pruneEvery: 3_600_000 });
    // A second worker on the held runs' queue: its reserves would recover any lease that expired.
    const spare = app.worker({ queues: ['held'], concurrency: 1, leaseMs: 1000, pruneEvery: 3_600_000 });
    const http = await createServer({ errand: app, logger: false, docs: false });
    const pad = 'x'.repeat(4000);
    try {
      await worker.start();
      const shorts = await Promise.all(Array.from({ length: 100 }, () => short.enqueue({})));
      await waitFor(async () => (await broker.counts(['short'])).short!.succeeded === shorts.length, {
        timeoutMs: 20_000,
        intervalMs: 50,
        message: 'the short runs to succeed',
      });
      const helds = await Promise.all(Array.from({ length: 10 }, () => held.enqueue({})));
      await waitFor(() => helds.every((h) => executions.get(h.id) === 1), { timeoutMs: 20_000, message: 'the held runs to start' });
      await spare.start();

      // Fill Redis with runs until it refuses one.
      const accepted: string[] = [];
      let refusal: unknown;
      for (let round = 0; refusal === undefined && round < 1000; round++) {
        const results = await Promise.allSettled(Array.from({ length: 20 }, () => fill.enqueue({ pad })));
        for (const r of results) {
          if (r.status === 'fulfilled') accepted.push(r.value.id);
          else refusal ??= r.reason;
        }
      }
      assert.ok(refusal instanceof BrokerFullError, `refused with ${String(refusal)}`);
      assert.equal(refusal.storage, 'memory');
      assert.match(refusal.message, /^Redis is out of memory .*maxmemory.*nothing was done/);
      assert.ok(accepted.length > 100, `${accepted.length} runs accepted`);
      // Redis's memory moves around the limit (client buffers come and go), so a write may pass now
      // and then: the limit goes 1 MB under what it uses, and Redis stays full for the rest.
      const used = Number(/^used_memory:(\d+)/m.exec(await redisCli(server.port, ['INFO', 'memory']))?.[1]);
      await redisCli(server.port, ['CONFIG', 'SET', 'maxmemory', String(used - 1024 * 1024)]);
      const res = await http.inject({ method: 'POST', url: '/tasks/fill', payload: { pad } });
      assert.equal(res.statusCode, 503, res.body);
      // The dashboard's overview (and `errand inspect queues`) say Redis is full, and what it refuses.
      const [full, ...more] = await broker.storageWarnings();
      assert.deepEqual(more, []);
      assert.match(full!, /^Redis at .* is full \(.* used of its maxmemory .*\): it refuses new runs/);
      assert.ok(res.headers['retry-after']);
      assert.match(res.json().detail, /out of memory/);

      // The held runs go on executing while Redis is full: their worker keeps their leases (renew
      // runs under OOM), so no reserve recovers them and nothing executes twice.
      await new Promise((r) => setTimeout(r, 3000)); // three leases
      for (const h of helds) assert.equal((await broker.getRun(h.id))?.state, 'active', `${h.id} keeps its lease`);
      assert.ok(helds.every((h) => executions.get(h.id) === 1));

      // Pruning deletes finished runs under OOM (it only deletes), which frees memory.
      assert.ok((await broker.prune(Date.now())) >= shorts.length);
      assert.equal((await broker.counts(['short'])).short!.succeeded, 0);

      // The held runs finish (their outcomes stored, or kept by the worker until they can be), and
      // memory is freed: every accepted run ends exactly once.
      open();
      await waitFor(() => worker.activeCount === 0, { timeoutMs: 10_000, message: 'the held handlers to return' });
      await new Promise((r) => setTimeout(r, 1500)); // their outcomes wait in the worker, their leases renewed
      const whileFull = await Promise.all(helds.map(async (h) => (await broker.getRun(h.id))?.state));
      await redisCli(server.port, ['CONFIG', 'SET', 'maxmemory', '0']);
      await drainAndReconcile(app, broker, { accepted, held: helds.map((h) => h.id) }, executions, 50);
      console.log(
        `[fault-figures] redis full: ${accepted.length} runs accepted before the refusal; ${helds.length} runs executing kept their leases, each executed once; their states after they returned, Redis full: ${whileFull.join(', ')}`,
      );
    } finally {
      open();
      await spare.stop({ graceMs: 0 });
      await worker.stop({ graceMs: 0 });
      await http.close();
      await app.close();
    }
  });
});
