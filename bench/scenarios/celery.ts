/**
 * Scenario: serving Celery messages. The same Celery protocol 2 JSON messages (`bench.noop(i)`, as
 * Celery's `send_task` writes them) are pushed onto the `celery` list of the benchmark's Redis, and
 * drained either by an Errand worker (`errand/celery`, one process, concurrency 50, late ack) or by
 * Debian's Python Celery worker (prefork, concurrency 2 as the seed's anchor runs it, Celery's
 * defaults: prefetch 4, early ack). Both store each result in Celery's Redis result backend.
 * Measured: messages per second from the push to an empty queue with nothing left unacknowledged.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { buildMessage } from '../../src/celery/protocol.ts';
import { Collector, type Ctx, errMessage, type ScenarioResult } from '../lib/context.ts';
import { type Child, FatalError, spawnCmd, waitUntil } from '../lib/proc.ts';

const PYTHON = '/usr/bin/python3';
const ERRAND_CONCURRENCY = 50;
const CELERY_CONCURRENCY = 2;

function celeryAvailable(): string | null {
  try {
    return execFileSync(PYTHON, ['-c', 'import celery; print(celery.__version__)'], { encoding: 'utf8' }).trim();
  } catch {
    return null;
  }
}

async function fill(ctx: Ctx, n: number, offset: number): Promise<void> {
  const r = ctx.redis.client;
  for (let i = 0; i < n; i += 1000) {
    const pipe = r.pipeline();
    for (let j = i; j < Math.min(n, i + 1000); j++)
      pipe.lpush('celery', JSON.stringify(buildMessage('bench.noop', { args: [offset + j], queue: 'celery' })));
    await pipe.exec();
  }
}

/** Until the queue is empty, nothing is unacknowledged and `results` result keys (at least) exist. */
async function drained(ctx: Ctx, worker: Child, results: number, timeoutMs: number): Promise<void> {
  await waitUntil(
    async () => {
      if (worker.exited) throw new FatalError(`${worker.name} exited (${worker.exitInfo()}): ${worker.tail()}`);
      const r = ctx.redis.client;
      const [len, unacked, keys] = await Promise.all([r.llen('celery'), r.hlen('unacked'), r.dbsize()]);
      // DBSIZE first (cheap), then the exact count of result keys once it could be reached.
      return len === 0 && unacked === 0 && keys >= results && (await r.keys('celery-task-meta-*')).length >= results;
    },
    timeoutMs,
    'the celery queue to drain',
    5,
  );
}

export async function celeryScenario(ctx: Ctx): Promise<ScenarioResult> {
  const n = ctx.quick ? 2000 : 20_000;
  const col = new Collector();
  const notes: string[] = [];
  const version = celeryAvailable();
  const peers: { id: string; start: (url: string) => Child }[] = [
    {
      id: 'errand-celery',
      start: (url) =>
        spawnCmd('celery-errand', process.execPath, [join(ctx.root, 'bench/peers/celery-errand.ts')], {
          env: { REDIS_URL: url, CONCURRENCY: String(ERRAND_CONCURRENCY), LOG_LEVEL: 'warn' },
          cwd: ctx.root,
        }),
    },
  ];
  if (version) {
    peers.push({
      id: 'python-celery',
      start: (url) =>
        spawnCmd(
          'celery-python',
          PYTHON,
          [
            '-m',
            'celery',
            '-A',
            'celery_noop',
            'worker',
            '-c',
            String(CELERY_CONCURRENCY),
            '--loglevel=warning',
            '--without-gossip',
            '--without-mingle',
          ],
          {
            env: { REDIS_URL: url, PYTHONDONTWRITEBYTECODE: '1' },
            cwd: join(ctx.root, 'bench/peers'),
          },
        ),
    });
  } else notes.push(`Python Celery not measured: ${PYTHON} cannot import celery (apt-get install -y python3-celery python3-redis).`);

  const metric = `${n.toLocaleString('en-US')} Celery messages`;
  for (const p of peers) {
    for (let round = 0; round < ctx.sizes.rounds; round++) {
      let worker: Child | undefined;
      try {
        await ctx.redis.flush();
        worker = p.start(ctx.redis.url);
        // Warm-up, not counted: proves the worker is consuming.
        await fill(ctx, 200, 1e9);
        await drained(ctx, worker, 200, 120_000);
        const t0 = performance.now();
        await fill(ctx, n, 0);
        await drained(ctx, worker, 200 + n, Math.max(120_000, n * 20));
        const seconds = (performance.now() - t0) / 1000;
        const results = (await ctx.redis.client.keys('celery-task-meta-*')).length;
        if (results < n + 200) throw new Error(`only ${results} results stored for ${n + 200} messages`);
        col.add(metric, p.id, n / seconds, 'msgs/s');
      } catch (err) {
        col.fail(metric, p.id, errMessage(err), 'msgs/s');
        ctx.log(`  celery ${p.id}: ${errMessage(err)}`);
      } finally {
        await worker?.close();
      }
    }
    ctx.log(`  celery: ${p.id} done`);
  }
  notes.push(
    `The same ${n.toLocaleString('en-US')} protocol 2 JSON messages (bench.noop(i), results kept in Celery's Redis backend) pushed in pipelines of 1000 onto \`celery\`; ` +
      `timed from the first push to an empty queue with nothing unacknowledged. Errand: one process, concurrency ${ERRAND_CONCURRENCY}, late ack (one Lua call to take, one MULTI to store and ack). ` +
      `Python Celery ${version ?? '(absent)'}: prefork -c ${CELERY_CONCURRENCY} (the anchor's), prefetch 4, early ack (its defaults).`,
  );
  return { title: 'Celery messages: an Errand worker vs the Python Celery worker', metrics: col.figures(), notes };
}
