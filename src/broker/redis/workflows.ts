/**
 * The Redis broker's workflows (docs/workflows.md): creation (`lua/wfcreate.lua`), cancel of a
 * workflow (`lua/wfcancel.lua`) and its record. Fan-in and failure propagation run inside the
 * settle, reserve and cancel scripts (`wfResolve` in lua/common.lua).
 *
 * A workflow's runs must all be in one queue here: its keys then share one hash tag, so every step
 * is one script on one slot (Redis Cluster included). Steps on several queues need a relay between
 * slots, which is not built yet: such a workflow is refused with a ConfigError saying so.
 */
import { ConfigError } from '../../core/errors.ts';
import { ownRetention } from '../shared/options.ts';
import { checkWorkflow, POLICY_CODE, POLICY_OF_CODE } from '../shared/workflow.ts';
import type { NewWorkflow, RunRecord, WorkflowCancelOutcome, WorkflowEdge, WorkflowRecord } from '../types.ts';
import { decodeRun, RID_LENGTH, splitRunId } from './codec.ts';
import { type RedisCore, time } from './core.ts';
import { pushRunArgs } from './run-args.ts';
import { runScript } from './scripts.ts';

const MODE_CODE: Readonly<Record<string, string>> = { given: '', value: 'v', list: 'l', object: 'o' };

export async function createWorkflow(c: RedisCore, wf: NewWorkflow, now: number): Promise<{ id: string; created: boolean }> {
  now = time(now, 'now');
  const queues = checkWorkflow(wf);
  if (queues.length > 1) {
    throw new ConfigError(
      `createWorkflow: workflow ${wf.id} has runs in the queues ${queues.join(', ')}; the Redis broker keeps a workflow's runs in one queue ` +
        '(a dependency between queues needs a relay between Redis Cluster slots, not built yet: see docs/workflows.md)',
    );
  }
  const queue = queues[0] as string;
  const k = c.k(queue);
  const ridOf = (id: string) => id.slice(id.length - RID_LENGTH);
  const args: (string | number)[] = [k.base, now, wf.id];
  for (const run of wf.runs) {
    const deps = (run.dependsOn ?? [])
      .map((d) => `${ridOf(d.id)}\t${POLICY_CODE[d.onFailure ?? 'cancel']}\t${d.name === undefined ? '' : JSON.stringify(d.name)}`)
      .join('\n');
    // A workflow's run always stores its retention once cancelled (C): a failed dependency's skip uses it.
    pushRunArgs(
      args,
      { ...run, cancelledRetentionMs: ownRetention(run.cancelledRetentionMs) ?? c.cancelledRetentionMs },
      ridOf(run.id),
      now,
    );
    args.push(MODE_CODE[run.inputFrom ?? 'given'] ?? '', deps);
  }
  const redis = await c.ready();
  if (!c.knows(queue)) await c.remember([queue]);
  const reply = (await runScript(redis, 'wfcreate', [`${k.base}wf:${ridOf(wf.id)}`], args)) as unknown[];
  const code = Number(reply?.[0]);
  if (code === -1)
    throw new ConfigError(`createWorkflow: run ${k.id(String(reply[1]))} of workflow ${wf.id} exists already (make new ids with newRunId)`);
  return { id: wf.id, created: code === 1 };
}

export async function getWorkflow(c: RedisCore, id: string): Promise<WorkflowRecord | null> {
  const parts = splitRunId(id);
  if (!parts) return null;
  const k = c.k(parts.queue);
  const redis = await c.ready();
  const head = await redis.hmget(`${k.base}wf:${parts.rid}`, 't', 'r');
  if (head[0] === null || head[1] === null) return null;
  const rids = (head[1] ?? '').split(',').filter(Boolean);
  const hashes = await Promise.all(rids.map((rid) => redis.hgetall(k.run(rid)).catch(() => ({}) as Record<string, string>)));
  const runs: RunRecord[] = [];
  const edges: WorkflowEdge[] = [];
  rids.forEach((rid, i) => {
    const h = hashes[i] as Record<string, string>;
    if (Object.keys(h).length === 0) return;
    runs.push(decodeRun(k.id(rid), parts.queue, k.run(rid), h));
    for (const line of (h.D ?? '').split('\n')) {
      const [dep, pol, name] = line.split('\t');
      if (!dep) continue;
      const edge: WorkflowEdge = { from: k.id(dep), to: k.id(rid), onFailure: POLICY_OF_CODE[pol ?? 'c'] ?? 'cancel' };
      if (name) {
        try {
          edge.name = String(JSON.parse(name));
        } catch {
          // a garbled name is left out
        }
      }
      edges.push(edge);
    }
  });
  edges.sort((a, b) => (a.to < b.to ? -1 : a.to > b.to ? 1 : 0));
  return { id, createdAt: Number(head[0]) || 0, runs, edges };
}

export async function cancelWorkflow(c: RedisCore, id: string, now: number): Promise<WorkflowCancelOutcome> {
  now = time(now, 'now');
  const parts = splitRunId(id);
  if (!parts) return { outcome: 'not_found' };
  const k = c.k(parts.queue);
  const redis = await c.ready();
  const reply = (await runScript(
    redis,
    'wfcancel',
    [`${k.base}wf:${parts.rid}`],
    [k.base, now, c.cancelledRetentionMs, c.eventsChannel, c.cancelsChannel, k.idPrefix],
  )) as unknown[];
  const n = Number(reply?.[0]);
  return n < 0 ? { outcome: 'not_found' } : { outcome: 'cancelled', runs: n };
}
