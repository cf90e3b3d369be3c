/**
 * Conformance: the errors a broker itself stores on a run (a lease lost too many times, a run
 * stored corrupt) are exactly those of `src/broker/shared/run-errors.ts`, whichever broker stores
 * them: name, reason and message (the Redis broker's Lua scripts included). Called from
 * `brokerConformance` (suite.ts).
 */
import assert from 'node:assert/strict';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, it } from 'node:test';
import { splitRunId } from '../../src/broker/redis/codec.ts';
import { createClient, parseRedisUrl } from '../../src/broker/redis/connection.ts';
import { RUN_ERRORS, runError, runErrorText } from '../../src/broker/shared/run-errors.ts';
import type { Broker, BrokerOptions, NewWorkflowRun, RunError } from '../../src/broker/types.ts';
import { newRunId } from '../../src/core/ids.ts';
import { within } from '../helpers.ts';
import type { ConformanceOptions } from './context.ts';

const Q = 'runerr';
/** A second queue (another slot on Redis Cluster) for a workflow over two queues. */
const Q2 = 'runerrx';
const TEST_TIMEOUT_MS = 60_000;

/**
 * `connection`: how the test reaches the storage of a broker to corrupt a run behind its back; a
 * broker without one must name its documented difference `editBehindBroker` (the test is then
 * skipped with that sentence), else the test fails.
 */
export type RunErrorConformanceOptions = Pick<ConformanceOptions, 'connection' | 'differences'>;

/** Makes the stored run `id` unreadable behind the broker's back: its input removed (Redis) or made a blob (SQLite). */
async function corruptBehindBroker(broker: Broker, id: string, connection: { url: string; options?: Record<string, unknown> }) {
  if (broker.kind === 'sqlite') {
    const db = new DatabaseSync(connection.url.replace(/^sqlite:/, ''), { timeout: 5000 });
    try {
      db.prepare('UPDATE runs SET input = ? WHERE id = ?').run(new Uint8Array([0xff, 0x00]), id);
    } finally {
      db.close();
    }
    return;
  }
  const parts = splitRunId(id);
  assert.ok(parts, `not a run id: ${id}`);
  const prefix = String(connection.options?.prefix ?? 'errand');
  const redis = createClient(parseRedisUrl(connection.url), 'main');
  try {
    await redis.connect();
    await redis.hdel(`${prefix}:{${parts.queue}}:r:${parts.rid}`, 'i');
  } finally {
    redis.disconnect();
  }
}

function storedError(text: string | undefined): RunError {
  assert.ok(text !== undefined, 'the run should carry an error');
  return JSON.parse(text) as RunError;
}

export function runErrorConformance(makeBroker: (opts?: BrokerOptions) => Promise<Broker>, options: RunErrorConformanceOptions = {}): void {
  describe('run errors stored by the broker (one definition, src/broker/shared/run-errors.ts)', () => {
    let opened: Broker[] = [];
    const open = async (opts?: BrokerOptions): Promise<Broker> => {
      const b = await makeBroker(opts);
      opened.push(b);
      return b;
    };
    afterEach(async () => {
      const brokers = opened;
      opened = [];
      await Promise.all(brokers.map((b) => within(b.close(), 5_000, 'broker close()')));
    });

    it('a lease lost maxLeaseLosses times: LeaseLostError, reason lease_lost, the one message, as that exact text', {
      timeout: TEST_TIMEOUT_MS,
    }, async () => {
      const b = await open({ maxLeaseLosses: 1 });
      const t0 = Date.now();
      const id = newRunId(Q, t0);
      await b.enqueue([{ id, task: 'conformance.echo', queue: Q, input: '{}', priority: 0, runAt: t0 }], t0);
      const first = await b.reserve({ workerId: 'w1', queues: [Q], max: 1, leaseMs: 1000, now: t0 });
      assert.deepStrictEqual(
        first.runs.map((r) => r.id),
        [id],
      );
      // The lease expires; the next reserve recovers the run and, at the first loss, fails it.
      const second = await b.reserve({ workerId: 'w2', queues: [Q], max: 1, leaseMs: 1000, now: t0 + 5000 });
      assert.deepStrictEqual(second.runs, [], 'the run is not handed out again');
      const rec = await b.getRun(id);
      assert.equal(rec?.state, 'failed');
      const err = storedError(rec?.error);
      assert.deepStrictEqual(err, runError('leaseLost', {}));
      assert.equal(err.name, 'LeaseLostError');
      assert.equal(err.reason, 'lease_lost');
      assert.equal(err.message, RUN_ERRORS.leaseLost.message);
      assert.equal(rec?.error, runErrorText('leaseLost', {}), 'stored as exactly the text of its definition');
    });

    const cannotEdit = options.differences?.editBehindBroker;
    it('a run stored corrupt: CorruptRunError, reason corrupt, the one message naming the run', {
      timeout: TEST_TIMEOUT_MS,
      ...(cannotEdit ? { skip: cannotEdit } : {}),
    }, async () => {
      const b = await open();
      const connection = options.connection?.(b);
      assert.ok(
        connection,
        'this broker has no `connection` hook to corrupt a run behind its back: give one to brokerConformance, or name its documented difference in `differences.editBehindBroker`',
      );
      const t0 = Date.now();
      const id = newRunId(Q, t0);
      await b.enqueue([{ id, task: 'conformance.echo', queue: Q, input: '{}', priority: 0, runAt: t0 }], t0);
      await corruptBehindBroker(b, id, connection);
      const { runs } = await b.reserve({ workerId: 'w1', queues: [Q], max: 10, leaseMs: 1000, now: t0 + 1 });
      assert.deepStrictEqual(runs, [], 'a corrupt run is never handed out');
      const rec = await b.getRun(id);
      assert.equal(rec?.state, 'failed');
      const err = storedError(rec?.error);
      assert.equal(err.name, 'CorruptRunError');
      assert.equal(err.reason, 'corrupt');
      const prefix = `Run ${id} is stored corrupt: `;
      assert.ok(err.message.startsWith(prefix), `message ${JSON.stringify(err.message)} should start with ${JSON.stringify(prefix)}`);
      const why = err.message.slice(prefix.length);
      assert.ok(why.length > 0, 'and say what is wrong');
      assert.deepStrictEqual(err, runError('corrupt', { id, why }), 'nothing else in it');
    });

    it('a step of a workflow failed as corrupt reaches the steps waiting for it, per edge policy (in its queue and another)', {
      timeout: TEST_TIMEOUT_MS,
      ...(cannotEdit ? { skip: cannotEdit } : {}),
    }, async () => {
      const b = await open();
      const connection = options.connection?.(b);
      assert.ok(connection, 'this broker has no `connection` hook to corrupt a run behind its back');
      const t0 = Date.now();
      const run = (queue: string, over: Partial<NewWorkflowRun> = {}): NewWorkflowRun => ({
        id: newRunId(queue, t0),
        task: 'conformance.echo',
        queue,
        input: '{}',
        priority: 0,
        runAt: t0,
        ...over,
      });
      const root = run(Q);
      const cancelled = run(Q, { dependsOn: [{ id: root.id }] });
      const cleanup = run(Q2, { dependsOn: [{ id: root.id, onFailure: 'continue' }], inputFrom: 'list' });
      await b.createWorkflow({ id: newRunId(Q, t0), runs: [root, cancelled, cleanup] }, t0);
      await corruptBehindBroker(b, root.id, connection);
      const first = await b.reserve({ workerId: 'w1', queues: [Q], max: 10, leaseMs: 1000, now: t0 + 1 });
      assert.deepStrictEqual(first.runs, [], 'the corrupt step is not handed out');
      assert.equal(storedError((await b.getRun(root.id))?.error).reason, 'corrupt');
      const dependent = await b.getRun(cancelled.id);
      assert.equal(dependent?.state, 'cancelled', 'its dependent (cancel) is not left waiting');
      assert.equal(storedError(dependent?.error).reason, 'dependency_failed');
      const { runs } = await b.reserve({ workerId: 'w1', queues: [Q2], max: 10, leaseMs: 1000, now: t0 + 2 });
      assert.deepStrictEqual(
        runs.map((r) => [r.id, r.input]),
        [[cleanup.id, '[null]']],
        'its dependent in another queue (continue) runs',
      );
    });
  });
}
