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
import { timeOfRunId } from '../../core/ids.ts';
import { DAY, ownRetention } from '../shared/options.ts';
import { checkWorkflow, POLICY_CODE, POLICY_OF_CODE } from '../shared/workflow.ts';
import type {
  Dependency,
  NewWorkflow,
  RunRecord,
  SpawnSettlement,
  WorkflowCancelOutcome,
  WorkflowCreated,
  WorkflowEdge,
  WorkflowRecord,
} from '../types.ts';
import { decodeRun, RID_LENGTH, splitRunId } from './codec.ts';
import { type RedisCore, time } from './core.ts';
import { runScript } from './scripts.ts';

const MODE_CODE: Readonly<Record<string, string>> = { given: '', value: 'v', list: 'l', object: 'o' };
const ridOf = (id: string) => id.slice(id.length - RID_LENGTH);

export async function createWorkflow(c: RedisCore, wf: NewWorkflow, now: number): Promise<WorkflowCreated> {
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
  const args: (string | number)[] = [k.base, now, wf.id];
  for (const run of wf.runs) {
    const deps = depLines(run.dependsOn);
    const runAt = Math.floor(run.runAt);
    args.push(
      ridOf(run.id),
      run.task,
      run.input,
      Math.trunc(run.priority || 0),
      Number.isFinite(runAt) ? runAt : now,
      timeOfRunId(run.id) === now ? '' : now,
      run.traceparent ?? '',
      ownRetention(run.cancelledRetentionMs) ?? c.cancelledRetentionMs,
      MODE_CODE[run.inputFrom ?? 'given'] ?? '',
      deps,
      run.idempotencyKey ?? '',
      Math.max(1, Math.floor(run.idempotencyTtl ?? DAY)),
    );
  }
  const redis = await c.ready();
  if (!c.knows(queue)) await c.remember([queue]);
  const reply = (await runScript(redis, 'wfcreate', [`${k.base}wf:${ridOf(wf.id)}`], args)) as unknown[];
  const code = Number(reply?.[0]);
  if (code === -1)
    throw new ConfigError(`createWorkflow: run ${k.id(String(reply[1]))} of workflow ${wf.id} exists already (make new ids with newRunId)`);
  if (code === -2) {
    const run = k.id(String(reply[1]));
    const key = wf.runs.find((r) => r.id === run)?.idempotencyKey ?? '';
    return { id: wf.id, created: false, held: { run, key, by: k.id(String(reply[2])) } };
  }
  return { id: wf.id, created: code === 1 };
}

/** A run's dependencies as the D field stores them: one line each, `rid TAB policy TAB name as JSON`. */
function depLines(deps: readonly Dependency[] | undefined): string {
  return (deps ?? [])
    .map((d) => `${ridOf(d.id)}\t${POLICY_CODE[d.onFailure ?? 'cancel']}\t${d.name === undefined ? '' : JSON.stringify(d.name)}`)
    .join('\n');
}

/**
 * The payload of a spawn settlement (`w` in settleItems, lua/common.lua): JSON with `m` how the
 * result is built (v, l, o), `d` the awaited runs (lines as D), `r` the runs, each
 * [rid, task, input, priority, runAt, traceparent, retention once cancelled, inputFrom code, D lines].
 */
export function spawnPayload(s: SpawnSettlement, retention: number): string {
  return JSON.stringify({
    m: MODE_CODE[s.resultFrom],
    d: depLines(s.awaits),
    r: s.runs.map((run) => [
      ridOf(run.id),
      run.task,
      run.input,
      String(Math.trunc(run.priority || 0)),
      String(Number.isFinite(run.runAt) ? Math.floor(run.runAt) : 0),
      run.traceparent ?? '',
      String(ownRetention(run.cancelledRetentionMs) ?? retention),
      MODE_CODE[run.inputFrom ?? 'given'] ?? '',
      depLines(run.dependsOn),
    ]),
  });
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
    // D: its dependencies; A (a run that spawned runs): a head line, then the runs it awaits.
    const awaited = (h.A ?? '').split('\n').slice(1);
    for (const line of [...(h.D ?? '').split('\n'), ...awaited]) {
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
