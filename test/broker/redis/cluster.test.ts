/**
 * Errand on a Redis Cluster: a local three-master cluster of the test's own (redis-server with
 * cluster mode on, joined by `redis-cli --cluster create`, on free ports in a temp dir; stopped at
 * the end; the machine's shared Redis is never touched).
 *
 * - the broker conformance and inspector suites against `redis+cluster://...`;
 * - layout: each queue's keys live in the one slot of its `{queue}` hash tag, on the node that owns
 *   that slot and nowhere else, and the queues of the echo fixture spread over all three nodes;
 * - processes: the seed service (`node app/main.ts api` and two `worker`s with
 *   REDIS_URL=redis+cluster://...) sends one email per user through a real SMTP server, and two
 *   `errand worker --broker redis+cluster://...` processes run runs spread over four queues.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { Cluster, Redis } from 'ioredis';
import { QueueKeys, splitRunId } from '../../../src/broker/redis/codec.ts';
import { RedisBroker } from '../../../src/broker/redis/redis-broker.ts';
import type { Broker } from '../../../src/broker/types.ts';
import { createErrand } from '../../../src/index.ts';
import { startSmtp } from '../../app/support.ts';
import { Q } from '../../conformance/context.ts';
import { inspectorConformance } from '../../conformance/inspector.ts';
import { brokerConformance, type MakeBroker } from '../../conformance/suite.ts';
import { Q2, Q3 } from '../../conformance/workflow-queues.ts';
import { quietLogger } from '../../fixtures/brokers.ts';
import { requires } from '../../fixtures/prereq.ts';
import { defineEchoTasks, type Echo, QUEUES } from '../../fixtures/echo-tasks.ts';
import { APP_MAIN, CLI, type Proc, spawnNode, stopProc } from '../../fixtures/procs.ts';
import { freePort, type OwnCluster, redisCli, startCluster } from '../../fixtures/redis-servers.ts';
import { tempDir, uniquePrefix, waitFor } from '../../helpers.ts';

const FIXTURE = new URL('../../fixtures/echo-tasks.ts', import.meta.url).pathname;
/** A safety net for a loaded machine, not a timing assertion. */
const LONG = 90_000;

function clusterUnsupported(): string | undefined {
  const r = spawnSync('redis-cli', ['--cluster', 'help'], { encoding: 'utf8', timeout: 10_000 });
  if (r.error) return `redis-cli cannot be run: ${r.error.message}`;
  if (!/create/.test(`${r.stdout}${r.stderr}`)) return 'this redis-cli has no --cluster create';
  return undefined;
}

const skip = requires('redis-cli --cluster (Redis Cluster tests)', clusterUnsupported());

let cluster: OwnCluster | undefined;
const url = () => {
  if (!cluster) throw new Error('the cluster did not start');
  return cluster.url;
};

if (!skip) {
  before(async () => {
    cluster = await startCluster(tempDir('errand-cluster'));
  });
  after(async () => {
    await cluster?.stop();
  });

  const prefixOf = new WeakMap<Broker, string>();
  const makeBroker: MakeBroker = async (opts = {}) => {
    const { sameStorageAs, ...options } = opts;
    const prefix = sameStorageAs ? prefixOf.get(sameStorageAs) : uniquePrefix('errand-test');
    if (!prefix) throw new Error('sameStorageAs must be a broker made by this factory');
    const broker = new RedisBroker({ url: url(), prefix, ...options });
    prefixOf.set(broker, prefix);
    return broker;
  };
  // The cluster is thrown away at the end: no keys to clean up.
  brokerConformance('redis cluster', makeBroker, {
    connection: (broker) => ({ url: url(), options: { prefix: prefixOf.get(broker) } }),
    deleteRunBehindBroker: async (broker, id) => {
      const parts = splitRunId(id);
      if (!parts || !cluster) throw new Error(`not a run id, or no cluster: ${id}`);
      const redis = new Cluster(
        cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })),
        { lazyConnect: true },
      );
      try {
        await redis.connect();
        await redis.del(new QueueKeys(prefixOf.get(broker) ?? '', parts.queue).run(parts.rid));
      } finally {
        redis.disconnect();
      }
    },
    unreachable: () => new RedisBroker({ url: 'redis+cluster://127.0.0.1:1', prefix: uniquePrefix('errand-test') }),
  });
  inspectorConformance('redis cluster', makeBroker, {
    connection: (broker) => ({ url: url(), options: { prefix: prefixOf.get(broker) } }),
  });
} else {
  // Not registered without a cluster: one skipped entry says so (and in CI the run fails, above).
  describe('broker and inspector conformance on a Redis Cluster', { skip }, () => {});
}

/** The port of the master that owns `slot`, from CLUSTER SLOTS. */
async function ownerOf(slot: number, anyPort: number): Promise<number> {
  const redis = new Redis({ port: anyPort, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    const ranges = await redis.cluster('SLOTS');
    const master = ranges.find(([from, to]) => slot >= from && slot <= to)?.[2];
    assert.ok(master, `slot ${slot} is served`);
    return Number(master[1]);
  } finally {
    redis.disconnect();
  }
}

/** Keys matching `pattern` on one node only (a plain connection: no redirection). */
async function keysOn(port: number, pattern: string): Promise<string[]> {
  const redis = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    return keys;
  } finally {
    redis.disconnect();
  }
}

describe('Errand on a Redis Cluster: layout and processes', { skip }, () => {
  const procs: Proc[] = [];
  after(async () => {
    await Promise.all(procs.map((p) => stopProc(p)));
  });

  it('the queues of the conformance cases of workflows over several queues hash to different slots and nodes (their edges cross slots)', async () => {
    const ports = cluster!.nodes.map((n) => n.port);
    const slots = new Set<number>();
    const owners = new Set<number>();
    for (const queue of [Q, Q2, Q3]) {
      const slot = Number(await redisCli(ports[0]!, ['CLUSTER', 'KEYSLOT', `{${queue}}`]));
      slots.add(slot);
      owners.add(await ownerOf(slot, ports[0]!));
    }
    assert.equal(slots.size, 3, 'three slots');
    assert.equal(owners.size, 3, 'on three nodes');
  });

  it('two `errand worker --broker redis+cluster://...` processes run runs of four queues; each queue lives on the node owning its slot', async () => {
    const c = cluster!;
    const prefix = uniquePrefix('errand-cluster');
    const app = createErrand({ broker: url(), prefix, logger: quietLogger });
    const tasks = defineEchoTasks(app);
    const workers = [0, 1].map(() =>
      spawnNode([CLI, 'worker', FIXTURE, '--broker', url(), '--concurrency', '4'], { ERRAND_PREFIX: prefix }),
    );
    procs.push(...workers);
    try {
      const perQueue = 10;
      const handles = (
        await Promise.all(tasks.map((t) => t.enqueueMany(Array.from({ length: perQueue }, (_, n) => ({ input: { n } })))))
      ).flat();
      const results = (await Promise.all(handles.map((h) => h.result({ timeout: LONG })))) as Echo[];
      const pids = new Set(workers.map((w) => w.child.pid));
      for (const [i, r] of results.entries()) {
        assert.equal(r.queue, QUEUES[Math.floor(i / perQueue)]);
        assert.equal(r.n, i % perQueue);
        assert.ok(pids.has(r.pid), `run ${i} was run by a worker process (pid ${r.pid})`);
      }

      // Each queue's keys: all in the slot of its hash tag, on that slot's owner, on no other node.
      const ports = c.nodes.map((n) => n.port);
      const owners = new Set<number>();
      for (const queue of QUEUES) {
        const slot = Number(await redisCli(ports[0]!, ['CLUSTER', 'KEYSLOT', `{${queue}}`]));
        const owner = await ownerOf(slot, ports[0]!);
        owners.add(owner);
        for (const port of ports) {
          const keys = await keysOn(port, `${prefix}:{${queue}}:*`);
          if (port === owner) {
            assert.ok(keys.includes(`${prefix}:{${queue}}:succeeded`), `queue ${queue}'s keys are on its slot's owner (${port}): ${keys}`);
            for (const key of keys) assert.equal(Number(await redisCli(port, ['CLUSTER', 'KEYSLOT', key])), slot, key);
          } else {
            assert.deepEqual(keys, [], `no key of queue ${queue} on node ${port}`);
          }
        }
      }
      assert.equal(owners.size, c.nodes.length, `the queues ${QUEUES.join(', ')} spread over every node`);
    } finally {
      const codes = await Promise.all(workers.map((w) => stopProc(w)));
      await app.close();
      assert.deepEqual(codes, [0, 0], workers.map((w) => w.stderr()).join('\n'));
    }
  });

  it('the service on REDIS_URL=redis+cluster://...: an api and two worker processes send one email per user', async () => {
    const smtp = await startSmtp();
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const vars = {
      REDIS_URL: url(),
      ERRAND_PREFIX: uniquePrefix('errand-cluster-app'),
      SMTP_URL: smtp.url,
      PORT: String(port),
      DATA_DIR: tempDir('errand-cluster-app'),
      WORKER_CONCURRENCY: '4',
    };
    const api = spawnNode([APP_MAIN, 'api'], vars);
    const workers = [spawnNode([APP_MAIN, 'worker'], vars), spawnNode([APP_MAIN, 'worker'], vars)];
    const all = [api, ...workers];
    procs.push(...all);
    try {
      await waitFor(
        async () => {
          if (api.child.exitCode !== null) throw new Error(`the api exited with ${api.child.exitCode}: ${api.stderr()}`);
          return (await fetch(`${base}/readyz`)).ok;
        },
        { timeoutMs: LONG, intervalMs: 100, message: `${base}/readyz` },
      );
      const n = 20;
      const emails = Array.from({ length: n }, (_, i) => `cluster.${i}@example.com`);
      const created = await Promise.all(
        emails.map(async (email, i) => {
          const res = await fetch(`${base}/users/`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ username: `cluster ${i}`, email }),
          });
          assert.equal(res.status, 201, await res.clone().text());
          return (await res.json()) as { task: { id: string } | null };
        }),
      );
      assert.ok(
        created.every((c) => c.task !== null),
        'every user got a run at once (the broker answered)',
      );
      await waitFor(() => smtp.received.length >= n, { timeoutMs: LONG, message: `${n} emails` }).catch((err: Error) => {
        throw new Error(`${err.message}; ${smtp.received.length} received; stderr:\n${all.map((p) => p.stderr()).join('\n')}`);
      });
      assert.deepEqual(smtp.received.map((m) => m.to[0]).sort(), [...emails].sort(), 'one email per user, none twice');
      // The email reaches the SMTP server before the worker stores the run's outcome (settlements
      // are sent in batches after the handler returns): the run is looked at until it has ended.
      const id = created[0]!.task!.id;
      let state = '';
      await waitFor(
        async () => {
          state = ((await (await fetch(`${base}/runs/${id}`)).json()) as { state: string }).state;
          return state !== 'active' && state !== 'queued';
        },
        { timeoutMs: LONG, message: `run ${id} to end` },
      );
      assert.equal(state, 'succeeded');
    } finally {
      const codes = await Promise.all(all.map((p) => stopProc(p)));
      await smtp.close();
      assert.deepEqual(codes, [0, 0, 0], all.map((p) => p.stderr()).join('\n'));
    }
  });
});
