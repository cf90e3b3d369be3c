// The broker guard (src/broker/shared/guard.ts): what every caller above the brokers goes through.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { guardBroker, isGuarded, unguarded } from '../../src/broker/shared/guard.ts';
import { SqliteBroker } from '../../src/broker/sqlite/sqlite-broker.ts';
import type { Broker, BrokerInspector } from '../../src/broker/types.ts';
import { BrokerUnavailableError, ConfigError, RunNotFoundError } from '../../src/core/errors.ts';
import { Errand } from '../../src/errand.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { tempDir } from '../helpers.ts';

/** A broker whose every method does what `behave` says; records the arguments it got. */
function fakeBroker(behave: (method: string) => unknown, inspector = false): { broker: Broker; calls: [string, unknown[]][] } {
  const calls: [string, unknown[]][] = [];
  const methods = [
    'enqueue',
    'reserve',
    'settle',
    'renew',
    'release',
    'progress',
    'getRun',
    'cancel',
    'retry',
    'counts',
    'prune',
    'waitForWork',
    'watch',
    'ping',
    'close',
  ];
  if (inspector) methods.push('listRuns', 'pause', 'purge', 'retryFailed', 'listWorkers');
  const broker: Record<string, unknown> = { kind: 'sqlite', maxLeaseLosses: 3, onCancel: () => () => {} };
  for (const m of methods) {
    broker[m] = (...args: unknown[]) => {
      calls.push([m, args]);
      return behave(m);
    };
  }
  return { broker: broker as unknown as Broker, calls };
}

const req = { workerId: 'w', queues: ['default'], max: 1, leaseMs: 1000, now: 1000 };

describe('broker guard', () => {
  test('a failure that is not an Errand error becomes BrokerUnavailableError, with the original as its cause', async () => {
    const cause = new Error('SQLITE_IOERR: disk I/O error');
    const { broker } = fakeBroker(() => Promise.reject(cause));
    const g = guardBroker(broker);
    for (const call of [() => g.reserve(req), () => g.settle('w', [], 1), () => g.getRun('q.x'), () => g.counts(), () => g.ping()]) {
      await assert.rejects(call(), (err: unknown) => {
        assert.ok(err instanceof BrokerUnavailableError, String(err));
        assert.equal(err.cause, cause);
        assert.match(err.message, /disk I\/O error/);
        return true;
      });
    }
  });

  test('a synchronous throw is mapped too, and never escapes as a throw', async () => {
    const { broker } = fakeBroker(() => {
      throw new TypeError('boom');
    });
    const g = guardBroker(broker);
    const p = g.reserve(req);
    await assert.rejects(p, BrokerUnavailableError);
    await assert.rejects(g.cancel('q.x', 1), BrokerUnavailableError);
  });

  test('Errand errors pass as they are', async () => {
    const own = new RunNotFoundError('q.x');
    const { broker } = fakeBroker(() => Promise.reject(own));
    const g = guardBroker(broker);
    await assert.rejects(g.getRun('q.x'), (err) => err === own);
    await assert.rejects(g.reserve(req), (err) => err === own);
  });

  test('now: rounded down when fractional, a ConfigError naming the method when not a finite number (the broker is not called)', async () => {
    const { broker, calls } = fakeBroker(() => Promise.resolve([]));
    const g = guardBroker(broker);
    await g.enqueue([], 1000.7);
    await g.reserve({ ...req, now: 2000.5 });
    await g.settle('w', [], 3000.9);
    assert.deepEqual(
      calls.map(([m, a]) => [m, m === 'reserve' ? (a[0] as typeof req).now : a[a.length - 1]]),
      [
        ['enqueue', 1000],
        ['reserve', 2000],
        ['settle', 3000],
      ],
    );
    calls.length = 0;
    await assert.rejects(g.enqueue([], Number.NaN), (e: unknown) => e instanceof ConfigError && /enqueue: now/.test(e.message));
    await assert.rejects(g.reserve({ ...req, now: Number.POSITIVE_INFINITY }), /reserve: now/);
    await assert.rejects(g.settle('w', [], 'soon' as unknown as number), /settle: now/);
    await assert.rejects(g.cancel('q.x', undefined as unknown as number), ConfigError);
    assert.deepEqual(calls, [], 'no call reached the broker');
  });

  test('queue names: reserve and waitForWork refuse an invalid one; purge and retryFailed of one answer 0 without a call', async () => {
    const { broker, calls } = fakeBroker(() => Promise.resolve(5), true);
    const g = guardBroker(broker) as Broker & BrokerInspector;
    await assert.rejects(
      g.reserve({ ...req, queues: ['ok', 'not a queue'] }),
      (e: unknown) => e instanceof ConfigError && /not a queue/.test(e.message),
    );
    await assert.rejects(g.waitForWork(['{bad}'], null, new AbortController().signal), ConfigError);
    await assert.rejects(g.pause('a b'), ConfigError);
    assert.equal(await g.purge('a b', 1), 0);
    assert.equal(await g.retryFailed('', undefined, 1), 0);
    assert.deepEqual(calls, []);
    assert.equal(await g.purge('emails', 1), 5);
  });

  test("a broker that does not say its maxLeaseLosses (the workers' last-chance threshold) is refused; one that does is passed on", async () => {
    const { broker } = fakeBroker(() => Promise.resolve());
    assert.equal(guardBroker(broker).maxLeaseLosses, 3);
    for (const bad of [undefined, 0, 2.5, '3']) {
      assert.throws(
        () => guardBroker({ ...broker, maxLeaseLosses: bad } as unknown as Broker),
        (err: Error) =>
          err instanceof ConfigError &&
          err.message ===
            `The sqlite broker: maxLeaseLosses (how many lost leases fail a run, which workers must know) must be a positive integer, got ${bad === '3' ? '"3"' : String(bad)}`,
      );
    }
    // Through the app: its first broker call says so.
    const app = new Errand({ broker: { ...broker, maxLeaseLosses: undefined } as unknown as Broker, logger: quietLogger });
    await assert.rejects(app.broker(), /maxLeaseLosses .* must be a positive integer, got undefined/);
  });

  test('inspection methods exist on the guard only when the broker has them', () => {
    const plain = guardBroker(fakeBroker(() => Promise.resolve()).broker) as Partial<BrokerInspector>;
    assert.equal(typeof plain.listRuns, 'undefined');
    const full = guardBroker(fakeBroker(() => Promise.resolve(), true).broker) as Partial<BrokerInspector>;
    assert.equal(typeof full.listRuns, 'function');
    assert.equal(typeof full.pause, 'function');
  });

  test("the app's broker() is guarded, once; unguarded() gives the broker back", async () => {
    const sqlite = new SqliteBroker({ path: join(tempDir('errand-guard'), 'e.db') });
    const app = new Errand({ broker: sqlite, logger: quietLogger });
    try {
      const b = await app.broker();
      assert.ok(isGuarded(b));
      assert.equal(guardBroker(b), b, 'guarding twice is a no-op');
      assert.equal(unguarded(b), sqlite);
      assert.equal(b.kind, 'sqlite');
      await b.ping();
    } finally {
      await app.close();
    }
    // Closed: the SQLite broker's own BrokerUnavailableError passes through.
    await assert.rejects(guardBroker(sqlite).ping(), BrokerUnavailableError);
  });
});

describe('the guard checks schedule calls for every broker', () => {
  test('bad ids, queues, times and definitions are refused as ConfigError naming the field; nothing is stored', async () => {
    const raw = new SqliteBroker({ path: join(tempDir('errand-guard-sched'), 'g.db') });
    const b = guardBroker(raw);
    const def = { id: 'ok', queue: 'q', task: 't', spec: '{}', input: '{}', options: '{}', hash: 'h', version: 1, next: 1 };
    const refused = async (p: Promise<unknown>, re: RegExp) => {
      await assert.rejects(p, (err: unknown) => err instanceof ConfigError && re.test(err.message));
    };
    await refused(b.upsertSchedule({ ...def, id: 'has space' }, Date.now()), /schedule id "has space" is invalid/);
    await refused(b.upsertSchedule({ ...def, queue: 'bad queue!' }, Date.now()), /queue name/);
    await refused(
      b.upsertSchedule({ ...def, version: Number.NaN }, Date.now()),
      /version must be an integer from 0 to 9007199254740991 .*, got NaN$/,
    );
    for (const version of [1e300, 1.5, -1, 2 ** 53]) {
      await refused(b.upsertSchedule({ ...def, version }, Date.now()), /version must be an integer from 0 to 9007199254740991/);
    }
    await refused(b.upsertSchedule({ ...def, spec: 5 as unknown as string }, Date.now()), /spec must be a string/);
    await refused(b.upsertSchedule(def, Number.NaN), /now must be a finite number/);
    const fire = { queue: 'q', id: 'ok', hash: 'h', expect: 1, next: 2, runs: [], missed: 0, now: Date.now() };
    await refused(b.fireSchedule({ ...fire, expect: Number.NaN }), /expect/);
    await refused(
      b.fireSchedule({ ...fire, runs: [{ id: 'x.1', queue: 'other', task: 't', input: '{}', priority: 0, runAt: 1 }] }),
      /not the schedule's queue/,
    );
    await refused(b.fireSchedule({ ...fire, overlap: 'sometimes' as never }), /overlap must be one of allow, skip, cancel, buffer/);
    await refused(b.getSchedule('q', ''), /schedule id/);
    await refused(b.pauseSchedule('bad queue!', 'ok', true, Date.now()), /queue name/);
    await refused(b.dueSchedules(['bad queue!'], Date.now(), 10), /queue name/);
    assert.deepEqual(await raw.listSchedules(), []);
    await b.close();
  });
});

describe('broker errors in words', () => {
  test("ioredis's 'max retries per request' is said as a call cut off by a lost connection", async () => {
    const { asBrokerError } = await import('../../src/broker/shared/checks.ts');
    // ioredis does not export the class: an error of its name and words.
    const cut = Object.assign(
      new Error('Reached the max retries per request limit (which is 0). Refer to "maxRetriesPerRequest" option for details.'),
      {
        name: 'MaxRetriesPerRequestError',
      },
    );
    const e = asBrokerError(cut, 'redis');
    assert.ok(e instanceof BrokerUnavailableError);
    assert.equal(
      e.message,
      'The redis broker failed: the connection was lost while the call was on its way, so it may or may not have been applied (an enqueue with an idempotency key is safe to repeat)',
    );
    assert.equal(asBrokerError(new Error('boom'), 'redis').message, 'The redis broker failed: boom');
  });
});
