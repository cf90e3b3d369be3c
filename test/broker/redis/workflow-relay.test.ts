/**
 * The Redis broker's relay between queues (slots) for workflows over several queues
 * (docs/workflows.md, "Redis Cluster"; src/broker/redis/relay.ts): the crash windows. A broker
 * that dies between a script and the drain of what it relayed is played by running the script
 * itself on a plain connection (as the broker would) and not draining:
 *
 * - a relay entry written but not applied: a later reserve of that queue applies it, exactly once;
 *   the periodic prune (each worker's sweep) does too; an entry applied and not removed (a crash
 *   between the two), applied again, changes nothing;
 * - a creation cut short after some queues' runs were made: nothing of it runs; a resent
 *   createWorkflow completes it, cancelWorkflow ends it, and failing both, once the creation is
 *   PENDING_GRACE_MS old, the prune sweep completes it (every run made) or undoes it (runs missing);
 * - a workflow in one queue writes no relay entry (its path is the in-slot one);
 * - a workflow in one queue too large for one call (docs/workflows.md, "Limits") is created in the
 *   same frame: cut short after its first call, nothing runs and a resend completes it; cut short
 *   part way through the release of its roots, the sweep releases the others, each root once.
 *
 * Every broker uses a key prefix of its own, deleted at the end (never FLUSHDB).
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { QueueKeys } from '../../../src/broker/redis/codec.ts';
import { RedisBroker } from '../../../src/broker/redis/redis-broker.ts';
import { pushWorkflowRunArgs } from '../../../src/broker/redis/run-args.ts';
import { defineScripts, runScript } from '../../../src/broker/redis/scripts.ts';
import { PENDING_GRACE_MS } from '../../../src/broker/redis/workflows.ts';
import type { NewWorkflowRun } from '../../../src/broker/types.ts';
import { newRunId } from '../../../src/core/ids.ts';
import { dropRedisPrefixes } from '../../fixtures/brokers.ts';
import { uniquePrefix } from '../../helpers.ts';

const URL_ = process.env.ERRAND_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const redis = new Redis(URL_, { lazyConnect: true, maxRetriesPerRequest: 1 });
defineScripts(redis);
const prefixes = new Set<string>();
const brokers: RedisBroker[] = [];
const QA = 'relay-a';
const QB = 'relay-b';
const rid = (id: string) => id.slice(-26);

function open(): { b: RedisBroker; prefix: string } {
  const prefix = uniquePrefix('errand-relay');
  prefixes.add(prefix);
  const b = new RedisBroker({ url: URL_, prefix });
  brokers.push(b);
  return { b, prefix };
}

function step(queue: string, now: number, over: Partial<NewWorkflowRun> = {}): NewWorkflowRun {
  return { id: newRunId(queue, now), task: 'relay.echo', queue, input: '1', priority: 0, runAt: now, ...over };
}

after(async () => {
  await Promise.all(brokers.map((b) => b.close()));
  await dropRedisPrefixes(prefixes, URL_);
  redis.disconnect();
});

describe('Redis workflows over several queues: the relay across crashes', () => {
  it('an entry written but not drained is applied by a later reserve, exactly once; applied again, it changes nothing', async () => {
    await redis.connect().catch(() => {});
    const { b, prefix } = open();
    const t0 = Date.now();
    const a = step(QA, t0);
    const dep = step(QB, t0, { dependsOn: [{ id: a.id }], inputFrom: 'list' });
    await b.createWorkflow({ id: newRunId(QA, t0), runs: [a, dep] }, t0);
    const [lease] = (await b.reserve({ workerId: 'w', queues: [QA], max: 1, leaseMs: 30_000, now: t0 + 1 })).runs;
    assert.equal(lease?.id, a.id);

    // The settle script alone, as a broker that dies before draining would have run it.
    const ka = new QueueKeys(prefix, QA);
    const reply = (await runScript(
      redis,
      'settle',
      [ka.active, ka.sched],
      [ka.base, 'w', t0 + 2, `${prefix}:events`, ka.idPrefix, rid(a.id), 1, 's', '"v"', 60_000],
    )) as number[];
    assert.deepStrictEqual(reply, [1, 1], 'applied, and the outbox holds an entry');
    const entries = await redis.lrange(`${ka.base}wo`, 0, -1);
    assert.equal(entries.length, 1);
    assert.equal((await b.getRun(dep.id))?.state, 'waiting', 'not applied yet');

    // A later reserve of the queue that wrote it (any worker) drains it.
    await b.reserve({ workerId: 'other', queues: [QA], max: 1, leaseMs: 30_000, now: t0 + 3 });
    assert.equal((await b.getRun(dep.id))?.state, 'queued', 'applied by the reserve');
    assert.equal(await redis.llen(`${ka.base}wo`), 0, 'and removed');

    // Applied but not removed (a crash between the two): applied again by the sweep, nothing changes.
    await redis.rpush(`${ka.base}wo`, ...entries);
    await b.prune(t0 + 4);
    assert.equal(await redis.llen(`${ka.base}wo`), 0, 'the sweep drained it');
    assert.equal((await b.counts([QB]))[QB]?.queued, 1, 'the dependent is queued once');
    const ready = (await b.reserve({ workerId: 'w', queues: [QB], max: 10, leaseMs: 30_000, now: t0 + 5 })).runs;
    assert.deepStrictEqual(
      ready.map((r) => [r.id, r.input]),
      [[dep.id, '["v"]']],
    );
    await b.settle('w', [{ id: dep.id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: 60_000 }], t0 + 6);
    await redis.rpush(`${ka.base}wo`, ...entries);
    await b.prune(t0 + 7);
    assert.equal((await b.getRun(dep.id))?.state, 'succeeded', 'a stale entry does not bring a finished run back');
    assert.equal((await b.counts([QB]))[QB]?.queued, 0);
  });

  it('a failure relayed late still cancels, once; the sweep applies an entry no reserve drained', async () => {
    await redis.connect().catch(() => {});
    const { b, prefix } = open();
    const t0 = Date.now();
    const a = step(QA, t0);
    const dep = step(QB, t0, { dependsOn: [{ id: a.id }] });
    await b.createWorkflow({ id: newRunId(QA, t0), runs: [a, dep] }, t0);
    await b.reserve({ workerId: 'w', queues: [QA], max: 1, leaseMs: 30_000, now: t0 + 1 });
    const ka = new QueueKeys(prefix, QA);
    await runScript(
      redis,
      'settle',
      [ka.active, ka.sched],
      [ka.base, 'w', t0 + 2, `${prefix}:events`, ka.idPrefix, rid(a.id), 1, 'f', '{"name":"Error","message":"boom"}', 60_000],
    );
    assert.equal((await b.getRun(dep.id))?.state, 'waiting');
    await b.prune(t0 + 3);
    const rec = await b.getRun(dep.id);
    assert.equal(rec?.state, 'cancelled', 'the sweep applied it');
    assert.match(rec?.error ?? '', /dependency_failed/);
  });

  it('a creation cut short runs nothing; a resend completes it, cancelWorkflow ends it, and failing both the prune sweep does one or the other', async () => {
    await redis.connect().catch(() => {});
    const { b, prefix } = open();
    const t0 = Date.now();
    const ka = new QueueKeys(prefix, QA);
    const kb = new QueueKeys(prefix, QB);
    await b.counts([QA, QB]); // the layout version written, as any first call does
    for (const mode of ['resend', 'cancel', 'sweep: runs missing', 'sweep: every run made'] as const) {
      const a = step(QA, t0);
      const r2 = step(QB, t0);
      const dep = step(QB, t0, { dependsOn: [{ id: a.id }, { id: r2.id }], inputFrom: 'list' });
      const wfId = newRunId(QA, t0);
      const wfRid = rid(wfId);
      // Begin, then queue QB's runs (and with the last mode QA's), then the broker dies before the commit.
      await runScript(redis, 'wfmulti', [`${ka.base}wf:${wfRid}`], [ka.base, t0, 'b', QB, [a.id, r2.id, dep.id].join(',')]);
      const args: (string | number)[] = [kb.base, t0, wfId, 'm', 2];
      // 16 per run (wfcreate.lua), as the broker builds them: a new run's 14, inputFrom, dependencies.
      pushWorkflowRunArgs(args, r2, rid(r2.id), t0, 60_000, '');
      pushWorkflowRunArgs(args, dep, rid(dep.id), t0, 60_000, `${a.id}\tc\t\n${rid(r2.id)}\tc\t`);
      await runScript(redis, 'wfcreate', [`${kb.base}wf:${wfRid}`], args);
      if (mode === 'sweep: every run made') {
        const own: (string | number)[] = [ka.base, t0, wfId, 'm', 1];
        pushWorkflowRunArgs(own, a, rid(a.id), t0, 60_000, '');
        own.push(rid(a.id), dep.id, 'c'); // the edge from a to its dependent in QB
        await runScript(redis, 'wfcreate', [`${ka.base}wf:${wfRid}`], own);
      }
      const none = await b.reserve({ workerId: 'w', queues: [QA, QB], max: 10, leaseMs: 30_000, now: t0 + 1 });
      assert.deepStrictEqual(none.runs, [], `${mode}: no root of a half-made workflow runs`);
      const rec = await b.getWorkflow(wfId);
      assert.deepStrictEqual(
        rec?.runs.map((r) => [r.id, r.state]).sort(),
        [...(mode === 'sweep: every run made' ? [[a.id, 'waiting']] : []), [r2.id, 'waiting'], [dep.id, 'waiting']].sort(),
        `${mode}: what was made is listed, waiting`,
      );
      await b.prune(t0 + 2);
      assert.equal((await b.getRun(r2.id))?.state, 'waiting', `${mode}: a creation younger than the grace is left to its creator`);
      if (mode === 'resend') {
        assert.deepStrictEqual(await b.createWorkflow({ id: wfId, runs: [a, r2, dep] }, t0 + 2), { id: wfId, created: true });
        const roots = (await b.reserve({ workerId: 'w', queues: [QA, QB], max: 10, leaseMs: 30_000, now: t0 + 3 })).runs;
        assert.deepStrictEqual(roots.map((r) => r.id).sort(), [a.id, r2.id].sort(), 'completed: both roots run');
        assert.deepStrictEqual(await b.createWorkflow({ id: wfId, runs: [a, r2, dep] }, t0 + 4), { id: wfId, created: false });
      } else if (mode === 'cancel') {
        assert.deepStrictEqual(await b.cancelWorkflow(wfId, t0 + 2), { outcome: 'cancelled', runs: 2 });
        assert.equal((await b.getRun(r2.id))?.state, 'cancelled');
        assert.equal((await b.getRun(dep.id))?.state, 'cancelled', 'nothing of it left waiting');
      } else if (mode === 'sweep: runs missing') {
        await b.prune(t0 + PENDING_GRACE_MS + 1);
        assert.equal((await b.getRun(r2.id))?.state, 'cancelled', 'undone by the sweep');
        assert.equal((await b.getRun(dep.id))?.state, 'cancelled', 'nothing of it left waiting');
      } else {
        await b.prune(t0 + PENDING_GRACE_MS + 1);
        const roots = (await b.reserve({ workerId: 'w', queues: [QA, QB], max: 10, leaseMs: 30_000, now: t0 + 3 })).runs;
        assert.deepStrictEqual(roots.map((r) => r.id).sort(), [a.id, r2.id].sort(), 'completed by the sweep: both roots run');
        assert.deepStrictEqual(await b.createWorkflow({ id: wfId, runs: [a, r2, dep] }, t0 + 4), { id: wfId, created: false });
      }
      // A cancelled creation stays pending (its creator may still be at work) until the sweep, which
      // then finds nothing to start: what was cancelled stays cancelled.
      await b.prune(t0 + PENDING_GRACE_MS + 2);
      assert.equal(await redis.zcard(`${ka.base}wp`), 0, `${mode}: no creation left pending`);
      if (mode === 'cancel') {
        const state = (await b.getRun(r2.id))?.state;
        assert.ok(
          state === 'cancelled' || state === undefined,
          `not started by the sweep (cancelled, or pruned past its retention): ${state}`,
        );
      }
    }
  });

  it('a workflow in one queue writes no relay entry', async () => {
    await redis.connect().catch(() => {});
    const { b, prefix } = open();
    const t0 = Date.now();
    const a = step(QA, t0);
    const z = step(QA, t0, { dependsOn: [{ id: a.id }] });
    await b.createWorkflow({ id: newRunId(QA, t0), runs: [a, z] }, t0);
    await b.reserve({ workerId: 'w', queues: [QA], max: 1, leaseMs: 30_000, now: t0 + 1 });
    await b.settle('w', [{ id: a.id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: 60_000 }], t0 + 2);
    assert.equal((await b.getRun(z.id))?.state, 'queued');
    const ka = new QueueKeys(prefix, QA);
    assert.equal(await redis.exists(`${ka.base}wo`, `${ka.base}woN`), 0);
  });

  it('a workflow in one queue too large for one call: cut short, nothing runs; a resend, or the sweep, completes it, each root queued once', async () => {
    await redis.connect().catch(() => {});
    const { b, prefix } = open();
    const t0 = Date.now();
    const ka = new QueueKeys(prefix, QA);
    await b.counts([QA]);
    const make = () => {
      const roots = Array.from({ length: 1100 }, () => step(QA, t0));
      const last = step(QA, t0, { dependsOn: roots.map((r) => ({ id: r.id })), inputFrom: 'list' });
      return { roots, last, runs: [...roots, last], id: newRunId(QA, t0) };
    };
    // wfcreate.lua's call for some of its runs (mode m: roots held), as the broker makes it.
    const createPart = (id: string, runs: NewWorkflowRun[]) => {
      const args: (string | number)[] = [ka.base, t0, id, 'm', runs.length];
      for (const r of runs)
        pushWorkflowRunArgs(args, r, rid(r.id), t0, 60_000, (r.dependsOn ?? []).map((d) => `${rid(d.id)}\tc\t`).join('\n'));
      return runScript(redis, 'wfcreate', [`${ka.base}wf:${rid(id)}`], args);
    };
    const begin = (id: string, runs: NewWorkflowRun[]) =>
      runScript(redis, 'wfmulti', [`${ka.base}wf:${rid(id)}`], [ka.base, t0, 'b', '', runs.map((r) => r.id).join(',')]);
    const reserveAll = async (now: number) =>
      (await b.reserve({ workerId: 'w', queues: [QA], max: 5000, leaseMs: 10 * PENDING_GRACE_MS, now })).runs.map((r) => r.id);

    // Cut short after the first of its calls: nothing runs; a resend completes it.
    const one = make();
    await begin(one.id, one.runs);
    await createPart(one.id, one.runs.slice(0, 500));
    assert.deepStrictEqual(await reserveAll(t0 + 1), [], 'no root of a half-made workflow runs');
    assert.equal((await b.getWorkflow(one.id))?.runs.length, 500, 'what was made is listed');
    assert.deepStrictEqual(await b.createWorkflow({ id: one.id, runs: one.runs }, t0 + 2), { id: one.id, created: true });
    const got = await reserveAll(t0 + 3);
    assert.deepStrictEqual([...got].sort(), one.roots.map((r) => r.id).sort(), 'every root queued, once');
    assert.equal((await b.getRun(one.last.id))?.state, 'waiting');
    const rec = await b.getWorkflow(one.id);
    assert.equal(rec?.runs.length, 1101);
    assert.equal(rec?.edges.length, 1100);
    assert.deepStrictEqual(await b.createWorkflow({ id: one.id, runs: one.runs }, t0 + 4), { id: one.id, created: false });

    // Every run made, cut short after releasing some roots (wfmulti g): those run; the sweep, once
    // the creation is PENDING_GRACE_MS old, releases the others, none twice.
    const two = make();
    await begin(two.id, two.runs);
    for (let i = 0; i < two.runs.length; i += 500) await createPart(two.id, two.runs.slice(i, i + 500));
    const early = two.roots.slice(0, 500).map((r) => rid(r.id));
    await runScript(redis, 'wfmulti', [`${ka.base}wf:${rid(two.id)}`], [ka.base, t0, 'g', `${prefix}:events`, ka.idPrefix, ...early]);
    const first = await reserveAll(t0 + 5);
    assert.deepStrictEqual(
      [...first].sort(),
      two.roots
        .slice(0, 500)
        .map((r) => r.id)
        .sort(),
    );
    await b.prune(t0 + PENDING_GRACE_MS + 1);
    const rest = await reserveAll(t0 + PENDING_GRACE_MS + 2);
    assert.deepStrictEqual(
      [...rest].sort(),
      two.roots
        .slice(500)
        .map((r) => r.id)
        .sort(),
      'the others, once each',
    );
    assert.equal(await redis.zcard(`${ka.base}wp`), 0, 'no creation left pending');
    assert.equal((await b.getRun(two.last.id))?.state, 'waiting');
  });
});
