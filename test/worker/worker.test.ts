// The public API end to end, against every broker: typed tasks, enqueue validation, the worker's
// retries, timeouts, cancellation, graceful stop, and runs it cannot read.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it, type TestContext } from 'node:test';
import { z } from 'zod';
import type { Broker, BrokerInspector } from '../../src/broker/types.ts';
import {
  createErrand,
  type Errand,
  InputError,
  PermanentError,
  RunCancelledError,
  RunFailedError,
  RunNotFoundError,
  type TaskContext,
  type Worker,
} from '../../src/index.ts';
import type { RunEvent } from '../../src/worker/worker.ts';
import { type BrokerSetup, quietLogger, setups } from '../fixtures/brokers.ts';
import { waitFor } from '../helpers.ts';

const NODE = process.execPath;

for (const make of setups()) {
  const setup: BrokerSetup = make();
  describe(`worker on ${setup.name}`, () => {
    let app: Errand;
    let worker: Worker;
    const calls = new Map<string, number>();
    const seen: { signalReason?: unknown } = {};
    let releaseHang: () => void = () => {};

    before(async () => {
      app = setup.app();
      app.task('add', { input: z.object({ a: z.number(), b: z.number() }) }, ({ a, b }) => a + b);
      app.task(
        'flaky',
        { input: z.object({ key: z.string(), failures: z.number() }), retries: { maxAttempts: 5, base: 10, jitter: 0 } },
        ({ key, failures }, ctx) => {
          calls.set(key, (calls.get(key) ?? 0) + 1);
          if (ctx.attempt <= failures) throw new Error(`boom ${ctx.attempt}`);
          return { attempt: ctx.attempt };
        },
      );
      app.task('always_fails', { input: z.object({}), retries: { maxAttempts: 2, base: 10 } }, () => {
        throw new TypeError('always');
      });
      app.task('permanent', { input: z.object({}), retries: 5 }, () => {
        throw new PermanentError('no point retrying');
      });
      app.task('hang', { input: z.object({}), timeout: 300, retries: 1 }, (_input, ctx) => {
        return new Promise((resolve) => {
          ctx.signal.addEventListener('abort', () => {
            seen.signalReason = ctx.signal.reason;
          });
          releaseHang = () => resolve('released');
        });
      });
      app.task('wait_for_cancel', { input: z.object({}), retries: 1 }, (_input, ctx: TaskContext) => {
        return new Promise((_resolve, reject) => {
          ctx.signal.addEventListener('abort', () => {
            seen.signalReason = ctx.signal.reason;
            reject(ctx.signal.reason);
          });
        });
      });
      app.task('progress', { input: z.object({}) }, async (_input, ctx) => {
        ctx.progress({ percent: 50 });
        await new Promise((r) => setTimeout(r, 300));
        return 'done';
      });
      app.task('progress_to_the_end', { input: z.object({}) }, async (_input, ctx) => {
        for (const percent of [10, 50, 90, 100]) ctx.progress({ percent });
        return 'done';
      });
      app.task('defaults', { input: z.object({ n: z.number().default(7) }) }, ({ n }) => n);
      app.task('bad_result', { input: z.object({}) }, () => ({ when: new Date() }));
      app.task('unique', { input: z.object({ user: z.string() }), idempotencyKey: (i) => `u:${i.user}` }, ({ user }) => user);
      app.task('forgetful', { input: z.object({}), retention: 0 }, () => 'gone');
      // A run of a task it does not define: handed back for 1 s, then failed.
      worker = app.worker({ concurrency: 4, leaseMs: 1500, renewEvery: 150, unknownTaskWaitMs: 1000 });
      await worker.start();
    });

    after(async () => {
      await worker.stop({ graceMs: 0 });
      await app.close();
    });

    it('runs a task and returns its typed result', async () => {
      const add = app.tasks.get('add')!;
      const handle = await add.enqueue({ a: 2, b: 3 });
      assert.equal(await handle.result({ timeout: 20_000 }), 5);
      const info = await handle.info();
      assert.equal(info.state, 'succeeded');
      assert.equal(info.attempts, 1);
      assert.equal(info.worker, worker.id);
      assert.ok(info.startedAt && info.finishedAt && info.enqueuedAt);
      assert.deepEqual(info.input, { a: 2, b: 3 });
    });

    it('retention 0: result() cannot read a run deleted as it finishes, and its RunNotFoundError says why', async () => {
      const handle = await app.tasks.get('forgetful')!.enqueue({});
      await assert.rejects(handle.result({ timeout: 20_000 }), (err: Error) => {
        assert.ok(err instanceof RunNotFoundError, String(err));
        assert.match(err.message, /retention 0 deletes each run as it finishes, result included/);
        return true;
      });
    });

    it('refuses input that fails the schema, listing each bad path', async () => {
      const add = app.tasks.get('add')!;
      await assert.rejects(
        () => add.enqueue({ a: 'x', c: 1 } as never),
        (err: unknown) => {
          assert.ok(err instanceof InputError);
          assert.deepEqual(
            err.issues.map((i) => i.path.join('.')),
            ['a', 'b'],
          );
          assert.match(err.message, /input\.a/);
          return true;
        },
      );
    });

    it('refuses input that does not survive JSON, naming the path', async () => {
      const anyTask = app.task('any_input', { input: z.any() }, () => null);
      const cyclic: Record<string, unknown> = {};
      cyclic.self = cyclic;
      const cases: [unknown, string][] = [
        [{ f: () => 1 }, 'input.f'],
        [{ n: 10n }, 'input.n'],
        [{ d: new Date() }, 'input.d'],
        [{ list: [1, undefined] }, 'input.list[1]'],
        [{ deep: { c: cyclic } }, 'input.deep.c.self'],
        [{ m: new Map() }, 'input.m'],
        [{ x: Number.NaN }, 'input.x'],
      ];
      for (const [input, path] of cases) {
        await assert.rejects(
          () => anyTask.enqueue(input),
          (err: unknown) => err instanceof InputError && err.message.includes(path),
          `expected a refusal naming ${path}`,
        );
      }
    });

    it('refuses bad enqueue options with their names', async () => {
      const add = app.tasks.get('add')!;
      await assert.rejects(() => add.enqueue({ a: 1, b: 1 }, { delay: -5 }), /options\.delay/);
      await assert.rejects(() => add.enqueue({ a: 1, b: 1 }, { priority: 1.5 }), /options\.priority/);
      await assert.rejects(() => add.enqueue({ a: 1, b: 1 }, { queue: 'no spaces' }), /options\.queue/);
      await assert.rejects(() => add.enqueue({ a: 1, b: 1 }, { bogus: 1 } as never), /options\.bogus/);
    });

    it('passes schema defaults to the handler', async () => {
      const h = await app.tasks.get('defaults')!.enqueue({});
      assert.equal(await h.result({ timeout: 20_000 }), 7);
    });

    it('retries a throwing handler with backoff until it succeeds', async () => {
      const h = await app.tasks.get('flaky')!.enqueue({ key: 'k1', failures: 2 });
      assert.deepEqual(await h.result({ timeout: 20_000 }), { attempt: 3 });
      const info = await h.info();
      assert.equal(info.attempts, 3);
      assert.equal(calls.get('k1'), 3);
      assert.deepEqual(
        info.history.map((a) => a.outcome),
        ['retry', 'retry', 'succeeded'],
      );
    });

    it('fails the run when retries are exhausted, keeping the error', async () => {
      const h = await app.tasks.get('always_fails')!.enqueue({});
      await assert.rejects(
        () => h.result({ timeout: 20_000 }),
        (err: unknown) => err instanceof RunFailedError && err.runError.name === 'TypeError' && err.runError.message === 'always',
      );
      const info = await h.info();
      assert.equal(info.state, 'failed');
      assert.equal(info.attempts, 2);
      assert.match(info.error?.stack ?? '', /always/);
    });

    it('fails at once on a PermanentError', async () => {
      const h = await app.tasks.get('permanent')!.enqueue({});
      await assert.rejects(() => h.result({ timeout: 20_000 }), RunFailedError);
      assert.equal((await h.info()).attempts, 1);
    });

    it('replays a failed run', async () => {
      const h = await app.tasks.get('flaky')!.enqueue({ key: 'k2', failures: 10 });
      await assert.rejects(() => h.result({ timeout: 20_000 }), RunFailedError);
      const broker = await app.broker();
      assert.deepEqual(await broker.retry(h.id, Date.now()), { outcome: 'queued' });
      await assert.rejects(() => h.result({ timeout: 20_000 }), RunFailedError);
      assert.equal(calls.get('k2'), 10);
    });

    it('aborts a handler at its timeout, fails the attempt and frees the slot', async () => {
      const h = await app.tasks.get('hang')!.enqueue({});
      await assert.rejects(
        () => h.result({ timeout: 20_000 }),
        (err: unknown) => err instanceof RunFailedError && err.runError.reason === 'timeout',
      );
      assert.equal((seen.signalReason as Error)?.name, 'TaskTimeoutError');
      releaseHang();
      // The slot is free again: other runs still go through.
      assert.equal(await (await app.tasks.get('add')!.enqueue({ a: 1, b: 1 })).result({ timeout: 20_000 }), 2);
    });

    it('cancels a queued run before it starts, and an active run through its signal from another process', async () => {
      const later = await app.tasks.get('add')!.enqueue({ a: 1, b: 2 }, { delay: 60_000 });
      assert.equal(await later.status(), 'scheduled');
      assert.equal(await later.cancel(), 'cancelled');

      seen.signalReason = undefined;
      const h = await app.tasks.get('wait_for_cancel')!.enqueue({});
      await waitFor(async () => (await h.status()) === 'active', { message: 'the run to start', timeoutMs: 30_000 });
      const child = spawn(NODE, ['test/fixtures/cancel-run.ts', setup.url, setup.prefix, h.id], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      const code = await new Promise((r) => child.on('exit', r));
      assert.equal(code, 0);
      assert.equal(out.trim(), 'cancelled');
      await assert.rejects(() => h.result({ timeout: 20_000 }), RunCancelledError);
      await waitFor(() => seen.signalReason !== undefined, { message: "the handler's signal to abort", timeoutMs: 30_000 });
      assert.equal(await h.status(), 'cancelled');
    });

    it('records progress while a run is active', async () => {
      const h = await app.tasks.get('progress')!.enqueue({});
      await waitFor(async () => (await h.info()).progress !== undefined, { message: 'progress to be stored', timeoutMs: 30_000 });
      assert.deepEqual((await h.info()).progress, { percent: 50 });
      assert.equal(await h.result({ timeout: 20_000 }), 'done');
    });

    it('stores the progress reported just before the handler returned, with the outcome', async () => {
      const h = await app.tasks.get('progress_to_the_end')!.enqueue({});
      assert.equal(await h.result({ timeout: 20_000 }), 'done');
      assert.deepEqual((await h.info()).progress, { percent: 100 }, 'the last value, not dropped with its timer');
    });

    it('fails a run whose result is not JSON', async () => {
      const h = await app.tasks.get('bad_result')!.enqueue({});
      await assert.rejects(
        () => h.result({ timeout: 20_000 }),
        (err: unknown) =>
          err instanceof RunFailedError && err.runError.reason === 'invalid_result' && /result\.when/.test(err.runError.message),
      );
    });

    it('returns the same run for the same idempotency key', async () => {
      const t = app.tasks.get('unique')!;
      const [a, b] = await Promise.all([t.enqueue({ user: 'ann' }), t.enqueue({ user: 'ann' })]);
      assert.equal(a!.id, b!.id);
      assert.equal([a!.created, b!.created].filter(Boolean).length, 1);
      const c = await t.enqueue({ user: 'bob' });
      assert.notEqual(c.id, a!.id);
      const [d] = await t.enqueueMany([{ input: { user: 'ann' } }]);
      assert.equal(d!.id, a!.id);
      assert.equal(d!.created, false);
    });

    it('reports runs enqueued at once by concurrent calls as queued', async () => {
      const add = app.tasks.get('add')!;
      const batches = await Promise.all(
        Array.from({ length: 10 }, () => add.enqueueMany(Array.from({ length: 20 }, () => ({ input: { a: 1, b: 1 } })))),
      );
      for (const h of batches.flat())
        assert.equal(h.enqueuedState === 'queued' || h.enqueuedState === 'active', true, `state ${h.enqueuedState}`);
      await Promise.all(batches.flat().map((h) => h.result({ timeout: 30_000 })));
    });

    it('enqueues a batch in one call and runs them all', async () => {
      const handles = await app.tasks.get('add')!.enqueueMany(Array.from({ length: 50 }, (_, i) => ({ input: { a: i, b: 1 } })));
      const results = await Promise.all(handles.map((h) => h.result({ timeout: 30_000 })));
      assert.deepEqual(
        results,
        Array.from({ length: 50 }, (_, i) => i + 1),
      );
    });

    it('runs a delayed run once it is due, not before', async () => {
      const h = await app.tasks.get('add')!.enqueue({ a: 4, b: 4 }, { delay: 400 });
      const scheduled = await h.info();
      assert.equal(scheduled.state, 'scheduled');
      assert.ok(scheduled.runAt, 'a scheduled run has its due time');
      assert.equal(await h.result({ timeout: 20_000 }), 8);
      const info = await h.info();
      assert.ok(info.startedAt! >= scheduled.runAt, `started ${info.startedAt?.toISOString()}, due ${scheduled.runAt.toISOString()}`);
    });

    it('fails runs it cannot read, and keeps going', async () => {
      const broker = await app.broker();
      const now = Date.now();
      const raw = (tail: string, task: string, input: string) => ({
        id: `default.${'0'.repeat(10)}${tail.repeat(16)}`,
        task,
        queue: 'default',
        input,
        priority: 0,
        runAt: now,
      });
      const [corrupt, unknown, invalid] = (
        await broker.enqueue([raw('Z', 'add', '{not json'), raw('Y', 'nope', '{}'), raw('X', 'add', '{"a":"x"}')], now)
      ).map((r) => r.id);
      for (const [id, reason] of [
        [corrupt, 'corrupt'],
        [unknown, 'unknown_task'],
        [invalid, 'invalid_input'],
      ] as const) {
        await assert.rejects(
          () => app.run(id!).result({ timeout: 20_000 }),
          (err: unknown) => err instanceof RunFailedError && err.runError.reason === reason,
          `run ${id} should fail with reason ${reason}`,
        );
      }
      const lost = await app.run(unknown!).info();
      assert.match(lost.error?.message ?? '', /No task named "nope" .*no worker that defines it took the run within 1s/);
      assert.ok(
        lost.history.some((h) => h.outcome === 'backoff'),
        'handed back before it failed',
      );
      assert.equal(await (await app.tasks.get('add')!.enqueue({ a: 1, b: 1 })).result({ timeout: 20_000 }), 2);
    });
  });

  describe(`graceful stop on ${setup.name}`, () => {
    it('lets active runs finish within the grace period and hands the rest back', async () => {
      const s = make();
      const app = s.app();
      let started = 0;
      const quick = app.task('quick', { input: z.object({}) }, async () => {
        started++;
        await new Promise((r) => setTimeout(r, 100));
        return 'quick';
      });
      const slow = app.task('slow', { input: z.object({}) }, async (_i, ctx) => {
        started++;
        await new Promise((r) => ctx.signal.addEventListener('abort', r));
        throw ctx.signal.reason;
      });
      const w = app.worker({ concurrency: 2, leaseMs: 5000 });
      try {
        const q = await quick.enqueue({});
        const sl = await slow.enqueue({});
        await w.start();
        await waitFor(() => started === 2, { message: 'both runs to start', timeoutMs: 30_000 });
        await w.stop({ graceMs: 500 });
        assert.equal(await q.status(), 'succeeded');
        assert.equal(await sl.status(), 'queued');
        const info = await sl.info();
        assert.equal(info.history.at(-1)?.outcome, 'released');
      } finally {
        // Also when the wait or an assertion fails: a running worker or an open broker keeps the file from ending.
        await w.stop({ graceMs: 0 });
        await app.close();
      }
    });
  });

  describe(`prefetch on ${setup.name}`, () => {
    /**
     * A worker at concurrency 1 over a backlog, whose run number `gateAt` waits until released.
     * Each run takes exactly `runMs` by the worker's clock: the clock the executor times handlers
     * with (`performance.now`) is replaced, for the test, by one that only the handler moves. The
     * average run time that decides prefetch (under 10 ms: prefetch) is then `runMs` however loaded
     * the machine; on the real clock a handler that does nothing took over 100 ms at load 15, and
     * the worker rightly stopped prefetching. `durations` collects what the worker measured.
     */
    async function backlog(t: TestContext, runMs: number, gateAt: number) {
      let clock = 0;
      t.mock.method(performance, 'now', () => clock);
      const s = make();
      const app = s.app();
      const order: number[] = [];
      let open: () => void = () => {};
      const gate = new Promise<void>((r) => (open = r));
      const task = app.task('step', { input: z.object({ n: z.number() }), retries: 1 }, async ({ n }) => {
        order.push(n);
        clock += runMs;
        if (n === gateAt) await gate;
        return n;
      });
      const runs = await task.enqueueMany(Array.from({ length: gateAt + 20 }, (_, n) => ({ input: { n } })));
      const worker = app.worker({ concurrency: 1, leaseMs: 10_000 });
      const durations: number[] = [];
      worker.on('run', (e: RunEvent) => {
        if (e.durationMs !== undefined) durations.push(e.durationMs);
      });
      const broker = await app.broker();
      const active = async () => (await broker.counts(['default'])).default!.active;
      return { app, worker, runs, order, open, active, durations };
    }

    /** The worker timed every run by the test's clock (were it timing them by another, the test would depend on the machine's speed again). */
    function timedBy(durations: number[], runMs: number): void {
      assert.ok(durations.length > 0, 'runs were timed');
      assert.deepEqual(new Set(durations), new Set([runMs]), `every run took ${runMs} ms by the worker's clock`);
    }

    it('short runs: holds one run beyond its concurrency, never more, and hands it back on stop', async (t) => {
      const b = await backlog(t, 0, 30);
      // Also when an assertion fails: a worker left running keeps the test process from ever exiting.
      after(async () => {
        b.open();
        await b.worker.stop({ graceMs: 0 });
        await b.app.close();
      });
      await b.worker.start();
      await waitFor(() => b.order.includes(30), { message: 'the gated run to start', timeoutMs: 30_000 });
      // The gated run is active, and one more is held (prefetched), not started.
      await waitFor(async () => (await b.active()) === 2, { message: 'one run held beyond concurrency 1', timeoutMs: 10_000 });
      assert.equal(b.order.at(-1), 30, 'the held run has not started');
      await b.worker.stop({ graceMs: 0 });
      timedBy(b.durations, 0);
      const held = b.runs[31]!;
      assert.equal(await held.status(), 'queued', 'the held run is handed back');
      assert.equal((await held.info()).history.at(-1)?.outcome, 'released');
      // Another worker runs everything left, each run once.
      const next = b.app.worker({ concurrency: 4 });
      await next.start();
      b.open();
      for (const r of b.runs) await r.result({ timeout: 30_000 });
      await next.stop();
      const counts = new Map<number, number>();
      for (const n of b.order) counts.set(n, (counts.get(n) ?? 0) + 1);
      assert.deepEqual(
        [...counts].filter(([n, c]) => c > 1 && n !== 30),
        [],
        'no run but the gated one (aborted by the stop) started twice',
      );
      await b.app.close();
    });

    it('a prefetched run that is cancelled is dropped, not started', async (t) => {
      const b = await backlog(t, 0, 30);
      try {
        await b.worker.start();
        await waitFor(async () => b.order.includes(30) && (await b.active()) === 2, { message: 'a held run', timeoutMs: 30_000 });
        const held = b.runs[31]!;
        const dropped = new Promise<void>((resolve) =>
          b.worker.on('run', (e: RunEvent) => {
            if (e.type === 'lost' && e.run.id === held.id) resolve();
          }),
        );
        assert.equal(await held.cancel(), 'cancelled');
        await dropped; // the worker learnt of the cancel (pub/sub on Redis) and dropped the held run
        b.open();
        await b.runs.at(-1)!.result({ timeout: 30_000 });
        assert.equal(b.order.includes(31), false, 'the cancelled run never started');
        assert.equal(await held.status(), 'cancelled');
        timedBy(b.durations, 0);
      } finally {
        b.open();
        await b.worker.stop();
        await b.app.close();
      }
    });

    it('long runs: no prefetch, a run waits in the queue for the next free slot', async (t) => {
      const b = await backlog(t, 25, 5);
      try {
        await b.worker.start();
        await waitFor(() => b.order.includes(5), { message: 'the gated run to start', timeoutMs: 30_000 });
        for (let i = 0; i < 5; i++) {
          assert.equal(await b.active(), 1, 'only the running run is leased');
          await new Promise((r) => setTimeout(r, 20));
        }
        timedBy(b.durations, 25);
      } finally {
        b.open();
        await b.worker.stop();
        await b.app.close();
      }
    });
  });
}

// A stop that comes while the worker connects (SIGTERM at start-up): start() then resolves without
// starting anything behind the stop: no heartbeat record, no schedule declared, no timers.
describe('a worker stopped while it starts', () => {
  it('leaves nothing started behind the stop', async () => {
    const app = createErrand({ broker: 'sqlite::memory:', logger: quietLogger });
    try {
      const tick = app.task('stopped_early', { input: z.object({}) }, () => null);
      app.schedule('early', tick, { every: '1m', input: {} });
      const worker = app.worker();
      const starting = worker.start();
      await worker.stop();
      await starting;
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(worker.state, 'stopped');
      const broker = (await app.broker()) as Broker & BrokerInspector;
      assert.deepEqual(await broker.listWorkers(Date.now()), [], 'no heartbeat record');
      assert.deepEqual(await app.listSchedules(), [], 'no schedule declared');
    } finally {
      await app.close();
    }
  });
});
