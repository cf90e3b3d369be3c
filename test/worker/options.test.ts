// A worker's options refused when it is made, each naming the option and the value as given, with
// the bounds `errand worker` uses too (MIN_LEASE_MS, MAX_CONCURRENCY, Node's longest timer).
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { z } from 'zod';
import { ConfigError, createErrand } from '../../src/index.ts';
import { MAX_CONCURRENCY, MIN_LEASE_MS } from '../../src/worker/options.ts';
import { quietLogger } from '../fixtures/brokers.ts';

// Never opened: a worker checks its options when it is made, before it reaches the broker.
const app = createErrand({ broker: 'sqlite:/nonexistent/errand-worker-options.db', logger: quietLogger });
app.task('a', { input: z.object({}), queue: 'qa' }, () => 1);
after(() => app.close());

function refuses(options: Record<string, unknown>, message: string | RegExp): void {
  assert.throws(
    () => app.worker(options as never),
    (err: Error) => {
      assert.ok(err instanceof ConfigError, `${err.name}: ${err.message}`);
      if (typeof message === 'string') assert.equal(err.message, message);
      else assert.match(err.message, message);
      return true;
    },
  );
}

describe('worker options', () => {
  it('an unknown option is named, with what it probably meant', () => {
    refuses({ concurency: 50 }, /^Worker options: "concurency" is not a worker option \(did you mean "concurrency"\? known: queues, /);
    refuses({ graceMs: 50 }, /"graceMs" is not a worker option \(did you mean "shutdownGraceMs"\?/);
  });

  it('queues must be an array of queue names', () => {
    refuses({ queues: 'qa' }, 'Worker option queues must be an array of queue names, got "qa"');
  });

  it("refuses a queue none of the app's tasks uses, as errand worker --queues does: it would fail another service's runs", () => {
    const message =
      'Worker option queues: unknown queue "images": the app\'s tasks use "qa" (a worker would fail the runs of tasks it does not define, so it takes only their queues)';
    refuses({ queues: ['images'] }, message);
    refuses({ queues: ['qa', 'images'] }, message);
    assert.deepEqual(app.worker({ queues: ['qa'] }).queues, ['qa']);
  });

  it('the bounds of errand worker: concurrency 1 to 10000, leaseMs 100 to 2147483647', () => {
    assert.equal(MAX_CONCURRENCY, 10_000);
    assert.equal(MIN_LEASE_MS, 100);
    refuses({ concurrency: 1e9 }, 'Worker option concurrency must be an integer from 1 to 10000, got 1000000000');
    refuses({ concurrency: '5' }, 'Worker option concurrency must be an integer from 1 to 10000, got "5"');
    refuses({ leaseMs: 10 }, 'Worker option leaseMs must be an integer from 100 to 2147483647, got 10');
    refuses({ leaseMs: 2 ** 40 }, 'Worker option leaseMs must be an integer from 100 to 2147483647, got 1099511627776');
    const w = app.worker({ concurrency: MAX_CONCURRENCY, leaseMs: MIN_LEASE_MS });
    assert.equal(w.concurrency, 10_000);
    assert.equal(w.leaseMs, 100);
  });

  it("shutdownGraceMs and stop({ graceMs }): at most Node's longest timer (a longer grace would end at once)", async () => {
    const month = 30 * 24 * 3600_000;
    refuses(
      { shutdownGraceMs: month },
      `Worker option shutdownGraceMs must be a non-negative number of milliseconds up to 2147483647, got ${month}`,
    );
    refuses(
      { shutdownGraceMs: '10s' },
      'Worker option shutdownGraceMs must be a non-negative number of milliseconds up to 2147483647, got "10s"',
    );
    const w = app.worker({});
    await assert.rejects(w.stop({ graceMs: month }), (err: Error) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.message, `stop(): graceMs must be a non-negative number of milliseconds up to 2147483647, got ${month}`);
      return true;
    });
  });

  it('id and schedules', () => {
    refuses({ id: '' }, 'Worker option id must be a non-empty string, got ""');
    refuses({ schedules: 'no' }, 'Worker option schedules must be true or false, got "no"');
  });
});
