// Trigger and backfill (src/schedule/manage.ts) of a schedule whose task has flow-control limits:
// with the task's definition the runs carry its flow spec; without it (flowOf absent, or null for
// the task) they are refused when the limits are known, recorded with the schedule or seen on its
// last run, and made as before when nothing says so.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { FlowSpec, ScheduleDefinition } from '../../src/broker/types.ts';
import { ScheduleLimitsError } from '../../src/core/errors.ts';
import { newRunId } from '../../src/core/ids.ts';
import { backfillSchedule, type FlowOf, triggerSchedule } from '../../src/schedule/manage.ts';
import { limitsRecorded, scheduleDefinition } from '../../src/schedule/plan.ts';
import { compileSchedule } from '../../src/schedule/spec.ts';
import { DEFAULT_POLICIES } from '../../src/schedule/plan.ts';
import { memoryBroker } from '../../src/testing/index.ts';
import { ScheduleFirer } from '../../src/worker/schedules.ts';
import { quietLogger } from '../fixtures/brokers.ts';

const FLOW: FlowSpec = { group: 'sync', key: 'acme', concurrency: 1 };
const known: FlowOf = (task) => (task === 'sync' ? FLOW : null);
const unknown: FlowOf = () => null;

function definition(id: string, limits: boolean, now: number): ScheduleDefinition {
  const schedule = compileSchedule({ every: '1h' }, id);
  return scheduleDefinition(
    { id, queue: 'q', task: 'sync', schedule, input: '{"tenant":"acme"}', policies: DEFAULT_POLICIES, version: 1, limits },
    now,
  );
}

describe('schedule runs of a task with limits', () => {
  const broker = memoryBroker();
  after(() => broker.close());

  it('records the limits in the stored options, outside the policies a user gives', () => {
    const now = Date.now();
    assert.equal(limitsRecorded(definition('a', true, now)), true);
    assert.equal(limitsRecorded(definition('a', false, now)), false);
    assert.equal(JSON.parse(definition('a', true, now).options).limits, true);
    assert.equal('limits' in JSON.parse(definition('a', false, now).options), false, 'unchanged for a task without limits');
  });

  it('recorded: refused without the definition (nothing created), under the limits with it', async () => {
    const now = Date.now();
    await broker.upsertSchedule(definition('recorded', true, now), now);
    const rec = (await broker.getSchedule('q', 'recorded'))!;
    for (const flowOf of [undefined, unknown]) {
      await assert.rejects(
        triggerSchedule(broker, rec, now, flowOf),
        (e: unknown) => e instanceof ScheduleLimitsError && e.task === 'sync',
      );
      await assert.rejects(
        backfillSchedule(broker, rec, now - 3 * 3600_000, now, now, 1000, flowOf, 'Do this.'),
        /nothing was created\. Do this\.$/,
      );
    }
    assert.equal((await broker.counts(['q'])).q?.queued ?? 0, 0);
    const r = await triggerSchedule(broker, rec, now, known);
    assert.deepEqual((await broker.getRun(r.id))?.flow, { group: 'sync', key: 'acme' });
  });

  it('not recorded (stored by an older version, say) but seen on its last run: refused too; neither: made without limits', async () => {
    const now = Date.now();
    for (const id of ['seen', 'plain']) {
      const def = definition(id, false, now);
      await broker.upsertSchedule(def, now);
      const at = def.next!;
      const run = {
        id: newRunId('q', now),
        task: 'sync',
        queue: 'q',
        input: def.input,
        priority: 0,
        runAt: at,
        idempotencyKey: `schedule:${id}:${at}`,
        schedule: { id, at, backfilled: false },
        ...(id === 'seen' ? { flow: FLOW } : {}),
      };
      const out = await broker.fireSchedule({
        queue: 'q',
        id,
        hash: def.hash,
        expect: at,
        next: at + 3600_000,
        runs: [run],
        missed: 0,
        now: at,
      });
      assert.equal(out.outcome, 'fired');
    }
    const seen = (await broker.getSchedule('q', 'seen'))!;
    await assert.rejects(triggerSchedule(broker, seen, now), ScheduleLimitsError);
    const plain = (await broker.getSchedule('q', 'plain'))!;
    const r = await triggerSchedule(broker, plain, now);
    assert.equal((await broker.getRun(r.id))?.flow, undefined);
  });

  it("a worker's fire step: a worker that does not define the task leaves a schedule with limits to one that does", async () => {
    const now = Date.now();
    const def = definition('fired', true, now - 2 * 3600_000);
    await broker.upsertSchedule({ ...def, next: now - 1000 }, now);
    const rec = async () => (await broker.getSchedule('q', 'fired'))!;
    const without = new ScheduleFirer({ broker, queues: ['q'], logger: quietLogger, flowOf: unknown });
    assert.equal(await without.fire(await rec(), now), 'skipped', 'not fired where the task is not defined');
    assert.equal((await broker.counts(['q'])).q?.scheduled ?? 0, 0);
    assert.equal((await rec()).next, now - 1000, 'still due, for a worker that defines the task');
    const withTask = new ScheduleFirer({ broker, queues: ['q'], logger: quietLogger, flowOf: known });
    assert.equal(await withTask.fire(await rec(), now), 'fired');
    const page = await broker.listRuns({ queue: 'q', limit: 100 });
    const fired = page.runs.filter((r) => r.schedule?.id === 'fired');
    assert.equal(fired.length, 1);
    assert.deepEqual(fired[0]!.flow, { group: 'sync', key: 'acme' }, "under its task's limits");
  });
});
