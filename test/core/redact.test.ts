// Redaction of secrets in task inputs: the path syntax, what is redacted and scrubbed in a shown run,
// configuration (app option, task option, ERRAND_REDACT), and the worker: the handler gets the real
// input while its logs and the stored error never hold the secret.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import { z } from 'zod';
import type { RunRecord } from '../../src/broker/types.ts';
import { ConfigError } from '../../src/core/errors.ts';
import {
  checkRedactPaths,
  REDACTED,
  redactPathsFromEnv,
  redactRecord,
  redactRun,
  redactValue,
  scrubText,
  scrubThrown,
  secretsAt,
} from '../../src/core/redact.ts';
import { decodeRun } from '../../src/core/run-info.ts';
import { createErrand, type Errand } from '../../src/errand.ts';
import { tempDir, waitFor } from '../helpers.ts';

describe('redactValue', () => {
  const input = {
    user: 'ann',
    password: 'hunter2-hunter2',
    card: { number: '4111111111111111', exp: '12/30' },
    accounts: [
      { name: 'a', token: 'tok-aaaa' },
      { name: 'b', token: 'tok-bbbb' },
    ],
    nested: { deep: { er: { apiKey: 'k-1234' } }, list: [[{ apiKey: 'k-5678' }]] },
  };

  it('replaces the value at a top-level key and at a nested key', () => {
    const out = redactValue(input, ['password', 'card.number']) as typeof input;
    assert.equal(out.password, REDACTED);
    assert.equal(out.card.number, REDACTED);
    assert.equal(out.card.exp, '12/30');
    assert.equal(out.user, 'ann');
  });

  it('never modifies the value given, and shares what it did not change', () => {
    const before = structuredClone(input);
    const out = redactValue(input, ['password', 'accounts.token', '**.apiKey']) as typeof input;
    assert.deepEqual(input, before);
    assert.equal(out.card, input.card);
    assert.notEqual(out.accounts, input.accounts);
  });

  it('applies a name to each element of an array, and * to any key or index', () => {
    const viaName = redactValue(input, ['accounts.token']) as typeof input;
    assert.deepEqual(
      viaName.accounts.map((a) => a.token),
      [REDACTED, REDACTED],
    );
    const viaStar = redactValue(input, ['accounts.*.token']) as typeof input;
    assert.deepEqual(viaStar.accounts, viaName.accounts);
    const oneLevel = redactValue({ a: { token: 'x1' }, b: { token: 'x2', c: { token: 'x3' } }, token: 'x0' }, ['*.token']);
    assert.deepEqual(oneLevel, { a: { token: REDACTED }, b: { token: REDACTED, c: { token: 'x3' } }, token: 'x0' });
  });

  it('takes a number as an array index', () => {
    assert.deepEqual(redactValue({ items: ['a', 'b', 'c'] }, ['items.1']), { items: ['a', REDACTED, 'c'] });
    assert.deepEqual(redactValue({ items: ['a'] }, ['items.5']), { items: ['a'] });
    assert.deepEqual(redactValue({ items: { 1: 'x' } }, ['items.1']), { items: { 1: REDACTED } });
  });

  it('** matches at any depth, zero levels included, through arrays', () => {
    const out = redactValue(input, ['**.apiKey']) as typeof input;
    assert.equal(out.nested.deep.er.apiKey, REDACTED);
    assert.equal(out.nested.list[0]![0]!.apiKey, REDACTED);
    assert.deepEqual(redactValue({ apiKey: 'top' }, ['**.apiKey']), { apiKey: REDACTED });
    assert.deepEqual(redactValue({ a: { b: { secret: 1 } } }, ['a.**.secret']), { a: { b: { secret: REDACTED } } });
  });

  it('replaces a whole object or array found at a path, and never adds a key', () => {
    assert.deepEqual(redactValue({ card: { number: '1', cvc: '2' } }, ['card']), { card: REDACTED });
    assert.deepEqual(redactValue({ user: 'ann' }, ['password', 'card.number', '*.token']), { user: 'ann' });
    assert.equal(redactValue('plain', ['password']), 'plain');
    assert.equal(redactValue(null, ['password']), null);
    assert.deepEqual(redactValue({ password: null }, ['password']), { password: REDACTED });
  });

  it('handles a "__proto__" key from JSON as an ordinary key', () => {
    const parsed = JSON.parse('{"__proto__": {"token": "abcd1234"}, "x": 1}');
    const out = redactValue(parsed, ['*.token']) as Record<string, unknown>;
    assert.deepEqual(Object.getOwnPropertyDescriptor(out, '__proto__')?.value, { token: REDACTED });
    assert.equal(Object.getPrototypeOf(out), Object.prototype);
    assert.equal(({} as Record<string, unknown>).token, undefined);
  });
});

describe('redaction paths', () => {
  it('are checked, trimmed and deduplicated', () => {
    assert.deepEqual(checkRedactPaths([' password ', 'password', 'card.number'], 'x'), ['password', 'card.number']);
    assert.deepEqual(checkRedactPaths(undefined, 'x'), []);
    for (const [bad, why] of [
      [[''], /is empty/],
      [['a..b'], /empty segment/],
      [['.a'], /empty segment/],
      [['a.'], /empty segment/],
      [['a.**'], /ends with \*\*/],
      [['a**.b'], /\*\* stands alone/],
      [['a. b'], /spaces/],
      [[3], /must be strings/],
    ] as const) {
      assert.throws(
        () => checkRedactPaths(bad, 'Task "t"'),
        (err: Error) => err instanceof ConfigError && why.test(err.message),
      );
    }
    assert.throws(() => checkRedactPaths('password', 'Errand options'), /array of paths/);
  });

  it('come from ERRAND_REDACT, comma-separated', () => {
    assert.deepEqual(redactPathsFromEnv({ ERRAND_REDACT: 'password, card.number,,*.token ' }), ['password', 'card.number', '*.token']);
    assert.deepEqual(redactPathsFromEnv({ ERRAND_REDACT: '' }), []);
    assert.deepEqual(redactPathsFromEnv({}), []);
    assert.throws(() => redactPathsFromEnv({ ERRAND_REDACT: 'a..b' }), /ERRAND_REDACT: redact path "a..b" has an empty segment/);
  });

  it('of the app, of ERRAND_REDACT and of each task add up', () => {
    const saved = process.env.ERRAND_REDACT;
    process.env.ERRAND_REDACT = 'ssn';
    try {
      const app = createErrand({ broker: 'sqlite::memory:', redact: ['password'], logger: pino({ level: 'silent' }) });
      app.task('pay', { input: z.object({}), redact: ['card.number'] }, async () => {});
      app.task('plain', { input: z.object({}) }, async () => {});
      assert.deepEqual([...app.redact], ['password', 'ssn']);
      assert.deepEqual([...app.redactPaths('pay')], ['password', 'ssn', 'card.number']);
      assert.deepEqual([...app.redactPaths('plain')], ['password', 'ssn']);
      assert.deepEqual([...app.redactPaths('defined_elsewhere')], ['password', 'ssn']);
      assert.throws(() => app.task('bad', { input: z.object({}), redact: ['a..b'] }, async () => {}), /Task "bad": redact path "a..b"/);
      assert.throws(() => createErrand({ broker: 'sqlite::memory:', redact: [''] }), /Errand options: redact path "" is empty/);
      process.env.ERRAND_REDACT = 'a.';
      assert.throws(() => createErrand({ broker: 'sqlite::memory:' }), /ERRAND_REDACT/);
    } finally {
      if (saved === undefined) delete process.env.ERRAND_REDACT;
      else process.env.ERRAND_REDACT = saved;
    }
  });
});

describe('scrubbing secrets from text', () => {
  it('finds the values at the paths (strings and numbers, leaves of objects), long enough to be safe to scrub', () => {
    const secrets = secretsAt({ password: 'hunter22', pin: 1234, short: 'ab', card: { number: 4111111111111111, cvc: '123' } }, [
      'password',
      'pin',
      'short',
      'card',
    ]);
    assert.deepEqual(secrets.sort(), ['1234', '4111111111111111', 'hunter22']);
  });

  it('replaces every occurrence, also as the value reads inside JSON text', () => {
    assert.equal(scrubText('bad password hunter22 (hunter22)', ['hunter22']), `bad password ${REDACTED} (${REDACTED})`);
    const quoted = 'pa"ss\\word';
    assert.equal(scrubText(JSON.stringify({ p: quoted }), [quoted]), `{"p":"${REDACTED}"}`);
    assert.equal(scrubText('abcdef', ['abc', 'abcdef']), REDACTED);
  });

  it('copies a thrown error with the secret scrubbed from its message, stack, properties and cause', () => {
    const cause = new Error('inner hunter22');
    const err = Object.assign(new TypeError('login hunter22 refused', { cause }), { code: 'E_AUTH', detail: { tried: 'hunter22' } });
    const out = scrubThrown(err, ['hunter22']) as typeof err;
    assert.ok(out instanceof TypeError);
    assert.notEqual(out, err);
    assert.equal(out.message, `login ${REDACTED} refused`);
    assert.doesNotMatch(out.stack!, /hunter22/);
    assert.equal(out.code, 'E_AUTH');
    assert.deepEqual(out.detail, { tried: REDACTED });
    assert.equal((out.cause as Error).message, `inner ${REDACTED}`);
    assert.equal(err.message, 'login hunter22 refused', 'the original is left alone');
    const clean = new Error('nothing secret');
    assert.equal(scrubThrown(clean, ['hunter22']), clean);
    assert.equal(scrubThrown('hunter22 as a string', ['hunter22']), `${REDACTED} as a string`);
  });
});

describe('redactRun and redactRecord', () => {
  const rec: RunRecord = {
    id: 'pay.01ARZ3NDEKTSV4RRFFQ69G5FAV',
    task: 'pay',
    queue: 'pay',
    state: 'failed',
    priority: 0,
    input: JSON.stringify({ user: 'ann', card: { number: '4111111111111111' } }),
    result: JSON.stringify({ charged: '4111111111111111' }),
    progress: JSON.stringify('checking 4111111111111111'),
    error: JSON.stringify({
      name: 'Error',
      message: 'card 4111111111111111 declined',
      stack: 'Error: card 4111111111111111 declined\n at x',
    }),
    attempts: 1,
    leaseLosses: 0,
    enqueuedAt: 1,
    idempotencyKey: 'pay:4111111111111111',
    history: [
      {
        attempt: 1,
        worker: 'w',
        startedAt: 1,
        finishedAt: 2,
        outcome: 'failed',
        error: JSON.stringify({ name: 'Error', message: 'card 4111111111111111 declined' }),
      },
    ],
  };

  it('redacts the input and scrubs the error, history, result, progress and idempotency key', () => {
    for (const info of [redactRun(decodeRun(rec), ['card.number']), decodeRun(redactRecord(rec, ['card.number']))]) {
      assert.deepEqual(info.input, { user: 'ann', card: { number: REDACTED } });
      assert.equal(info.error!.message, `card ${REDACTED} declined`);
      assert.doesNotMatch(info.error!.stack!, /4111/);
      assert.doesNotMatch(info.history[0]!.error!, /4111/);
      assert.deepEqual(info.result, { charged: REDACTED });
      assert.equal(info.progress, `checking ${REDACTED}`);
      assert.equal(info.idempotencyKey, `pay:${REDACTED}`);
      assert.doesNotMatch(JSON.stringify(info), /4111111111111111/);
    }
  });

  it('returns the run as is with no paths, and leaves the given run unchanged', () => {
    const info = decodeRun(rec);
    assert.equal(redactRun(info, []), info);
    assert.equal(redactRecord(rec, []), rec);
    redactRun(info, ['card.number']);
    redactRecord(rec, ['card.number']);
    assert.equal((info.input as { card: { number: string } }).card.number, '4111111111111111');
    assert.match(rec.input, /4111111111111111/);
  });

  it('hides an input it cannot read whole', () => {
    const corrupt = { ...rec, input: '{"card": {"number": "4111111111111111"' };
    assert.equal(redactRun(decodeRun(corrupt), ['card.number']).input, REDACTED);
    assert.equal(decodeRun(redactRecord(corrupt, ['card.number'])).input, REDACTED);
  });
});

describe('the worker with redaction paths', () => {
  let app: Errand | undefined;
  after(async () => app?.close());

  it('gives the handler the real input, and keeps the secret out of its logs and the stored error', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    });
    const logger = pino({ level: 'debug' }, sink);
    app = createErrand({ broker: `sqlite:${join(tempDir('errand-redact'), 'errand.db')}`, logger, redact: ['password'] });
    const seen: string[] = [];
    const login = app.task(
      'login',
      {
        input: z.object({ user: z.string(), password: z.string(), card: z.object({ number: z.string() }) }),
        retries: { maxAttempts: 2, base: 1 },
        redact: ['card.number'],
      },
      async (input, ctx) => {
        seen.push(input.password, input.card.number);
        ctx.logger.info({ user: input.user }, 'trying');
        throw new Error(`login for ${input.user} with ${input.password} and card ${input.card.number} refused`);
      },
    );
    const worker = app.worker({ concurrency: 1 });
    await worker.start();
    const handle = await login.enqueue({ user: 'ann', password: 'hunter2-secret', card: { number: '4111111111111111' } });
    const info = await waitFor(async () => {
      const i = await app!.getRun(handle.id);
      return i.state === 'failed' ? i : undefined;
    });
    await worker.stop();

    const real = ['hunter2-secret', '4111111111111111'];
    assert.deepEqual(seen, [...real, ...real], 'the handler got the real values, on both attempts');
    assert.deepEqual(info.input, { user: 'ann', password: 'hunter2-secret', card: { number: '4111111111111111' } }, 'storage keeps them');
    assert.equal(info.error!.message, `login for ann with ${REDACTED} and card ${REDACTED} refused`);
    assert.doesNotMatch(JSON.stringify(info.history), /hunter2-secret|4111111111111111/);
    const log = lines.join('');
    assert.match(log, /run failed/);
    assert.match(log, /refused/);
    assert.doesNotMatch(log, /hunter2-secret|4111111111111111/);
    assert.doesNotMatch(log, /"input"/, 'the worker never logs inputs');
  });
});
