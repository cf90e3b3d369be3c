// Fault 2: Redis killed with SIGKILL mid-flow (AOF, appendfsync always) and started again on the
// same port and dir. The API and the workers reconnect by themselves and resume; nothing accepted
// is lost; requests during the outage get 201 (the user is kept and its email scheduled by the
// sweep) or 503 with Retry-After, never a 500; every accepted user gets exactly one email, and no
// email goes out for a refused request.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { z } from 'zod';
import { createErrand } from '../../src/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { tempDir, waitFor } from '../helpers.ts';
import { connected, figure, Procs, START_LIMIT_MS, startRedis } from './harness.ts';
import { ServiceRig } from './service-rig.ts';

const DOWN_MS = 3000;

describe('fault: Redis killed with SIGKILL mid-flow and restarted', () => {
  it('API and workers reconnect by themselves; every accepted user gets exactly one email', { timeout: 900_000 }, async () => {
    const procs = new Procs();
    const dir = tempDir('errand-fault-redis');
    const redis = await startRedis(procs, join(dir, 'redis'), { persistent: true });
    const rig = new ServiceRig(procs, {
      prefix: 'fault-redis',
      dataDir: join(dir, 'data'),
      serviceRedisUrl: redis.url,
      directRedisUrl: redis.url,
    });
    try {
      await rig.start();
      await rig.startLoad('redis-kill');
      const before = rig.load!.answers.length;
      await redis.kill9();
      const downAt = Date.now();
      await sleep(DOWN_MS);
      await redis.start();
      const upAt = Date.now();
      // Keep the load on until the service took new users with their runs again, and a bit more.
      await waitFor(() => rig.load!.answers.some((a) => a.at > upAt && a.status === 201 && a.runId), {
        timeoutMs: START_LIMIT_MS,
        intervalMs: 50,
        message: 'the API to enqueue again after the restart',
      });
      await sleep(1000);
      await rig.stopLoad();
      const during = rig.load!.answers.filter((a) => a.at >= downAt && a.at < upAt);
      const figures = await rig.verify(upAt);
      figure('redis-kill', {
        ...figures,
        downMs: upAt - downAt,
        requestsBeforeKill: before,
        requestsDuringOutage: during.length,
        duringOutage: {
          accepted: during.filter((a) => a.status === 201).length,
          refused503: during.filter((a) => a.status === 503).length,
        },
      });
    } finally {
      await procs.killAll();
      await rig.close();
      await redis.stop();
    }
  });

  it('keeps every acknowledged run through kill -9 with AOF (always; everysec once written to the OS), none without persistence', async () => {
    const RUNS = 2000;
    const kept: Record<string, number> = {};
    /** With everysec: bytes of the AOF buffer not yet written to the OS when Redis was killed. */
    let everysecUnwritten: number | undefined;
    for (const mode of ['aof-always', 'aof-everysec', 'no-persistence'] as const) {
      const procs = new Procs();
      const dir = tempDir(`errand-fault-persist-${mode}`);
      const redis = await startRedis(procs, join(dir, 'redis'), {
        persistent: mode !== 'no-persistence',
        appendfsync: mode === 'aof-everysec' ? 'everysec' : 'always',
      });
      const app = createErrand({ broker: redis.url, prefix: 'fault-persist', logger: quietLogger });
      const task = app.task('work', { input: z.object({ n: z.number().int() }), queue: 'persist' }, () => null);
      try {
        await connected(app);
        // Acknowledged enqueues, then SIGKILL at once: no time for a background flush.
        await Promise.all(
          Array.from({ length: 10 }, (_, b) =>
            task.enqueueMany(Array.from({ length: RUNS / 10 }, (_, i) => ({ input: { n: b * 1000 + i } }))),
          ),
        );
        if (mode === 'aof-everysec') {
          // What docs/reliability.md promises for everysec: what reached the OS survives a process
          // crash; Redis holds writes back (the AOF buffer) only while a slow fsync is pending.
          const direct = new Redis(redis.url, { maxRetriesPerRequest: 1 });
          try {
            const info = await direct.info('persistence');
            everysecUnwritten = Number(/aof_buffer_length:(\d+)/.exec(info)?.[1] ?? Number.NaN);
          } finally {
            direct.disconnect();
          }
        }
        await redis.kill9();
        await redis.start();
        const broker = await app.broker();
        kept[mode] = await waitFor(
          async () => {
            const c = (await broker.counts(['persist'])).persist!;
            return { n: c.queued };
          },
          { timeoutMs: START_LIMIT_MS, message: 'the broker to answer after the restart' },
        ).then((r) => r.n);
      } finally {
        await app.close();
        await procs.killAll();
      }
    }
    assert.equal(kept['aof-always'], RUNS, 'appendfsync always: every acknowledged run survives');
    assert.ok(everysecUnwritten !== undefined && !Number.isNaN(everysecUnwritten), 'INFO persistence gave aof_buffer_length');
    if (everysecUnwritten === 0) assert.equal(kept['aof-everysec'], RUNS, 'appendfsync everysec, AOF buffer written: every run survives');
    else assert.ok(kept['aof-everysec']! <= RUNS, `everysec with ${everysecUnwritten} bytes held back by a slow fsync`);
    assert.equal(kept['no-persistence'], 0, 'without persistence a crash loses every run');
    figure('redis-persistence', { acknowledged: RUNS, keptAfterKill9: kept, everysecUnwrittenBytes: everysecUnwritten });
  });
});
