// Programmatic options refused at definition, each naming what is wrong and where, with the value
// as given (strings quoted): task options, retries, retention, createErrand options, enqueueMany's
// argument, run.result()'s timeout. (Worker options: test/worker/options.test.ts; the helpers:
// test/core/show.test.ts.)
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { z } from 'zod';
import { ConfigError, createErrand } from '../../src/index.ts';
import { memoryBroker } from '../../src/testing/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';

const input = z.object({ a: z.number() });
// Never opened: every check below refuses before the broker is reached.
const app = createErrand({ broker: 'sqlite:/nonexistent/errand-options.db', logger: quietLogger });
after(() => app.close());
let n = 0;
const define = (options: Record<string, unknown>) => () => app.task(`opt${n++}`, { input, ...options } as never, (x) => x);

function refuses(f: () => unknown, message: RegExp): void {
  assert.throws(f, (err: Error) => {
    assert.ok(err instanceof ConfigError, `${err.name}: ${err.message}`);
    assert.match(err.message, message);
    return true;
  });
}

describe('task options: refused at definition, the value as given', () => {
  it('an unknown option, a retries field or a retention field is named, with what it probably meant', () => {
    refuses(define({ timeOut: 1000 }), /^Task "opt\d+": options: "timeOut" is not a task option \(did you mean "timeout"\? known: input, /);
    refuses(define({ retires: 5 }), /"retires" is not a task option \(did you mean "retries"\?/);
    refuses(define({ timeoutMs: 5 }), /"timeoutMs" is not a task option \(did you mean "timeout"\?/);
    refuses(
      define({ retries: { maxAttempt: 7 } }),
      /retries: "maxAttempt" is not a retries field \(did you mean "maxAttempts"\? known: maxAttempts, backoff, base, cap, jitter\)/,
    );
    refuses(
      define({ retention: { succeded: 0 } }),
      /retention: "succeded" is not a retention field \(did you mean "succeeded"\? known: succeeded, failed, cancelled\)/,
    );
    refuses(define({ retention: { foo: 1 } }), /retention: "foo" is not a retention field \(known: succeeded, failed, cancelled\)$/);
  });

  it('retries: a number of retries (an integer >= 0) or a policy, shown as given', () => {
    for (const [retries, shown] of [
      [-1, '-1'],
      [1.5, '1.5'],
      [Number.NaN, 'NaN'],
      [Number.POSITIVE_INFINITY, 'Infinity'],
      ['3', '"3"'],
      [[3], '[3]'],
    ] as const) {
      refuses(
        define({ retries }),
        new RegExp(
          `retries must be a number of retries after the first attempt \\(an integer >= 0\\) or a policy .*, got ${shown.replace(/[[\]]/g, '\\$&')}$`,
        ),
      );
    }
    assert.equal(define({ retries: 0 })().retries.maxAttempts, 1);
    assert.equal(define({ retries: 4 })().retries.maxAttempts, 5);
  });

  it('retries: a cap below the base is refused, given or by default', () => {
    refuses(define({ retries: { base: 10_000, cap: 10 } }), /retries\.cap \(10\) must be at least retries\.base \(10000\)/);
    refuses(
      define({ retries: { base: 600_000 } }),
      /retries\.base \(600000\) is over the default retries\.cap \(300000\): give a retries\.cap of at least 600000/,
    );
    assert.equal(define({ retries: { base: 600_000, cap: 600_000 } })().retries.cap, 600_000);
  });

  it('quotes strings and shows numbers as given', () => {
    refuses(define({ priority: '1' }), /priority must be an integer from -1000 to 1000, got "1"$/);
    refuses(define({ retries: { maxAttempts: 0 } }), /retries\.maxAttempts must be an integer >= 1, got 0$/);
    refuses(define({ retention: 'x' }), /retention must be a number of ms or \{ succeeded, failed, cancelled \}, got "x"$/);
    refuses(define({ retention: -1 }), /retention must be a non-negative number of milliseconds, got -1$/);
    refuses(define({ retention: { succeeded: '1' } }), /retention\.succeeded must be a non-negative number of milliseconds, got "1"$/);
    refuses(define({ limits: { global: '2' } }), /limits\.global must be a positive integer, got "2"$/);
  });

  it("timeout: at most Node's longest timer (2147483647 ms), past which every attempt would time out after 1 ms", () => {
    for (const timeout of [2 ** 31, 30 * 24 * 3600_000, Number.POSITIVE_INFINITY]) {
      refuses(define({ timeout }), new RegExp(`timeout must be a positive number of milliseconds up to 2147483647, got ${timeout}$`));
    }
    refuses(define({ timeout: '30s' }), /timeout must be a positive number of milliseconds up to 2147483647, got "30s"$/);
    assert.equal(define({ timeout: 2 ** 31 - 1 })().timeout, 2 ** 31 - 1);
  });

  it('idempotencyKey: a function of the input, not a fixed key', () => {
    refuses(
      define({ idempotencyKey: 'static-key' }),
      /idempotencyKey must be a function of the input returning the key .*, got "static-key"$/,
    );
  });
});

describe('createErrand options', () => {
  it('an unknown option is named, with what it probably meant', () => {
    refuses(
      () => createErrand({ brokerUrl: 'redis://127.0.0.1:6379/9' } as never),
      /^Errand options: "brokerUrl" is not an Errand option \(did you mean "broker"\? known: broker, logger, /,
    );
    refuses(() => createErrand({ maxInputBytes: '1mb' } as never), /maxInputBytes must be a positive integer, got "1mb"$/);
  });

  it("the broker's options are checked when the app is made, not at its first broker call", () => {
    refuses(
      () => createErrand({ prefix: 'a b' }),
      /^Errand options: prefix must be a non-empty string without braces or spaces, got "a b"$/,
    );
    refuses(() => createErrand({ maxLeaseLosses: 0 }), /^Errand options: maxLeaseLosses must be a positive integer, got 0$/);
    refuses(
      () => createErrand({ failedRetentionMs: -1 }),
      /^Errand options: failedRetentionMs must be a non-negative number of ms, got -1$/,
    );
  });

  it("the broker's options with a broker instance, which was made with its own, are refused (they would be dropped)", async () => {
    const broker = memoryBroker({ maxLeaseLosses: 2 });
    after(() => broker.close());
    refuses(
      () => createErrand({ broker, maxLeaseLosses: 5 }),
      /^Errand options: maxLeaseLosses cannot apply to a broker instance \(the broker option\), which was made with its own options: give it to the broker when you make it \(e\.g\. new RedisBroker\(\{ url, maxLeaseLosses \}\)\), or give a broker URL$/,
    );
    refuses(
      () => createErrand({ broker, failedRetentionMs: 1000 }),
      /^Errand options: failedRetentionMs cannot apply to a broker instance /,
    );
    refuses(
      () => createErrand({ broker, prefix: 'myapp', maxLeaseLosses: 2 }),
      /^Errand options: prefix and maxLeaseLosses cannot apply .* give them to /,
    );
    // setBroker (createTesting's way in): an instance must agree with the app's maxLeaseLosses.
    const app = createErrand({ broker: 'sqlite:/nonexistent/errand-options.db', logger: quietLogger, maxLeaseLosses: 3 });
    refuses(
      () => app.setBroker(broker),
      /^setBroker\(\): the app was made with maxLeaseLosses 3 but the broker instance fails runs after 2 lost leases: make the broker with maxLeaseLosses 3$/,
    );
    const own = createErrand({ broker, logger: quietLogger });
    assert.equal((await own.broker()).maxLeaseLosses, 2, "the instance's own");
  });
});

describe('enqueueMany and run.result(): arguments refused before the broker is reached', () => {
  const task = app.task('many', { input }, (x) => x);

  it('enqueueMany takes an array of { input, options? }', async () => {
    await assert.rejects(task.enqueueMany({ input: { a: 1 } } as never), (err: Error) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.message, 'Task "many": enqueueMany() takes an array of { input, options? }, got {"input":{"a":1}}');
      return true;
    });
    await assert.rejects(task.enqueueMany([{ input: { a: 1 } }, { inptu: { a: 2 } }] as never), (err: Error) => {
      assert.ok(err instanceof ConfigError);
      assert.match(
        err.message,
        /enqueueMany\(\) item 1: "inptu" is not a batch item field \(did you mean "input"\? known: input, options\)/,
      );
      return true;
    });
  });

  it('result({ timeout }): a number of ms from 0 to 2147483647; omitted, no limit', async () => {
    const run = app.run('default.01JAAAAAAAAAAAAAAAAAAAAAAA');
    for (const [timeout, shown] of [
      [Number.NaN, 'NaN'],
      ['5s', '"5s"'],
      [Number.POSITIVE_INFINITY, 'Infinity'],
      [-1, '-1'],
      [30 * 24 * 3600_000, '2592000000'],
    ] as const) {
      await assert.rejects(run.result({ timeout: timeout as number }), (err: Error) => {
        assert.ok(err instanceof ConfigError, `${err.name}: ${err.message}`);
        assert.equal(err.message, `run.result(): timeout must be a non-negative number of milliseconds up to 2147483647, got ${shown}`);
        return true;
      });
    }
  });
});
