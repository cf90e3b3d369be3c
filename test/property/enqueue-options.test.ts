// Property: enqueue options. Whatever the options (any value for delay, runAt, priority,
// idempotencyKey, queue, traceparent; unknown keys; not an object at all), `task.enqueue` either
// creates a run that reads back with a valid run time, or rejects with an InputError on the options
// that names each bad option, never any other exception. A model of the documented rules decides
// which: accepted exactly when the model says the options are valid. Against SQLite and a
// redis-server of the test's own (runs land in arbitrary queues: nothing to clean up on a shared one).
// Found: a delay past ~270,000 years (1e300) was accepted and read back as an Invalid Date; a lone
// surrogate in an idempotency key was accepted (stored as U+FFFD, two keys shared one run);
// `enqueue(input, null)` threw a TypeError.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { z } from 'zod';
import { formatPath, InputError } from '../../src/core/errors.ts';
import { createErrand, type Errand } from '../../src/index.ts';
import { MAX_DELAY_MS } from '../../src/task/task.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { redisServerMissing, requires } from '../fixtures/prereq.ts';
import { type OwnRedis, startRedisServer } from '../fixtures/redis-servers.ts';
import { tempDir } from '../helpers.ts';

const KNOWN = ['delay', 'runAt', 'priority', 'idempotencyKey', 'queue', 'traceparent'];
const DATE_MAX = 8.64e15;
const TRACEPARENT = /^[\da-f]{2}-[\da-f]{32}-[\da-f]{16}-[\da-f]{2}$/;

/** The documented rules, written independently of src/task/task.ts: the bad option names. */
function badOptions(options: unknown): string[] | 'not-an-object' {
  if (options === undefined || options === null) return [];
  if (typeof options !== 'object' || Array.isArray(options)) return 'not-an-object';
  const o = options as Record<string, unknown>;
  const bad = new Set(Object.keys(o).filter((k) => !KNOWN.includes(k)));
  const num = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
  if (o.delay !== undefined && !(num(o.delay) && o.delay >= 0 && o.delay <= MAX_DELAY_MS)) bad.add('delay');
  if (o.runAt !== undefined) {
    const t = o.runAt instanceof Date ? o.runAt.getTime() : o.runAt;
    if (!(num(t) && t >= 0 && t <= DATE_MAX) || o.delay !== undefined) bad.add('runAt');
  }
  if (o.priority !== undefined && !(Number.isInteger(o.priority) && Math.abs(o.priority as number) <= 1000)) bad.add('priority');
  const key = o.idempotencyKey;
  if (key !== undefined && !(typeof key === 'string' && key.length >= 1 && key.length <= 512 && key.isWellFormed())) {
    bad.add('idempotencyKey');
  }
  if (o.queue !== undefined && !(typeof o.queue === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(o.queue))) bad.add('queue');
  if (o.traceparent !== undefined && !(typeof o.traceparent === 'string' && TRACEPARENT.test(o.traceparent))) bad.add('traceparent');
  return [...bad].sort();
}

const char16 = fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c));
const hex = (n: number) => fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: n, maxLength: n });

const delay = fc.oneof(
  fc.integer({ min: 0, max: 600_000 }),
  fc.double(),
  fc.constantFrom(MAX_DELAY_MS, MAX_DELAY_MS + 1, DATE_MAX, Number.MAX_SAFE_INTEGER, 1e300, -0, -1, 0.5, Number.NaN, Infinity),
  fc.anything(),
);
const runAt = fc.oneof(
  fc.integer({ min: 0, max: Date.now() + 600_000 }),
  fc.date({ noInvalidDate: false }),
  fc.double(),
  fc.constantFrom(DATE_MAX, DATE_MAX + 1, -1, new Date(Number.NaN), '2030-01-01T00:00:00Z'),
  fc.anything(),
);
const priority = fc.oneof(fc.integer({ min: -1200, max: 1200 }), fc.double(), fc.constantFrom('5', -0, 1000.5), fc.anything());
const idempotencyKey = fc.oneof(
  fc.string({ minLength: 1, maxLength: 40 }),
  fc.string({ unit: char16, maxLength: 20 }), // lone surrogates too
  fc.string({ minLength: 505, maxLength: 520 }),
  fc.constantFrom('', '\u0000', 'a'.repeat(512), 'a'.repeat(513), '\ud800', 'ok\udfffok'),
  fc.anything(),
);
const queue = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/),
  fc.string({ maxLength: 70 }),
  fc.constantFrom('', 'a'.repeat(65), 'with space', '{braces}', 'dot.ted', 'emails'),
  fc.anything(),
);
const traceparent = fc.oneof(
  fc.tuple(hex(2), hex(32), hex(16), hex(2)).map((p) => p.join('-')),
  fc.string({ maxLength: 60 }),
  fc.anything(),
);
const unknownKeys = fc.dictionary(
  fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('delay_ms', 'run_at', 'Priority', 'retries', 'timeout', 'constructor')),
  fc.anything(),
  { maxKeys: 2 },
);

const optionsArb = fc.oneof(
  { weight: 8, arbitrary: fc.record({ delay, runAt, priority, idempotencyKey, queue, traceparent }, { requiredKeys: [] }) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.record({ delay, priority, queue }, { requiredKeys: [] }), unknownKeys)
      .map(([known, extra]) => ({ ...Object.fromEntries(Object.entries(extra).filter(([k]) => !KNOWN.includes(k))), ...known })),
  },
  { weight: 1, arbitrary: fc.anything() },
);

type Outcome = { ok: true; state: string; runAt: Date | undefined } | { ok: false; error: unknown };

/** Enqueues and reads the run back; any exception is the outcome. */
async function attempt(
  task: { enqueue(input: { n: number }, options: never): Promise<{ info(): Promise<{ state: string; runAt?: Date }> }> },
  options: unknown,
): Promise<Outcome> {
  try {
    const handle = await task.enqueue({ n: 1 }, options as never);
    const info = await handle.info();
    return { ok: true, state: info.state, runAt: info.runAt };
  } catch (error) {
    return { ok: false, error };
  }
}

function checkOne(options: unknown, outcome: Outcome): void {
  const expected = badOptions(options);
  const shown = () => {
    try {
      return JSON.stringify(options, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v))?.slice(0, 300);
    } catch {
      return String(options);
    }
  };
  if (outcome.ok) {
    assert.deepEqual(expected, [], `accepted options the rules refuse (${expected}): ${shown()}`);
    assert.ok(['queued', 'scheduled'].includes(outcome.state), `state ${outcome.state}`);
    if (outcome.state === 'scheduled') {
      assert.ok(outcome.runAt && !Number.isNaN(outcome.runAt.getTime()), `the run time reads back as a valid Date: ${shown()}`);
    }
    return;
  }
  const err = outcome.error;
  assert.ok(err instanceof InputError, `only InputError, got ${(err as Error)?.stack ?? String(err)} for ${shown()}`);
  assert.equal(err.root, 'options', `refused as options: ${err.message}`);
  if (expected === 'not-an-object') {
    assert.deepEqual(
      err.issues.map((i) => i.path),
      [[]],
      err.message,
    );
    return;
  }
  const named = [...new Set(err.issues.map((i) => String(i.path[0])))].sort();
  assert.deepEqual(named, expected, `the issues name exactly the bad options: ${err.message} for ${shown()}`);
  for (const name of named) assert.ok(err.message.includes(formatPath([name], 'options')), `the message names ${name}: ${err.message}`);
}

const redisSkip = requires('redis-server binary', redisServerMissing());

for (const name of ['sqlite', 'redis'] as const) {
  describe(`property: enqueue options (${name})`, { skip: name === 'redis' ? redisSkip : false }, () => {
    let app: Errand;
    let server: OwnRedis | undefined;
    after(async () => {
      await app?.close();
      await server?.stop();
    });

    it('either a run (that reads back with a valid run time) or an InputError naming each bad option; nothing else', async () => {
      const dir = tempDir('errand-prop');
      if (name === 'redis') server = await startRedisServer(join(dir, 'redis'), []);
      const broker = server ? `redis://127.0.0.1:${server.port}` : `sqlite:${join(dir, 'errand.db')}`;
      app = createErrand({ broker, logger: quietLogger });
      const task = app.task('prop_echo', { input: z.object({ n: z.number() }) }, ({ n }) => n);
      await fc.assert(
        fc.asyncProperty(optionsArb, async (options) => checkOne(options, await attempt(task, options))),
        { numRuns: name === 'sqlite' ? 300 : 200 },
      );
    });

    it('the edges, each alone: the bounds are where the documentation says', async () => {
      const task = app.tasks.get('prop_echo')!;
      const edges: unknown[] = [
        { delay: MAX_DELAY_MS },
        { delay: MAX_DELAY_MS + 1 },
        { delay: 1e300 },
        { runAt: DATE_MAX },
        { runAt: new Date(DATE_MAX + 1) },
        { priority: 1000 },
        { priority: -1001 },
        { idempotencyKey: 'k'.repeat(512) },
        { idempotencyKey: '\ud800' },
        { queue: 'q'.repeat(64) },
        { queue: 'q'.repeat(65) },
        { delay: 1, runAt: 1 },
        [],
        'delay=5',
        null,
        undefined,
      ];
      for (const options of edges) checkOne(options, await attempt(task, options));
    });
  });
}
