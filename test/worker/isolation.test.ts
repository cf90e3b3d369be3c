// Isolated handlers (`isolation: 'thread' | 'process'`): input, result, errors, progress and log
// lines cross the boundary; a memory limit, a crash and a cancel stop only their own run; the
// options are checked. On SQLite (the fault tests, test/faults/isolation.test.ts, run both brokers).
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import { z } from 'zod';
import { createErrand, type Errand, type Isolation, type RunInfo, type Worker } from '../../src/index.ts';
import { sqliteSetup } from '../fixtures/brokers.ts';
import * as handlers from '../fixtures/isolated-tasks.ts';
import { waitFor } from '../helpers.ts';

const MODULE = new URL('../fixtures/isolated-tasks.ts', import.meta.url).href;

/** An app on a fresh SQLite file whose logger keeps its lines. */
function makeApp() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  const app = createErrand({ broker: sqliteSetup('errand-isolation').url, logger });
  return { app, lines };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const settled = (info: RunInfo) => ['succeeded', 'failed', 'cancelled'].includes(info.state);

for (const kind of ['thread', 'process'] as const satisfies Isolation[]) {
  describe(`isolation: '${kind}'`, () => {
    const apps: Errand[] = [];
    const workers: Worker[] = [];
    after(async () => {
      for (const w of workers) await w.stop({ graceMs: 0 });
      for (const a of apps) await a.close();
    });
    function start(concurrency = 2) {
      const { app, lines } = makeApp();
      apps.push(app);
      const opts = { isolation: kind, module: MODULE, retries: { maxAttempts: 2, base: 1, jitter: 0 } } as const;
      const tasks = {
        double: app.task('double', { input: z.object({ n: z.number() }), ...opts }, handlers.double),
        fails: app.task('fails', { input: z.object({ permanent: z.boolean() }), ...opts }, handlers.fails),
        hog: app.task('hog', { input: z.object({}), ...opts, retries: 0, memoryLimitMb: 32 }, handlers.hog),
        exits: app.task('exits', { input: z.object({}), ...opts, retries: 0 }, handlers.exits),
        spin: app.task('spin', { input: z.object({}), ...opts, retries: 0 }, handlers.spinAfterProgress),
        untilAborted: app.task('until_aborted', { input: z.object({}), ...opts, retries: 0 }, handlers.untilAborted),
        toTheEnd: app.task('to_the_end', { input: z.object({}), ...opts, retries: 0 }, handlers.progressToTheEnd),
      };
      const worker = app.worker({ concurrency });
      workers.push(worker);
      return { app, lines, tasks, worker };
    }

    it('runs the handler in an isolate: input and result and log lines cross', async () => {
      const { lines, tasks, worker } = start();
      await worker.start();
      const handle = await tasks.double.enqueue({ n: 21 });
      const result = (await handle.result({ timeout: 60_000 })) as Awaited<ReturnType<typeof handlers.double>>;
      assert.equal(result.n, 42);
      assert.equal(result.kind, kind);
      if (kind === 'process') assert.notEqual(result.pid, process.pid);
      else assert.notEqual(result.threadId, 0);
      const relayed = lines.find((l) => l.msg === 'doubling');
      assert.ok(relayed, 'the handler’s log line reaches the worker’s logger');
      assert.equal(relayed.n, 21);
      assert.equal(relayed.runId, handle.id);
      assert.equal(relayed.task, 'double');
      assert.equal(relayed.level, 30);
    });

    it('stores the progress reported just before the handler returned (sent before the outcome, not dropped)', async () => {
      const { app, tasks, worker } = start();
      await worker.start();
      const handle = await tasks.toTheEnd.enqueue({});
      assert.equal(await handle.result({ timeout: 60_000 }), 'done');
      const info = await app.getRun(handle.id);
      assert.equal(info.state, 'succeeded');
      assert.deepEqual(info.progress, { percent: 100 }, 'the last progress, stored with the run');
    });

    it('keeps retry semantics: an error is retried with its name and message, a PermanentError fails at once', async () => {
      const { tasks, worker } = start();
      await worker.start();
      const retried = await tasks.fails.enqueue({ permanent: false });
      const permanent = await tasks.fails.enqueue({ permanent: true });
      const [r, p] = await Promise.all(
        [retried, permanent].map((h) => waitFor(async () => ((i) => (settled(i) ? i : undefined))(await h.info()), { timeoutMs: 60_000 })),
      );
      assert.equal(r!.state, 'failed');
      assert.equal(r!.attempts, 2);
      assert.equal(r!.error?.name, 'RangeError');
      assert.equal(r!.error?.message, 'out of range, try again');
      assert.match(r!.error?.stack ?? '', /isolated-tasks\.ts/);
      assert.equal(p!.state, 'failed');
      assert.equal(p!.attempts, 1);
      assert.equal(p!.error?.name, 'PermanentError');
      assert.equal(p!.error?.message, 'refused for good');
    });

    it('fails a run past its memory limit with reason "memory", and the next run gets a fresh isolate', async () => {
      const { tasks, worker } = start();
      await worker.start();
      const hog = await tasks.hog.enqueue({});
      const info = await waitFor(async () => ((i) => (settled(i) ? i : undefined))(await hog.info()), { timeoutMs: 120_000 });
      assert.equal(info.state, 'failed');
      assert.equal(info.error?.name, 'IsolateMemoryError');
      assert.equal(info.error?.reason, 'memory');
      assert.match(info.error?.message ?? '', /memory limit of 32 MB/);
      assert.equal(((await (await tasks.double.enqueue({ n: 1 })).result({ timeout: 60_000 })) as { n: number }).n, 2);
    });

    it('fails a run whose isolate exits with reason "crashed"; other runs go on', async () => {
      const { tasks, worker } = start();
      await worker.start();
      const exits = await tasks.exits.enqueue({});
      const doubles = await tasks.double.enqueueMany([1, 2, 3].map((n) => ({ input: { n } })));
      const info = await waitFor(async () => ((i) => (settled(i) ? i : undefined))(await exits.info()), { timeoutMs: 60_000 });
      assert.equal(info.state, 'failed');
      assert.equal(info.error?.name, 'IsolateCrashedError');
      assert.equal(info.error?.reason, 'crashed');
      assert.match(info.error?.message ?? '', kind === 'thread' ? /thread .*exited with code 3/ : /exited with code 3/);
      for (const h of doubles) assert.equal((await h.info()).attempts <= 1, true);
      const results = await Promise.all(doubles.map((h) => h.result({ timeout: 60_000 })));
      assert.deepEqual(
        results.map((r) => (r as { n: number }).n),
        [2, 4, 6],
      );
    });

    it('cancel aborts the isolated handler’s signal, and stops one that ignores it', async () => {
      const { tasks, worker } = start();
      const events: string[] = [];
      worker.on('run', (e) => events.push(`${e.type}:${e.run.task}`));
      await worker.start();
      const polite = await tasks.untilAborted.enqueue({});
      const stubborn = await tasks.spin.enqueue({});
      for (const h of [polite, stubborn]) await waitFor(async () => (await h.info()).progress !== undefined, { timeoutMs: 60_000 });
      // Progress reported from the isolate is stored while the handler runs.
      assert.equal(typeof ((await polite.info()).progress as { pid?: unknown }).pid, 'number');
      assert.equal(await polite.cancel(), 'cancelled');
      assert.equal(await stubborn.cancel(), 'cancelled');
      await waitFor(() => events.filter((e) => e.startsWith('lost:')).length === 2, { timeoutMs: 30_000, message: 'both attempts to end' });
      for (const h of [polite, stubborn]) assert.equal((await h.info()).state, 'cancelled');
      if (kind === 'process') {
        // The process that ignored its signal was killed for real.
        const { pid } = (await stubborn.info()).progress as { pid: number };
        await waitFor(() => !alive(pid), { timeoutMs: 30_000, message: `process ${pid} to be gone` });
      }
      // The slot of the stopped isolate serves the next run.
      assert.equal(((await (await tasks.double.enqueue({ n: 5 })).result({ timeout: 60_000 })) as { n: number }).n, 10);
    });

    it('a worker that stops hands an isolated run back and stops its isolate, even one ignoring its signal', async () => {
      const { tasks, worker } = start();
      await worker.start();
      const stubborn = await tasks.spin.enqueue({});
      await waitFor(async () => (await stubborn.info()).progress !== undefined, { timeoutMs: 60_000 });
      await worker.stop({ graceMs: 0 });
      const info = await stubborn.info();
      assert.equal(info.state, 'queued', 'handed back to the queue');
      assert.equal(info.history.at(-1)?.outcome, 'released');
      if (kind === 'process') {
        const { pid } = info.progress as { pid: number };
        assert.equal(alive(pid), false, `process ${pid} is gone once stop() resolves`);
      }
    });
  });
}

describe('isolation options', () => {
  const app = createErrand({ broker: 'sqlite::memory:', logger: pino({ level: 'silent' }) });
  after(() => app.close());
  const input = z.object({});

  it('refuses an isolated task without a module, naming the option', () => {
    assert.throws(
      () => app.task('a', { input, isolation: 'thread' }, () => null),
      /Task "a": isolation "thread" needs module: import.meta.url/,
    );
  });

  it('refuses an unknown isolation, a bad module and a bad memory limit', () => {
    assert.throws(
      () => app.task('b', { input, isolation: 'fork' as Isolation }, () => null),
      /isolation must be "none", "thread" or "process", got "fork"/,
    );
    assert.throws(
      () => app.task('c', { input, isolation: 'process', module: 'tasks.ts' }, () => null),
      /module must be a file URL .* got "tasks.ts"/,
    );
    assert.throws(
      () => app.task('d', { input, isolation: 'process', module: MODULE, memoryLimitMb: 1.5 }, () => null),
      /memoryLimitMb must be an integer number of MB from 16/,
    );
    assert.throws(() => app.task('e', { input, memoryLimitMb: 64 }, () => null), /memoryLimitMb applies to isolated handlers only/);
  });

  it('accepts an absolute path as the module', () => {
    const t = app.task('f', { input, isolation: 'process', module: new URL(MODULE).pathname }, () => null);
    assert.equal(t.module, MODULE);
  });

  it('fails the run clearly when the module starts a worker when imported', async () => {
    const { app: other } = makeApp();
    try {
      const starts = other.task(
        'starts_worker',
        { input, isolation: 'thread', module: new URL('../fixtures/isolated-starts-worker.ts', import.meta.url), retries: 0 },
        () => 'ran',
      );
      const worker = other.worker({ concurrency: 1 });
      await worker.start();
      try {
        const h = await starts.enqueue({});
        const info = await waitFor(async () => ((i) => (settled(i) ? i : undefined))(await h.info()), { timeoutMs: 60_000 });
        assert.equal(info.state, 'failed');
        assert.match(info.error?.message ?? '', /A worker cannot start inside an isolate/);
      } finally {
        await worker.stop({ graceMs: 0 });
      }
    } finally {
      await other.close();
    }
  });
});
