// The value in a refusal is shown as the user gave it (core/show.ts): a string quoted, so "5" is
// told from 5, and an object as JSON, never "[object Object]". The options users meet first:
// createServer's, a run's flow spec, the brokers' options and a schedule's fields.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { RedisBroker } from '../../src/broker/redis/redis-broker.ts';
import { guardBroker } from '../../src/broker/shared/guard.ts';
import { SqliteBroker } from '../../src/broker/sqlite/sqlite-broker.ts';
import { ConfigError } from '../../src/core/errors.ts';
import { createErrand } from '../../src/errand.ts';
import { createServer } from '../../src/http/index.ts';
import { checkPolicies } from '../../src/schedule/plan.ts';
import { quietLogger } from '../fixtures/brokers.ts';

/** A ConfigError whose message matches `re` and says nothing of "[object Object]". */
function refusal(re: RegExp): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof ConfigError, `a ConfigError, got ${String(err)}`);
    assert.match(err.message, re);
    assert.doesNotMatch(err.message, /\[object Object\]/);
    return true;
  };
}

describe('refusals show the value given', () => {
  it('createServer: bodyLimit and rateLimit', async () => {
    const errand = createErrand({ broker: 'sqlite::memory:', logger: quietLogger });
    try {
      await assert.rejects(createServer({ errand, logger: false, bodyLimit: '5' as never }), refusal(/bodyLimit .* got "5"$/));
      await assert.rejects(createServer({ errand, logger: false, bodyLimit: { mb: 1 } as never }), refusal(/got \{"mb":1\}$/));
      await assert.rejects(
        createServer({ errand, logger: false, rateLimit: { max: '100' } as never }),
        refusal(/rateLimit\.max .* got "100"$/),
      );
      await assert.rejects(
        createServer({ errand, logger: false, rateLimit: { max: 100, timeWindow: { minutes: 1 } } as never }),
        refusal(/rateLimit\.timeWindow .* got \{"minutes":1\}$/),
      );
    } finally {
      await errand.close();
    }
  });

  it("a run's flow spec: flow.concurrency, flow.rate, flow.weight", async () => {
    const b = guardBroker(new SqliteBroker({ path: ':memory:' }));
    try {
      const run = (flow: unknown) => [{ id: 'q.01', queue: 'q', task: 't', input: '{}', priority: 0, runAt: 0, flow }] as never;
      const group = { group: 'g', key: 'k' };
      await assert.rejects(
        b.enqueue(run({ ...group, concurrency: '2' }), Date.now()),
        refusal(/flow\.concurrency must be a non-negative integer \(0: unlimited\), got "2"$/),
      );
      await assert.rejects(
        b.enqueue(run({ ...group, groupConcurrency: { max: 2 } }), Date.now()),
        refusal(/flow\.groupConcurrency .* got \{"max":2\}$/),
      );
      await assert.rejects(
        b.enqueue(run({ ...group, rate: '5/s' }), Date.now()),
        refusal(/flow\.rate must be \{ interval, burst \}, got "5\/s"$/),
      );
      await assert.rejects(
        b.enqueue(run({ ...group, rate: { interval: '1000', burst: 1 } }), Date.now()),
        refusal(/flow\.rate\.interval .* got "1000"$/),
      );
      await assert.rejects(b.enqueue(run({ ...group, weight: [2] }), Date.now()), refusal(/flow\.weight .* got \[2\]$/));
      await assert.rejects(b.enqueue(run('g'), Date.now()), refusal(/flow must be an object, got "g"$/));
    } finally {
      await b.close();
    }
  });

  it("the brokers' options", () => {
    assert.throws(
      () => new SqliteBroker({ path: ':memory:', maxLeaseLosses: '3' as never }),
      refusal(/^SqliteBroker: maxLeaseLosses .* got "3"$/),
    );
    assert.throws(
      () => new SqliteBroker({ path: ':memory:', failedRetentionMs: { days: 7 } as never }),
      refusal(/^SqliteBroker: failedRetentionMs .* got \{"days":7\}$/),
    );
    // Checked before any connection is made.
    assert.throws(
      () => new RedisBroker({ url: 'redis://127.0.0.1:1', listCap: '100' as never }),
      refusal(/^RedisBroker: listCap must be a positive integer, got "100"$/),
    );
    assert.throws(
      () => new RedisBroker({ url: 'redis://127.0.0.1:1', connectWaitMs: { s: 2 } as never }),
      refusal(/^RedisBroker: connectWaitMs .* got \{"s":2\}$/),
    );
  });

  it('a value JSON cannot hold (a BigInt) is shown, not a TypeError from the message itself', () => {
    const errand = createErrand({ broker: 'sqlite::memory:', logger: quietLogger });
    const input = z.object({});
    assert.throws(() => errand.task('a', { input, queue: 5n as never }, () => 1), refusal(/queue name 5n is invalid/));
    assert.throws(() => errand.task('b', { input, isolation: 5n as never }, () => 1), refusal(/isolation .* got 5n$/));
    assert.throws(() => errand.task(5n as never, { input }, () => 1), refusal(/^Task name 5n is invalid/));
    assert.throws(() => createErrand({ broker: 'sqlite::memory:', prefix: 5n as never }), refusal(/prefix .* got 5n$/));
    assert.throws(
      () => new SqliteBroker({ path: ':memory:', synchronous: 1 as never }),
      refusal(/synchronous must be "normal" or "full", got 1$/),
    );
  });

  it("a schedule's fields", async () => {
    assert.throws(() => checkPolicies({ maxBackfill: '5' as never }, 'x'), refusal(/maxBackfill: expected .* got "5"$/));
    assert.throws(() => checkPolicies({ priority: { p: 1 } as never }, 'x'), refusal(/priority: expected .* got \{"p":1\}$/));
    assert.throws(() => checkPolicies({ catchUpMs: '60000' as never }, 'x'), refusal(/catchUpMs: expected .* got "60000"$/));
    const b = guardBroker(new SqliteBroker({ path: ':memory:' }));
    try {
      const def = { id: 'ok', queue: 'q', task: 't', spec: '{}', input: '{}', options: '{}', hash: 'h', version: 1, next: 1 };
      await assert.rejects(b.upsertSchedule({ ...def, next: '1' as never }, Date.now()), refusal(/next must be .* got "1"$/));
      await assert.rejects(b.upsertSchedule({ ...def, version: {} as never }, Date.now()), refusal(/version must be .* got \{\}$/));
    } finally {
      await b.close();
    }
  });
});
