// errand/testing (src/testing/): the in-memory test broker, assertions on what was enqueued, drain()
// with a real worker (retries, scheduled runs, chained runs, paused queues, a runaway loop), and
// runTask() with a test context.
import assert from 'node:assert/strict';
import { after, afterEach, describe, it, mock } from 'node:test';
import { z } from 'zod';
import { ConfigError, createErrand, InputError, PermanentError, TaskTimeoutError } from '../../src/index.ts';
import { createTesting, runTask } from '../../src/testing/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';

// The app under test, as a user's tasks.ts would define it.
const errand = createErrand({ broker: 'sqlite:/nonexistent/never-opened.db', logger: quietLogger });
const t = createTesting(errand);

const calls: string[] = [];
const sendWelcome = errand.task(
  'send_welcome',
  { input: z.object({ userId: z.string(), email: z.email(), locale: z.string().default('en') }), queue: 'emails' },
  async ({ userId, email, locale }) => {
    calls.push(`welcome ${userId}`);
    return { to: email, locale };
  },
);
const flaky = errand.task(
  'flaky',
  { input: z.object({ failures: z.number().int() }), retries: { maxAttempts: 4, base: 60_000 } },
  ({ failures }, ctx) => {
    if (ctx.attempt <= failures) throw new Error(`boom ${ctx.attempt}`);
    return { attempt: ctx.attempt };
  },
);
const refuse = errand.task('refuse', { input: z.object({}) }, () => {
  throw new PermanentError('no point retrying');
});
const signup = errand.task('signup', { input: z.object({ userId: z.string() }) }, async ({ userId }) => {
  calls.push(`signup ${userId}`);
  await sendWelcome.enqueue({ userId, email: `${userId}@example.com` });
  return userId;
});
const forever = errand.task('forever', { input: z.object({ n: z.number() }) }, async ({ n }) => {
  await forever.enqueue({ n: n + 1 });
});
const slow = errand.task('slow', { input: z.object({}), timeout: 50 }, (_input, ctx) => {
  return new Promise((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)));
});
const progress = errand.task('progress', { input: z.object({ steps: z.number() }) }, (input, ctx) => {
  for (let i = 1; i <= input.steps; i++) ctx.progress({ done: i, total: input.steps });
  return { attempt: ctx.attempt, runId: ctx.runId, queue: ctx.queue };
});
const badResult = errand.task('bad_result', { input: z.object({}) }, () => new Map() as unknown as object);

afterEach(async () => {
  calls.length = 0;
  await t.reset();
});
after(() => t.close());

describe('errand/testing: what was enqueued', () => {
  it('records each enqueue with its input and options, and matches a subset of the input', async () => {
    await sendWelcome.enqueue({ userId: 'u1', email: 'u1@example.com' });
    await sendWelcome.enqueue({ userId: 'u2', email: 'u2@example.com', locale: 'fr' }, { delay: 60_000, priority: 5 });
    await sendWelcome.enqueue({ userId: 'u2', email: 'u2@example.com' }, { idempotencyKey: 'welcome:u2' });
    await sendWelcome.enqueue({ userId: 'u2', email: 'u2@example.com' }, { idempotencyKey: 'welcome:u2' });

    const all = t.enqueued(sendWelcome);
    assert.equal(all.length, 4);
    assert.deepEqual(all[0]!.input, { userId: 'u1', email: 'u1@example.com' });
    assert.equal(all[0]!.queue, 'emails');
    assert.equal(all[0]!.delay, 0);
    assert.equal(all[1]!.delay, 60_000);
    assert.equal(all[1]!.priority, 5);
    assert.deepEqual(
      all.slice(2).map((e) => e.created),
      [true, false],
    );
    assert.equal(all[3]!.id, all[2]!.id, 'the second enqueue with the key points at the first run');

    t.assertEnqueued(sendWelcome, { input: { userId: 'u1' } });
    t.assertEnqueued(sendWelcome, { input: { userId: 'u2', locale: 'fr' }, delay: 60_000, priority: 5 });
    t.assertEnqueued(sendWelcome, { idempotencyKey: 'welcome:u2', count: 2 });
    t.assertEnqueued('send_welcome', { input: (i) => (i as { email: string }).email.startsWith('u1'), count: 1 });
    t.refuteEnqueued(sendWelcome, { input: { userId: 'u3' } });
    t.refuteEnqueued(flaky);
    // The match is typed by the task's input schema.
    // @ts-expect-error userId is a string
    assert.throws(() => t.assertEnqueued(sendWelcome, { input: { userId: 1 } }));
  });

  it('fails with a message that names what was asked and what was enqueued', async () => {
    await sendWelcome.enqueue({ userId: 'u1', email: 'u1@example.com' });
    assert.throws(
      () => t.assertEnqueued(sendWelcome, { input: { userId: 'u9' } }),
      (err: Error) => {
        assert.equal(err.name, 'AssertionError');
        assert.match(err.message, /Expected at least one enqueue of "send_welcome" with input \{"userId":"u9"\}, found 0/);
        assert.match(err.message, /send_welcome \{"userId":"u1","email":"u1@example.com"\} \(queue "emails"\)/);
        return true;
      },
    );
    assert.throws(() => t.assertEnqueued(sendWelcome, { count: 2 }), /Expected 2 enqueues of "send_welcome", found 1/);
    assert.throws(() => t.refuteEnqueued(), /Expected no enqueue of any task, found 1/);
    assert.throws(() => t.assertEnqueued(flaky), /No run of "flaky" was enqueued/);
  });

  it('refuses what would make an assertion say nothing: no task, an unknown task name, a misspelled or mistyped match', async () => {
    // Plain JavaScript (or a cast) gets past the types: each of these passed, or failed, whatever was enqueued.
    await sendWelcome.enqueue({ userId: 'u1', email: 'u1@example.com' });
    const tasks: Record<string, undefined> = {};
    const refused = (call: () => unknown, message: RegExp) =>
      assert.throws(call, (err: Error) => err instanceof ConfigError && message.test(err.message));
    refused(
      () => t.assertEnqueued(tasks.sendWelcom as never),
      /^t\.assertEnqueued\(\): the task must be a task \(what errand\.task\(\) returns\) or its name, got undefined \(a missing or misspelled import\?\)$/,
    );
    refused(() => t.refuteEnqueued(tasks.sendWelcom), /^t\.refuteEnqueued\(\): the task must be a task .* got undefined/);
    refused(() => t.enqueued(tasks.sendWelcom), /^t\.enqueued\(\): the task must be a task .* got undefined/);
    refused(() => t.assertEnqueued(null as never), /the task must be a task .* got null$/);
    refused(() => t.assertEnqueued({} as never), /the task must be a task .* got \{\}$/);
    refused(() => t.assertEnqueued(5 as never), /the task must be a task .* got 5$/);
    for (const call of [() => t.assertEnqueued('send_welcom'), () => t.refuteEnqueued('send_welcom'), () => t.enqueued('send_welcom')]) {
      refused(call, /: no task named "send_welcom" is defined on this app \(tasks: "send_welcome", "flaky", /);
    }
    refused(
      () => t.assertEnqueued(sendWelcome, { inptu: { userId: 'u2' } } as never),
      /^t\.assertEnqueued\(\): "inptu" is not a key of match \(did you mean "input"\? known: input, queue, priority, delay, runAt, idempotencyKey, count\)$/,
    );
    refused(
      () => t.refuteEnqueued(sendWelcome, { inptu: { userId: 'u1' } } as never),
      /^t\.refuteEnqueued\(\): "inptu" is not a key of match/,
    );
    refused(() => t.enqueued(sendWelcome, { qeue: 'emails' } as never), /^t\.enqueued\(\): "qeue" is not a key of match/);
    refused(() => t.refuteEnqueued(sendWelcome, { count: 2 }), /match\.count is for t\.assertEnqueued\(\) only/);
    refused(() => t.refuteEnqueued(sendWelcome, { priority: '0' } as never), /match\.priority must be a number, got "0"/);
    refused(() => t.refuteEnqueued(sendWelcome, { queue: 5 } as never), /match\.queue must be a string, got 5/);
    refused(() => t.refuteEnqueued(sendWelcome, { runAt: new Date('nope') }), /match\.runAt must be a valid Date or epoch milliseconds/);
    refused(() => t.assertEnqueued(sendWelcome, { count: '1' } as never), /match\.count must be a non-negative integer, got "1"/);
    refused(() => t.assertEnqueued(sendWelcome, 'u1' as never), /match must be an object .* got "u1"/);
    await assert.rejects(
      t.runs({ stat: 'queued' } as never),
      (err: Error) =>
        err instanceof ConfigError &&
        /^t\.runs\(\): "stat" is not a key of filter \(did you mean "state"\? known: task, queue, state\)$/.test(err.message),
    );
    await assert.rejects(
      t.runs({ state: 'done' } as never),
      (err: Error) => err instanceof ConfigError && /filter\.state must be one of .* got "done"/.test(err.message),
    );
    // What is allowed stays so: a task or its name, no task for refute and enqueued, undefined keys.
    t.assertEnqueued(sendWelcome, { input: { userId: 'u1' }, queue: undefined });
    t.refuteEnqueued(undefined, { input: { userId: 'u2' } });
    assert.equal(t.enqueued(undefined, {}).length, 1);
    assert.equal(t.enqueued().length, 1);
  });

  it('clearEnqueued forgets the journal; reset also empties the broker', async () => {
    const run = await sendWelcome.enqueue({ userId: 'u1', email: 'u1@example.com' });
    t.clearEnqueued();
    t.refuteEnqueued();
    assert.equal(await run.status(), 'queued');
    assert.equal((await t.runs({ task: sendWelcome })).length, 1);
    await t.reset();
    assert.deepEqual(await t.runs(), []);
  });

  it('refuses a broker that is already connected', async () => {
    const app = createErrand({ broker: 'sqlite::memory:', logger: quietLogger });
    await app.broker();
    assert.throws(
      () => createTesting(app),
      (err: Error) => err instanceof ConfigError && /before the app's first enqueue/.test(err.message),
    );
    await app.close();
  });

  it('without an app, makes one on the test broker', async () => {
    const own = createTesting();
    const echo = own.errand.task('echo', { input: z.object({ x: z.number() }) }, ({ x }) => x * 2);
    await echo.enqueue({ x: 21 });
    const out = await own.drain();
    assert.deepEqual(
      out.runs.map((r) => r.result),
      [42],
    );
    await own.close();
  });

  it("gives the test broker the app's maxLeaseLosses and failedRetentionMs (a Redis prefix means nothing to it)", async () => {
    const app = createErrand({ broker: 'sqlite:/nonexistent/never-opened.db', logger: quietLogger, prefix: 'myapp', maxLeaseLosses: 5 });
    const withApp = createTesting(app);
    assert.equal(withApp.broker.maxLeaseLosses, 5);
    assert.equal((await app.broker()).maxLeaseLosses, 5, 'what the workers take their last-chance threshold from');
    await withApp.close();
    const own = createTesting(undefined, { errand: { prefix: 'myapp', maxLeaseLosses: 2, failedRetentionMs: 1000 } });
    assert.equal(own.broker.maxLeaseLosses, 2);
    assert.equal((await own.errand.broker()).maxLeaseLosses, 2);
    assert.deepEqual(own.errand.brokerOptions, {}, 'the app itself has none: its broker is an instance');
    await own.close();
    assert.equal(createTesting().broker.maxLeaseLosses, 3, 'the default');
  });
});

describe('errand/testing: drain()', () => {
  it('refuses an option it does not have, naming the one meant', async () => {
    await assert.rejects(
      t.drain({ schedueld: true } as never),
      (err: unknown) =>
        err instanceof ConfigError &&
        /^drain\(\): "schedueld" is not a drain option \(did you mean "scheduled"\? known: queues, concurrency, retries, scheduled, limit\)$/.test(
          err.message,
        ),
    );
  });

  it('runs the queued runs with a real worker, and the runs their handlers enqueue', async () => {
    const a = await signup.enqueue({ userId: 'a' });
    await signup.enqueue({ userId: 'b' });
    const out = await t.drain();
    // One queue after the other, as a worker takes them (the app's task queues: emails, then default).
    assert.deepEqual(calls, ['signup a', 'welcome a', 'signup b', 'welcome b']);
    assert.equal(out.succeeded, 4);
    assert.equal(out.failed, 0);
    assert.deepEqual(
      out.runs.map((r) => [r.task, r.state]),
      [
        ['signup', 'succeeded'],
        ['send_welcome', 'succeeded'],
        ['signup', 'succeeded'],
        ['send_welcome', 'succeeded'],
      ],
    );
    assert.deepEqual(out.runs[1]!.result, { to: 'a@example.com', locale: 'en' });
    assert.equal(await a.result(), 'a', 'run handles see the outcome');
    t.assertEnqueued(sendWelcome, { input: { userId: 'b' }, count: 1 });
    const again = await t.drain();
    assert.deepEqual(again.runs, [], 'nothing left');
  });

  it('retries at once within the drain, listing every attempt', async () => {
    await flaky.enqueue({ failures: 2 });
    await flaky.enqueue({ failures: 9 });
    await refuse.enqueue({});
    const out = await t.drain();
    const byRun = (i: number) => out.attempts.filter((x) => x.runId === out.runs[i]!.id).map((x) => x.outcome);
    assert.deepEqual(byRun(0), ['retry', 'retry', 'succeeded']);
    assert.deepEqual(byRun(1), ['retry', 'retry', 'retry', 'failed']);
    assert.deepEqual(byRun(2), ['failed']);
    assert.deepEqual(out.runs[0]!.result, { attempt: 3 });
    assert.equal(out.runs[1]!.error?.message, 'boom 4');
    assert.equal(out.runs[2]!.error?.name, 'PermanentError');
    assert.deepEqual([out.succeeded, out.failed, out.retried], [1, 2, 5]);
    assert.ok(out.attempts.find((x) => x.outcome === 'retry')?.error instanceof Error);
  });

  it('with retries: false, leaves a retry scheduled for its time; advance() and drain() run it', async () => {
    const run = await flaky.enqueue({ failures: 1 });
    const first = await t.drain({ retries: false });
    assert.deepEqual(
      first.attempts.map((x) => x.outcome),
      ['retry'],
    );
    assert.equal(await run.status(), 'scheduled');
    assert.deepEqual((await t.drain()).runs, [], 'the retry is not due yet');
    t.advance(60_000);
    const second = await t.drain();
    assert.deepEqual(
      second.attempts.map((x) => [x.attempt, x.outcome]),
      [[2, 'succeeded']],
    );
  });

  it('runs scheduled runs only with { scheduled: true }, moving the clock to them', async () => {
    const before = t.now();
    const later = await sendWelcome.enqueue({ userId: 'later', email: 'l@example.com' }, { delay: 3_600_000 });
    await sendWelcome.enqueue({ userId: 'now', email: 'n@example.com' });
    const first = await t.drain();
    assert.deepEqual(calls, ['welcome now']);
    assert.equal(first.runs.length, 1);
    assert.equal(await later.status(), 'scheduled');
    const second = await t.drain({ scheduled: true });
    assert.deepEqual(calls, ['welcome now', 'welcome later']);
    assert.equal(second.succeeded, 1);
    assert.ok(t.now() >= before + 3_600_000, 'the test clock moved an hour on');
  });

  it('leaves paused queues alone, and drains only the queues asked for', async () => {
    await errand.broker().then((b) => (b as typeof t.broker).pause('emails'));
    await sendWelcome.enqueue({ userId: 'p', email: 'p@example.com' });
    await refuse.enqueue({});
    const out = await t.drain();
    assert.deepEqual(
      out.runs.map((r) => r.task),
      ['refuse'],
    );
    await t.broker.resume('emails');
    assert.deepEqual((await t.drain({ queues: ['default'] })).runs, []);
    assert.equal((await t.drain({ queues: ['emails'] })).succeeded, 1);
  });

  it('stops a runaway chain at its limit and says so', async () => {
    await forever.enqueue({ n: 0 });
    await assert.rejects(t.drain({ limit: 20 }), /drain\(\) stopped after 20 attempts/);
  });

  it('runs many runs at once with concurrency', async () => {
    await sendWelcome.enqueueMany(Array.from({ length: 30 }, (_, i) => ({ input: { userId: `u${i}`, email: `u${i}@example.com` } })));
    const out = await t.drain({ concurrency: 8 });
    assert.equal(out.succeeded, 30);
    assert.equal(calls.length, 30);
  });
});

describe('errand/testing: runTask()', () => {
  it('runs the handler with a test context and returns its typed result', async () => {
    const seen: unknown[] = [];
    const out = await runTask(progress, { steps: 2 }, { attempt: 3, onProgress: (v) => seen.push(v) });
    const attempt: number = out.attempt;
    assert.equal(attempt, 3);
    assert.equal(out.queue, 'default');
    assert.match(out.runId, /^default\.[0-9A-Z]{26}$/);
    assert.deepEqual(seen, [
      { done: 1, total: 2 },
      { done: 2, total: 2 },
    ]);
    assert.deepEqual(await runTask(sendWelcome, { userId: 'x', email: 'x@example.com' }), { to: 'x@example.com', locale: 'en' });
    assert.equal(t.enqueued().length, 0, 'no broker involved');
  });

  it('validates the input as enqueue does', async () => {
    await assert.rejects(
      // @ts-expect-error email is required
      runTask(sendWelcome, { userId: 'x' }),
      (err: Error) => err instanceof InputError && err.issues[0]!.path[0] === 'email',
    );
  });

  it('throws what the handler throws, a timeout, a cancel, or a result JSON cannot hold', async () => {
    await assert.rejects(runTask(flaky, { failures: 1 }), /boom 1/);
    assert.deepEqual(await runTask(flaky, { failures: 1 }, { attempt: 2 }), { attempt: 2 });
    await assert.rejects(runTask(slow, {}), TaskTimeoutError);
    const cancel = new AbortController();
    const running = runTask(slow, {}, { signal: cancel.signal });
    cancel.abort(new Error('cancelled by the test'));
    await assert.rejects(running, /cancelled by the test/);
    await assert.rejects(
      runTask(badResult, {}),
      (err: Error) => err instanceof PermanentError && /cannot be stored as JSON/.test(err.message),
    );
  });
});

// The README's example ("Testing your tasks"), on the README's resize_image task.
describe('errand/testing: the README example', () => {
  const readme = createErrand({ logger: quietLogger });
  const resizeImage = readme.task(
    'resize_image',
    {
      input: z.object({ url: z.url(), width: z.number().int().positive() }),
      queue: 'images',
      retries: { maxAttempts: 5, backoff: 'exponential', base: 1000, cap: 60_000 },
      timeout: 30_000,
    },
    async ({ url, width }, ctx) => {
      const res = await fetch(url, { signal: ctx.signal });
      if (res.status === 404) throw new PermanentError(`no image at ${url}`);
      ctx.progress({ step: 'downloaded' });
      return { width, bytes: (await res.arrayBuffer()).byteLength };
    },
  );
  const rt = createTesting(readme);
  afterEach(() => rt.reset());
  after(() => rt.close());

  it('the upload handler asks for a thumbnail', async () => {
    await resizeImage.enqueue({ url: 'https://example.com/a.png', width: 640 }, { delay: 5000 });
    rt.assertEnqueued(resizeImage, { input: { width: 640 }, queue: 'images', delay: 5000 });
    rt.refuteEnqueued(resizeImage, { input: { width: 1280 } });
  });

  it('a missing image fails at once, without retries', async () => {
    mock.method(globalThis, 'fetch', async () => new Response('', { status: 404 }));
    await resizeImage.enqueue({ url: 'https://example.com/gone.png', width: 640 });
    const out = await rt.drain();
    assert.equal(out.failed, 1);
    assert.equal(out.runs[0]?.error?.name, 'PermanentError');
    assert.equal(out.attempts.length, 1);
    mock.restoreAll();
  });

  it('the handler, on its own', async () => {
    mock.method(globalThis, 'fetch', async () => new Response('12345'));
    assert.deepEqual(await runTask(resizeImage, { url: 'https://example.com/a.png', width: 640 }, { attempt: 2 }), {
      width: 640,
      bytes: 5,
    });
    mock.restoreAll();
  });
});
