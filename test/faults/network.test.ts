// Fault 3: the network between the service and Redis cut by a TCP proxy that the test controls.
// - drop: every connection reset, and every new one, for a few seconds;
// - black hole: connections stay up (and new ones are accepted) but nothing goes through, longer
//   than the API's enqueue timeout; then the held bytes are delivered, as TCP would after a
//   partition heals.
// Same outcome as a Redis crash: API and workers recover by themselves, never a 500, every accepted
// user gets exactly one email (including those whose enqueue timed out in the black hole and was
// delivered late: the sweep's enqueue collapses into it by idempotency key), none for a refusal.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { tempDir, waitFor } from '../helpers.ts';
import { figure, Procs, START_LIMIT_MS, startRedis, TcpProxy } from './harness.ts';
import { ServiceRig } from './service-rig.ts';

const DROP_MS = 3000;
// Longer than POST /users/'s wait for the enqueue (5 s).
const BLACKHOLE_MS = 7000;

describe('fault: network between the service and Redis cut (drop, then black hole)', () => {
  it('API and workers recover by themselves; every accepted user gets exactly one email', { timeout: 900_000 }, async () => {
    const procs = new Procs();
    const dir = tempDir('errand-fault-net');
    const redis = await startRedis(procs, join(dir, 'redis'), { persistent: true });
    const proxy = await TcpProxy.start(redis.port);
    const rig = new ServiceRig(procs, {
      prefix: 'fault-net',
      dataDir: join(dir, 'data'),
      serviceRedisUrl: proxy.url,
      directRedisUrl: redis.url,
    });
    const enqueuingAfter = (t: number, what: string) =>
      waitFor(() => rig.load!.answers.some((a) => a.at > t && a.status === 201 && a.runId), {
        timeoutMs: START_LIMIT_MS,
        intervalMs: 50,
        message: `the API to enqueue again after ${what}`,
      });
    try {
      await rig.start();
      await rig.startLoad('net');

      proxy.setMode('drop');
      const dropAt = Date.now();
      await sleep(DROP_MS);
      proxy.setMode('forward');
      const dropEnd = Date.now();
      await enqueuingAfter(dropEnd, 'the drop');

      proxy.setMode('blackhole');
      const holeAt = Date.now();
      await sleep(BLACKHOLE_MS);
      proxy.setMode('forward');
      const holeEnd = Date.now();
      await enqueuingAfter(holeEnd, 'the black hole');
      await sleep(1000);
      await rig.stopLoad();

      const answers = rig.load!.answers;
      const inDrop = answers.filter((a) => a.at >= dropAt && a.at < dropEnd);
      const inHole = answers.filter((a) => a.at >= holeAt && a.at < holeEnd);
      // Held requests: sent into the black hole, answered after it healed, with their run.
      const held = inHole.filter((a) => a.status === 201 && a.runId && a.doneAt >= holeEnd);
      const figures = await rig.verify(holeEnd);
      assert.ok(inDrop.length > 0 && inHole.length > 0, 'requests were made during both faults');
      figure('network', {
        ...figures,
        dropMs: dropEnd - dropAt,
        blackholeMs: holeEnd - holeAt,
        duringDrop: {
          requests: inDrop.length,
          acceptedWithRun: inDrop.filter((a) => a.status === 201 && a.runId).length,
          acceptedWithoutRun: inDrop.filter((a) => a.status === 201 && !a.runId).length,
          refused503: inDrop.filter((a) => a.status === 503).length,
        },
        duringBlackhole: {
          requests: inHole.length,
          heldThenEnqueued: held.length,
          acceptedWithoutRun: inHole.filter((a) => a.status === 201 && !a.runId).length,
          refused503: inHole.filter((a) => a.status === 503).length,
          longestAnswerMs: Math.max(...inHole.map((a) => a.doneAt - a.at)),
        },
        probe503DuringDrop: rig.probes.filter((p) => p.status === 503 && p.at >= dropAt && p.at < dropEnd).length,
        probe503DuringBlackhole: rig.probes.filter((p) => p.status === 503 && p.at >= holeAt && p.at < holeEnd).length,
        proxyConnections: proxy.accepted,
      });
    } finally {
      await procs.killAll();
      await rig.close();
      await proxy.close();
      await redis.stop();
    }
  });
});
