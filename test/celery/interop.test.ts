// Errand and Debian's real Celery (python3-celery 5.2, kombu 5.2) on one Redis, both ways:
// - Python send_task/delay -> an Errand worker -> AsyncResult.get() in Python returns the TS result,
//   or raises the TS error's type with its message; a message failing zod validation, or pickled,
//   is FAILURE with the reason (never dropped);
// - Errand sendTask -> a Python Celery worker -> the result (or the exception's type and message)
//   read in TypeScript; chains and link/link_error both ways; ETA and retries.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { z } from 'zod';
import {
  type CeleryClient,
  CeleryTaskError,
  type CeleryWorker,
  createCeleryClient,
  createCeleryWorker,
  signature,
} from '../../src/celery/index.ts';
import type { OwnRedis } from '../fixtures/redis-servers.ts';
import { waitFor } from '../helpers.ts';
import { celeryCli, celerySkip, ownRedis, py, pythonWorker } from './support.ts';

const skip = celerySkip();

describe('Celery interop (Debian python3-celery)', { skip }, () => {
  let server: OwnRedis;
  let url: string;
  let redis: Redis;
  let worker: CeleryWorker;
  let client: CeleryClient;
  let pyWorker: ReturnType<typeof pythonWorker>;
  const attempts = new Map<string, number>();
  let ranLater = 0;

  before(async () => {
    ({ server, url } = await ownRedis('errand-celery-interop'));
    redis = new Redis(url);
    worker = createCeleryWorker({ url, queues: ['celery'], concurrency: 4 });
    worker.register('ts.add', { args: z.tuple([z.number(), z.number()]) }, ([a, b]) => (a as number) + (b as number));
    worker.register('ts.greet', { kwargs: z.object({ name: z.string().min(1) }) }, (_args, { name }) => ({ hello: name }));
    worker.register('ts.fail', {}, ([message]) => {
      throw new TypeError(String(message));
    });
    worker.register('ts.refused', {}, () => {
      class EmailRefused extends Error {
        override name = 'EmailRefused';
      }
      throw new EmailRefused('550 mailbox unavailable');
    });
    worker.register('ts.flaky', { maxRetries: 3 }, (_args, _kwargs, ctx) => {
      attempts.set(ctx.id, (attempts.get(ctx.id) ?? 0) + 1);
      if (ctx.retries < 2) ctx.retry({ countdown: 0.1 });
      return { retries: ctx.retries };
    });
    worker.register('ts.hopeless', { maxRetries: 1 }, (_a, _k, ctx) => ctx.retry({ countdown: 0.05, error: new RangeError('still down') }));
    worker.register('ts.double', {}, ([x]) => (x as number) * 2);
    worker.register('ts.watchful', {}, async (_a, _k, ctx) => {
      // Stops when its signal says so (a time limit), with the signal's reason.
      const reason = await new Promise<Error>((resolve) => ctx.signal.addEventListener('abort', () => resolve(ctx.signal.reason)));
      await redis.rpush('ts.watchful', `${ctx.id} ${reason.name}`);
      throw reason;
    });
    worker.register('ts.collect', { args: z.tuple([z.array(z.number())]) }, ([values]) => values);
    worker.register('ts.slowRetried', {}, async (_a, _k, ctx) => {
      if (ctx.retries === 0) ctx.retry({ countdown: 0.05 });
      await new Promise((resolve) => setTimeout(resolve, 3000).unref());
      return 'slow';
    });
    worker.register('ts.stoppable', {}, async (_a, _k, ctx) => {
      await redis.rpush('ts.stoppable', ctx.id);
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
      return 'stopped';
    });
    worker.register('ts.later', {}, ([x]) => {
      ranLater++;
      return (x as number) * 2;
    });
    await worker.start();
    client = createCeleryClient({ url });
    pyWorker = pythonWorker(url, 'py');
  });

  after(async () => {
    await pyWorker?.stop();
    await client?.close();
    await worker?.stop();
    redis?.disconnect();
    await server?.stop();
  });

  test('Python send_task -> Errand worker -> AsyncResult.get() returns the TypeScript result', async () => {
    const r = await py(url, 'call', { task: 'ts.add', args: [2, 3] });
    assert.deepEqual(r.ok, 5);
    const g = await py(url, 'call', { task: 'ts.greet', kwargs: { name: 'john' } });
    assert.deepEqual(g.ok, { hello: 'john' });
    const meta = JSON.parse((await redis.get(`celery-task-meta-${r.id}`)) as string);
    assert.equal(meta.status, 'SUCCESS');
    assert.equal(await redis.hlen('unacked'), 0, 'acknowledged');
  });

  test('a TypeScript failure reaches Python with its exception type and message', async () => {
    const r = await py(url, 'call', { task: 'ts.fail', args: ['bad input'] });
    assert.equal(r.exc_type, 'TypeError');
    assert.equal(r.exc_module, 'builtins');
    assert.equal(r.message, 'bad input');
    const custom = await py(url, 'call', { task: 'ts.refused' });
    assert.equal(custom.exc_type, 'EmailRefused');
    assert.equal(custom.message, '550 mailbox unavailable');
  });

  test('args that fail validation: FAILURE with the reason (ValueError in Python), not dropped', async () => {
    const r = await py(url, 'call', { task: 'ts.add', args: ['two', 3] });
    assert.equal(r.exc_type, 'ValueError');
    assert.match(r.message ?? '', /args\[0\]/);
    const k = await py(url, 'call', { task: 'ts.greet', kwargs: { name: '' } });
    assert.equal(k.exc_type, 'ValueError');
    assert.match(k.message ?? '', /kwargs\.name/);
  });

  test('a pickled message is refused with ContentDisallowed in the result backend', async () => {
    const r = await py(url, 'call', { task: 'ts.add', args: [1, 2], options: { serializer: 'pickle' } });
    assert.equal(r.exc_type, 'ContentDisallowed');
    assert.match(r.message ?? '', /pickle/);
  });

  test('retries follow Celery: RETRY in between, same id, retries counted, then the result', async () => {
    const r = await py(url, 'call', { task: 'ts.flaky' });
    assert.deepEqual(r.ok, { retries: 2 });
    assert.equal(attempts.get(r.id), 3);
    const h = await py(url, 'call', { task: 'ts.hopeless' });
    assert.equal(h.exc_type, 'RangeError', 'past max_retries the given error is raised');
    assert.equal(h.message, 'still down');
  });

  test("a retry keeps the message's time limit (and the rest of the request), as Celery's does", async () => {
    const r = await py(url, 'call', { task: 'ts.slowRetried', options: { time_limit: 0.5 } });
    assert.equal(r.exc_type, 'TimeLimitExceeded', JSON.stringify(r));
  });

  test("time limits reach the handler through ctx.signal: the soft one fails it with Celery's SoftTimeLimitExceeded, the hard one stops it", async () => {
    const soft = await py(url, 'call', { task: 'ts.watchful', options: { soft_time_limit: 0.3 }, timeout: 20 });
    assert.equal(soft.exc_type, 'SoftTimeLimitExceeded', JSON.stringify(soft));
    assert.equal(soft.exc_module, 'billiard.exceptions', "Celery's own class (celery.exceptions takes it from billiard)");
    const hard = await py(url, 'call', { task: 'ts.watchful', options: { time_limit: 0.3 }, timeout: 20 });
    assert.equal(hard.exc_type, 'TimeLimitExceeded', JSON.stringify(hard));
    await waitFor(async () => (await redis.lrange('ts.watchful', 0, -1)).includes(`${hard.id} TimeLimitExceeded`), {
      timeoutMs: 10_000,
      message: 'the handler told to stop',
    });
  });

  test('ETA: a countdown is honoured: the message is parked (not run, not unacked) until due, from TypeScript and Python', async () => {
    const before = ranLater;
    const t = await client.sendTask('ts.later', { args: [4], countdown: 2 });
    await waitFor(async () => (await redis.zcard('_errand.celery.eta.celery')) === 1, { timeoutMs: 30_000, message: 'the message parked' });
    assert.equal(ranLater, before, 'not run before its ETA');
    assert.equal(await redis.hlen('unacked'), 0, 'no open delivery while it waits');
    assert.equal(await t.state(), 'PENDING');
    assert.equal(await t.get({ timeoutMs: 30_000 }), 8);
    assert.equal(ranLater, before + 1);
    assert.equal(await redis.zcard('_errand.celery.eta.celery'), 0);
    const r = await py(url, 'call', { task: 'ts.add', args: [1, 1], options: { countdown: 1 } });
    assert.equal(r.ok, 2);
  });

  test('expired: REVOKED, not run', async () => {
    const r = await client.sendTask('ts.add', { args: [1, 2], expires: new Date(Date.now() - 1000) });
    await assert.rejects(
      r.get({ timeoutMs: 30_000 }),
      (err: CeleryTaskError) => err.state === 'REVOKED' && err.excType === 'TaskRevokedError',
    );
  });

  test('revoke(id) from Python reaches the Errand worker: the task is REVOKED, not run; terminate stops a running one; inspect active and revoked show them', async () => {
    const before = ranLater;
    const id = randomUUID();
    const flagged = await py(url, 'revoke', { id, destination: [worker.hostname], timeout: 10 });
    assert.deepEqual(flagged.replies, [{ [worker.hostname]: { ok: `tasks ${id} flagged as revoked` } }]);
    const r = await py(url, 'call', { task: 'ts.later', args: [1], options: { task_id: id, countdown: 0.5 } });
    assert.equal(r.exc_type, 'TaskRevokedError');
    assert.equal(r.message, 'revoked');
    assert.equal(ranLater, before, 'a revoked task is not run');

    const t = await client.sendTask('ts.stoppable');
    await waitFor(async () => (await redis.lrange('ts.stoppable', 0, -1)).includes(t.id), {
      timeoutMs: 30_000,
      message: 'the task started',
    });
    const active = await celeryCli(url, ['inspect', 'active', '-d', worker.hostname, '--timeout', '10']);
    assert.ok(active.includes(t.id) && active.includes('ts.stoppable'), active);
    const stopped = await py(url, 'revoke', { id: t.id, terminate: true, destination: [worker.hostname], timeout: 10 });
    assert.deepEqual(stopped.replies, [{ [worker.hostname]: { ok: `terminate: ${t.id}` } }]);
    await assert.rejects(
      t.get({ timeoutMs: 30_000 }),
      (err: CeleryTaskError) => err.state === 'REVOKED' && err.excType === 'TaskRevokedError' && err.excMessage === 'terminated',
    );
    const revoked = await celeryCli(url, ['inspect', 'revoked', '-d', worker.hostname, '--timeout', '10']);
    assert.ok(revoked.includes(id) && revoked.includes(t.id), revoked);
  });

  test('revoke from TypeScript (client.revoke, CeleryResult.revoke) reaches Python and Errand workers: REVOKED, not run', async () => {
    const pyId = randomUUID();
    await client.revoke(pyId);
    const p = await client.sendTask('pyapp.add', { args: [1, 2], queue: 'py', taskId: pyId, countdown: 1 });
    await assert.rejects(
      p.get({ timeoutMs: 30_000 }),
      (err: CeleryTaskError) => err.state === 'REVOKED' && err.excType === 'TaskRevokedError' && err.excMessage === 'revoked',
    );
    const before = ranLater;
    const t = await client.sendTask('ts.later', { args: [1], countdown: 1 });
    await t.revoke();
    await assert.rejects(
      t.get({ timeoutMs: 30_000 }),
      (err: CeleryTaskError) => err.state === 'REVOKED' && err.excType === 'TaskRevokedError' && err.excMessage === 'revoked',
    );
    assert.equal(ranLater, before, 'not run');
    await assert.rejects(client.revoke([]), /taskId: give at least one task id/);
    await assert.rejects(client.revoke(['a', ''], { terminate: 'yes' as never }), (err: Error) => {
      assert.match(err.message, /taskId\[1\]: must be a non-empty string, got ""/);
      assert.match(err.message, /terminate: must be a boolean, got "yes"/);
      return true;
    });
  });

  test('Errand sendTask -> Python worker -> the result, read in TypeScript', async () => {
    const r = await client.sendTask('pyapp.add', { args: [20, 22], queue: 'py' });
    assert.equal(await r.get({ timeoutMs: 60_000 }), 42);
    assert.equal(await r.state(), 'SUCCESS');
  });

  test('a Python failure reaches TypeScript with its exception type and message', async () => {
    const r = await client.sendTask('pyapp.boom', { args: ['no such user'], queue: 'py' });
    const err = await r.get({ timeoutMs: 60_000 }).then(
      () => assert.fail('should fail'),
      (e: unknown) => e as CeleryTaskError,
    );
    assert.ok(err instanceof CeleryTaskError);
    assert.equal(err.excType, 'ValueError');
    assert.equal(err.excModule, 'builtins');
    assert.equal(err.excMessage, 'no such user');
    assert.equal(await r.state(), 'FAILURE');
  });

  test('chains and links across languages: TypeScript -> Python -> TypeScript, and a Python task linked to a TypeScript one', async () => {
    const c = await client.chain(
      signature('ts.add', { args: [1, 2] }),
      signature('pyapp.mul', { args: [10], queue: 'py' }),
      signature('ts.double'),
    );
    assert.equal(await c.get({ timeoutMs: 60_000 }), 60);
    const r = await client.sendTask('pyapp.add', { args: [2, 3], queue: 'py', link: signature('ts.double') });
    assert.equal(await r.get({ timeoutMs: 60_000 }), 5);
  });

  test("chords from Python: header tasks on the Errand worker (alone or beside Python's) and the body sent when the last ends; a failed part fails the body with ChordError", async () => {
    const all = await py(url, 'chord', {
      header: [
        { task: 'ts.add', args: [1, 2] },
        { task: 'ts.add', args: [3, 4] },
      ],
      body: { task: 'ts.collect' },
    });
    assert.deepEqual(all.ok, [3, 7], JSON.stringify(all));
    const mixed = await py(url, 'chord', {
      header: [
        { task: 'ts.add', args: [1, 2] },
        { task: 'pyapp.add', args: [3, 4], queue: 'py' },
        { task: 'ts.double', args: [5] },
      ],
      body: { task: 'pyapp.total', queue: 'py' },
    });
    assert.equal(mixed.ok, 20, JSON.stringify(mixed));
    const failed = await py(url, 'chord', {
      header: [
        { task: 'ts.add', args: [1, 2] },
        { task: 'ts.fail', args: ['no luck'] },
      ],
      body: { task: 'ts.collect' },
    });
    assert.equal(failed.exc_type, 'TypeError', "Celery's get() raises the failed header task's error");
    await waitFor(async () => (await redis.exists(`celery-task-meta-${failed.id}`)) === 1, { timeoutMs: 30_000, message: 'the body' });
    const body = JSON.parse((await redis.get(`celery-task-meta-${failed.id}`)) as string);
    assert.equal(body.status, 'FAILURE');
    assert.equal(body.result.exc_type, 'ChordError');
    assert.match(body.result.exc_message[0], /raised TypeError\("no luck"\)/);
    assert.equal(await redis.hlen('_errand.celery.chords'), 0, 'no chord left pending');
  });

  test('a chain from Python whose Errand-run task is followed by a group or a chord: the Errand worker sends them as Celery does', async () => {
    const g = await py(url, 'canvas', { shape: 'chain-group' });
    assert.deepEqual(g.ok, [13, 6], JSON.stringify(g));
    const c = await py(url, 'canvas', { shape: 'chain-chord' });
    assert.equal(c.ok, 10, JSON.stringify(c));
    const t = await py(url, 'canvas', { shape: 'chain-group-task' });
    assert.deepEqual(t.ok, [6, 6], JSON.stringify(t));
    const n = await py(url, 'canvas', { shape: 'chord-nested' });
    assert.deepEqual(n.ok, [4, 2, 6], "what Celery 5.2's own workers give the body (checked with Python workers alone)");
  });

  test('a shape the Errand worker cannot send on (a group followed by more of a chain) is FAILURE with the reason, not dropped', async () => {
    const groupId = randomUUID();
    const group = {
      task: 'celery.group',
      args: [],
      kwargs: { tasks: [signature('ts.double'), signature('ts.double')] },
      options: { task_id: groupId },
      subtask_type: 'group',
      immutable: false,
    };
    await client.chain(signature('ts.add', { args: [1, 2] }), group, signature('ts.collect'));
    await assert.rejects(client.result(groupId).get({ timeoutMs: 30_000 }), (err: CeleryTaskError) => {
      assert.equal(err.excType, 'NotImplementedError');
      assert.match(err.excMessage, /cannot send a group followed by more of a chain \(celery\.group\)/);
      return true;
    });
  });

  test('a chord whose completing worker died before sending the body: another Errand worker sends it after the visibility timeout', async () => {
    const gid = randomUUID();
    const bodyId = randomUUID();
    const body = {
      task: 'ts.collect',
      args: [],
      kwargs: {},
      options: { task_id: bodyId, queue: 'celery' },
      subtask_type: null,
      immutable: false,
    };
    // What the completing part left (chord.ts), as if its worker was killed right after.
    await redis.zadd(
      `_errand.celery.chord.${gid}`,
      0,
      JSON.stringify([1, randomUUID(), 'SUCCESS', 1]),
      1,
      JSON.stringify([1, randomUUID(), 'SUCCESS', 2]),
    );
    await redis.hset('_errand.celery.chords', gid, JSON.stringify({ body, rootId: gid, parentId: gid, claimedAt: Date.now() }));
    const other = createCeleryWorker({ url, queues: ['chord-recovery'], visibilityTimeoutMs: 1000, remoteControl: false });
    await other.start();
    // A header whose GroupResult Celery saved (newer Celery does for nested groups, to give the body
    // nested lists): refused with the reason rather than given a flat list.
    const nestedGid = randomUUID();
    const nestedBodyId = randomUUID();
    await redis.set(`celery-taskset-meta-${nestedGid}`, '{"result": []}');
    await redis.zadd(`_errand.celery.chord.${nestedGid}`, 0, JSON.stringify([1, randomUUID(), 'SUCCESS', 1]));
    const nestedBody = { ...body, options: { task_id: nestedBodyId, queue: 'celery' } };
    await redis.hset(
      '_errand.celery.chords',
      nestedGid,
      JSON.stringify({ body: nestedBody, rootId: nestedGid, parentId: nestedGid, claimedAt: 0 }),
    );
    try {
      assert.deepEqual(await client.result(bodyId).get({ timeoutMs: 30_000 }), [1, 2]);
      await assert.rejects(client.result(nestedBodyId).get({ timeoutMs: 30_000 }), (err: CeleryTaskError) => {
        assert.equal(err.excType, 'NotImplementedError');
        assert.match(err.excMessage, /nests groups/);
        return true;
      });
      assert.equal(await redis.hlen('_errand.celery.chords'), 0);
      assert.equal(await redis.exists(`_errand.celery.chord.${gid}`), 0);
    } finally {
      await other.stop();
    }
  });

  test("a worker on a queue of its own sends what follows by the routes, else to Celery's default queue, never back to its own", async () => {
    const emails = createCeleryWorker({ url, queues: ['emails'], routes: { 'pyapp.record': 'py' }, remoteControl: false });
    emails.register('ts.mail', {}, () => 21);
    await emails.start();
    try {
      await redis.del('pyapp.record');
      const r = await py(url, 'call', { task: 'ts.mail', options: { queue: 'emails' }, link: { task: 'pyapp.record', args: ['routed'] } });
      assert.equal(r.ok, 21);
      await waitFor(async () => (await redis.lrange('pyapp.record', 0, -1)).some((l) => l.replace(/ /g, '') === '[21,"routed"]'), {
        timeoutMs: 30_000,
        message: 'the link, routed to the Python queue',
      });
      const c = await client.chain(signature('ts.mail', { queue: 'emails' }), signature('ts.double'));
      assert.equal(await c.get({ timeoutMs: 30_000 }), 42, "the next step went to 'celery'");
    } finally {
      await emails.stop();
    }
    assert.throws(() => createCeleryWorker({ url, routes: { 'a.b': '' } }), /routes must map task names to queue names, got \{"a\.b":""\}/);
  });

  test('link and link_error set in Python are honoured by the Errand worker', async () => {
    const ok = await py(url, 'call', {
      task: 'ts.add',
      args: [4, 5],
      link: { task: 'pyapp.record', args: ['linked'], options: { queue: 'py' } },
    });
    assert.equal(ok.ok, 9);
    const bad = await py(url, 'call', {
      task: 'ts.fail',
      args: ['x'],
      link_error: { task: 'pyapp.record_id', args: [], options: { queue: 'py' } },
    });
    assert.equal(bad.exc_type, 'TypeError');
    const recorded = await waitFor(
      async () => {
        const all = (await redis.lrange('pyapp.record', 0, -1)).map((s) => JSON.parse(s) as unknown[]);
        return all.length >= 2 ? all : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 100, message: 'the link and the errback to run in Python' },
    );
    assert.deepEqual(
      recorded.find((a) => a[1] === 'linked'),
      [9, 'linked'],
    );
    assert.ok(
      recorded.some((a) => a.length === 1 && a[0] === bad.id),
      'the errback got the failed task id',
    );
  });

  test('TypeScript link_error runs when a Python task fails', async () => {
    await redis.del('pyapp.record');
    const r = await client.sendTask('pyapp.boom', { args: ['x'], queue: 'py', linkError: signature('pyapp.record_id', { queue: 'py' }) });
    await assert.rejects(r.get({ timeoutMs: 60_000 }), CeleryTaskError);
    const rec = await waitFor(async () => (await redis.lrange('pyapp.record', 0, -1))[0], {
      timeoutMs: 60_000,
      intervalMs: 100,
      message: 'the errback',
    });
    assert.deepEqual(JSON.parse(rec), [r.id]);
  });

  test('celery inspect ping and inspect registered see the Errand worker', async () => {
    const ping = await celeryCli(url, ['inspect', 'ping', '-d', worker.hostname, '--timeout', '10']);
    assert.ok(ping.includes(`${worker.hostname}: OK`), ping);
    assert.match(ping, /pong/);
    const registered = await celeryCli(url, ['inspect', 'registered', '-d', worker.hostname, '--timeout', '10']);
    assert.match(registered, /ts\.add/);
  });
});
