/**
 * The one layout of a new run's script arguments (src/broker/redis/run-args.ts): the builders give
 * as many values as the scripts step by (enqueue.lua, schedfire.lua: 14 a run; wfcreate.lua and a
 * spawn's runs: those 14 and a workflow run's 2), every field of a run included. No Redis needed.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { pushRunArgs, pushWorkflowRunArgs, RUN_ARGS, WORKFLOW_RUN_ARGS } from '../../../src/broker/redis/run-args.ts';
import type { NewRun, NewWorkflowRun } from '../../../src/broker/types.ts';
import { newRunId } from '../../../src/core/ids.ts';

const lua = (name: string) => readFileSync(new URL(`../../../src/broker/redis/lua/${name}.lua`, import.meta.url), 'utf8');

describe('redis run-args: one layout of a new run for every creating script', () => {
  const now = 1_800_000_000_000;
  const full: NewRun = {
    id: newRunId('q', now - 5),
    task: 't',
    queue: 'q',
    input: '{"a":1}',
    priority: 3,
    runAt: now + 1000,
    traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    cancelledRetentionMs: 5000,
    flow: { group: 'g', key: 'k|1', concurrency: 2, groupConcurrency: 4, rate: { interval: 100, burst: 2 }, weight: 3 },
    schedule: { id: 's', at: now, backfilled: false },
    startBy: now + 60_000,
    debounce: { key: 'd', maxAt: null },
  };

  it('pushRunArgs gives RUN_ARGS values, none of them empty for a run with every field', () => {
    const args: (string | number)[] = [];
    pushRunArgs(args, full, 'RID', now);
    assert.equal(args.length, RUN_ARGS);
    // idempotency key and its ttl: none here ('' and 0); everything else is given.
    assert.deepEqual(
      args.map((v, i) => (v === '' ? i : -1)).filter((i) => i >= 0),
      [6],
    );
    assert.equal(args[9], 5000, 'its own retention once cancelled');
    assert.equal(args[10], 'g|2|4|100,2||3|k|1', 'the flow spec, its key last');
  });

  it('pushWorkflowRunArgs gives WORKFLOW_RUN_ARGS values: the same 14, the retention always given, then inputFrom and dependencies', () => {
    const run: NewWorkflowRun = {
      id: newRunId('q', now),
      task: 't',
      queue: 'q',
      input: 'null',
      priority: 0,
      runAt: now,
      inputFrom: 'list',
    };
    const args: (string | number)[] = [];
    pushWorkflowRunArgs(args, run, 'RID', now, 60_000, 'DEP\tc\t');
    assert.equal(args.length, WORKFLOW_RUN_ARGS);
    const plain: (string | number)[] = [];
    pushRunArgs(plain, run, 'RID', now, 60_000);
    assert.deepEqual(args.slice(0, RUN_ARGS), plain);
    assert.equal(args[9], 60_000, "the broker's retention once cancelled, stored with a workflow's run");
    assert.deepEqual(args.slice(RUN_ARGS), ['l', 'DEP\tc\t']);
  });

  it('the scripts step through their ARGV by these counts', () => {
    assert.match(lua('enqueue'), new RegExp(`^for j = 3, #ARGV, ${RUN_ARGS} do$`, 'm'));
    assert.match(lua('schedfire'), new RegExp(`^local RUN_ARGS = ${RUN_ARGS} `, 'm'));
    const wfcreate = lua('wfcreate');
    assert.match(wfcreate, new RegExp(`^local last = 5 \\+ ${WORKFLOW_RUN_ARGS} \\* tonumber\\(ARGV\\[5\\]\\)$`, 'm'));
    assert.equal([...wfcreate.matchAll(new RegExp(`^for j = 6, last, ${WORKFLOW_RUN_ARGS} do$`, 'gm'))].length, 2);
    assert.match(wfcreate, new RegExp(`then ${WORKFLOW_RUN_ARGS} per run`));
  });
});
