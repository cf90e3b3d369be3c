/**
 * The Redis broker's workflows (docs/workflows.md): creation (`lua/wfcreate.lua`, and
 * `lua/wfmulti.lua` around it for a workflow over several queues), cancel of a workflow
 * (`lua/wfcancel.lua`, once per queue) and its record. Fan-in and failure propagation run inside
 * the settle, reserve, cancel and purge scripts (`wfResolve` in lua/workflow.lua).
 *
 * A workflow's runs in one queue share one hash tag: every step is one script on one slot (Redis
 * Cluster included), and creation is one script when it fits one call (CHUNK_RUNS runs, about
 * CHUNK_BYTES: batches.ts). A workflow over several queues spans slots: an edge between queues goes
 * through the relay (`relay.ts`). Such a workflow, and one too large for one call, is created in
 * several calls framed so that a crash part way never lets a root run while the workflow is half
 * made: begin (wfmulti b: the workflow HASH, pending, on the queue of its id), each queue's runs
 * (wfcreate in calls of a bounded size, roots waiting for '!'), commit (wfmulti g for all but the
 * last CHUNK_RUNS roots, then c: pending cleared and the roots released, those of other queues by
 * relay entries written in the same script), then the relay drained. A crash before the commit
 * leaves a pending workflow whose runs all wait: a resent createWorkflow (same id) completes it,
 * cancelWorkflow ends it, and failing both, the prune sweep (`sweepPending`) does one or the other
 * once the creation is PENDING_GRACE_MS old. The size of a workflow is bounded
 * (MAX_WORKFLOW_RUNS, shared/workflow.ts) by what stays one script: the fan-in into one step, a
 * spawn, a cancel of the workflow.
 */
import { ConfigError } from '../../core/errors.ts';
import { checkWorkflow, POLICY_CODE, POLICY_OF_CODE } from '../shared/workflow.ts';
import type {
  Dependency,
  NewWorkflow,
  NewWorkflowRun,
  RunRecord,
  SpawnSettlement,
  WorkflowCancelOutcome,
  WorkflowCreated,
  WorkflowEdge,
  WorkflowRecord,
} from '../types.ts';
import { decodeRun, RID_LENGTH, splitRunId } from './codec.ts';
import { type RedisCore, time } from './core.ts';
import { CHUNK_RUNS, chunk } from './batches.ts';
import { drainAfter } from './relay.ts';
import { MODE_CODE, pushWorkflowRunArgs } from './run-args.ts';
import { runScript } from './scripts.ts';

/**
 * How old a creation of a workflow over several queues must be before the sweep finishes it for its
 * creator (one that takes longer is taken for dead): a creation takes milliseconds.
 */
export const PENDING_GRACE_MS = 5 * 60_000;

const ridOf = (id: string) => id.slice(id.length - RID_LENGTH);
const queueOf = (id: string) => splitRunId(id)?.queue ?? '';

/**
 * The edges from a run to dependents in other queues, by the dependency's run id: [dependent run
 * id, policy code]. Their we: index lives with the dependency (wfcreate writes it with the run).
 */
function crossEdges(wf: NewWorkflow): Map<string, [string, string][]> {
  const out = new Map<string, [string, string][]>();
  for (const run of wf.runs) {
    for (const d of run.dependsOn ?? []) {
      if (queueOf(d.id) === queueOf(run.id)) continue;
      const list = out.get(d.id);
      const edge: [string, string] = [run.id, POLICY_CODE[d.onFailure ?? 'cancel'] ?? 'c'];
      if (list) list.push(edge);
      else out.set(d.id, [edge]);
    }
  }
  return out;
}

/**
 * The ARGV of wfcreate.lua for `runs`, runs of one queue (`queue`); a run of another queue is named
 * by its id. `multi`: a call of a creation in several calls (begin, these, commit), each root held;
 * the edges from these runs to dependents in other queues (`out`) go with them.
 */
function createArgs(
  c: RedisCore,
  wf: NewWorkflow,
  queue: string,
  runs: readonly NewWorkflowRun[],
  now: number,
  multi: boolean,
  out?: Map<string, [string, string][]>,
) {
  const k = c.k(queue);
  const args: (string | number)[] = [k.base, now, wf.id, multi ? 'm' : '', runs.length];
  for (const run of runs) pushWorkflowRunArgs(args, run, ridOf(run.id), now, c.cancelledRetentionMs, depLines(run.dependsOn, queue));
  for (const run of multi ? runs : []) {
    for (const [dependent, policy] of out?.get(run.id) ?? []) args.push(ridOf(run.id), dependent, policy);
  }
  return { keys: [`${k.base}wf:${ridOf(wf.id)}`], args };
}

/**
 * The runs of one queue split into the calls that create them: at most CHUNK_RUNS runs and about
 * CHUNK_BYTES each (batches.ts), so that no call holds Redis for long (docs/workflows.md, "Limits").
 */
function createChunks(runs: readonly NewWorkflowRun[], out: Map<string, [string, string][]>): NewWorkflowRun[][] {
  return chunk(
    runs,
    (run) =>
      run.input.length + 100 * ((run.dependsOn?.length ?? 0) + (out.get(run.id)?.length ?? 0)) + 200 + (run.idempotencyKey?.length ?? 0),
  );
}

/**
 * A run's dependencies as the D field stores them: one line each, `rid TAB policy TAB name as
 * JSON`; a dependency in another queue than `queue` is named by its run id.
 */
function depLines(deps: readonly Dependency[] | undefined, queue?: string): string {
  return (deps ?? [])
    .map((d) => {
      const ref = queue === undefined || queueOf(d.id) === queue ? ridOf(d.id) : d.id;
      return `${ref}\t${POLICY_CODE[d.onFailure ?? 'cancel']}\t${d.name === undefined ? '' : JSON.stringify(d.name)}`;
    })
    .join('\n');
}

/** The answer to a wfcreate reply -2: the idempotency key of run `rid` of `queue` is held by run `holder`. */
function heldBy(c: RedisCore, wf: NewWorkflow, queue: string, rid: unknown, holder: unknown): WorkflowCreated {
  const run = c.k(queue).id(String(rid));
  const key = wf.runs.find((r) => r.id === run)?.idempotencyKey ?? '';
  return { id: wf.id, created: false, held: { run, key, by: c.k(queue).id(String(holder)) } };
}

function takenError(wf: NewWorkflow, runId: string): ConfigError {
  return new ConfigError(`createWorkflow: run ${runId} of workflow ${wf.id} exists already (make new ids with newRunId)`);
}

export async function createWorkflow(c: RedisCore, wf: NewWorkflow, now: number): Promise<WorkflowCreated> {
  now = time(now, 'now');
  const queues = checkWorkflow(wf);
  const redis = await c.ready();
  const fresh = queues.filter((q) => !c.knows(q));
  if (fresh.length) await c.remember(fresh);
  const out = crossEdges(wf);
  if (queues.length === 1 && createChunks(wf.runs, out).length === 1) {
    // One queue, small enough for one call: one script (the fast path).
    const queue = queues[0] as string;
    const { keys, args } = createArgs(c, wf, queue, wf.runs, now, false);
    const reply = (await runScript(redis, 'wfcreate', keys, args)) as unknown[];
    const code = Number(reply?.[0]);
    if (code === -1) throw takenError(wf, c.k(queue).id(String(reply[1])));
    if (code === -2) return heldBy(c, wf, queue, reply[1], reply[2]);
    return { id: wf.id, created: code === 1 };
  }
  return createFramed(c, wf, queues, out, now);
}

/** The idempotency key of a run of `wf` that a stored run holds (read before a creation in several calls writes anything), or null. */
async function heldBefore(c: RedisCore, wf: NewWorkflow): Promise<WorkflowCreated | null> {
  const redis = await c.ready();
  const keyed = wf.runs.filter((run) => run.idempotencyKey !== undefined);
  const holders = await Promise.all(
    keyed.map(async (run) => {
      const k = c.k(run.queue);
      const holder = await redis.get(`${k.base}ik:${run.task}:${run.idempotencyKey}`);
      return holder && (await redis.exists(k.run(holder))) === 1 ? holder : null;
    }),
  );
  const i = holders.findIndex((h) => h !== null);
  return i < 0 ? null : heldBy(c, wf, (keyed[i] as NewWorkflowRun).queue, ridOf((keyed[i] as NewWorkflowRun).id), holders[i]);
}

/**
 * A workflow over several queues, or one too large for one call (see the header): begin, each
 * queue's runs in calls of a bounded size, commit (the roots released, in calls of CHUNK_RUNS),
 * drain.
 */
async function createFramed(
  c: RedisCore,
  wf: NewWorkflow,
  queues: string[],
  out: Map<string, [string, string][]>,
  now: number,
): Promise<WorkflowCreated> {
  const redis = await c.ready();
  const head = queueOf(wf.id);
  const hk = c.k(head);
  const wfKey = `${hk.base}wf:${ridOf(wf.id)}`;
  const byQueue = new Map<string, NewWorkflowRun[]>(queues.map((q) => [q, []]));
  for (const run of wf.runs) byQueue.get(queueOf(run.id))?.push(run);
  const begun = Number(
    (
      (await runScript(
        redis,
        'wfmulti',
        [wfKey],
        [hk.base, now, 'b', queues.filter((q) => q !== head).join(','), wf.runs.map((r) => r.id).join(',')],
      )) as unknown[]
    )?.[0],
  );
  if (begun === 2) return { id: wf.id, created: false };
  if (begun === 0) {
    // A run id taken (by a run not of this workflow: a creation of the same id at the same time
    // may have made some) refuses the workflow before anything else is written.
    const taken = await Promise.all(
      wf.runs.map(async (r) => {
        const [state, of] = await redis.hmget(c.k(queueOf(r.id)).run(ridOf(r.id)), 's', 'G');
        return state != null && of !== wf.id;
      }),
    );
    const i = taken.indexOf(true);
    const held = i >= 0 ? null : await heldBefore(c, wf);
    if (i >= 0 || held) {
      // Nothing of it is written but the record begun just now: removed.
      await Promise.all([redis.del(wfKey), redis.zrem(`${hk.base}wp`, ridOf(wf.id))]);
      if (held) return held;
      throw takenError(wf, (wf.runs[i] as NewWorkflowRun).id);
    }
  }
  // Each queue's runs, in calls one after another (the queues side by side); a call refused stops its queue.
  const replies = await Promise.all(
    queues.map(async (q) => {
      let reply: unknown[] = [1];
      for (const runs of createChunks(byQueue.get(q) ?? [], out)) {
        const { keys, args } = createArgs(c, wf, q, runs, now, true, out);
        reply = (await runScript(redis, 'wfcreate', keys, args)) as unknown[];
        if (Number(reply?.[0]) < 0) break;
      }
      return { q, reply };
    }),
  );
  const clash = replies.find((r) => Number(r.reply?.[0]) === -1);
  if (clash) {
    // Taken between the check and now: what was made is cancelled (nothing of it has run: every root is held).
    await cancelWorkflow(c, wf.id, now);
    throw takenError(wf, c.k(clash.q).id(String(clash.reply[1])));
  }
  const held = replies.find((r) => Number(r.reply?.[0]) === -2);
  if (held) {
    // A step's idempotency key is held by a stored run: what was made is cancelled (every root is
    // held: nothing of it has run), and the answer names the holder as for one queue.
    await cancelWorkflow(c, wf.id, now);
    return heldBy(c, wf, held.q, held.reply[1], held.reply[2]);
  }
  const roots = wf.runs.filter((r) => (r.dependsOn?.length ?? 0) === 0).map((r) => (queueOf(r.id) === head ? ridOf(r.id) : r.id));
  await commit(c, head, wfKey, roots, now);
  return { id: wf.id, created: true };
}

/**
 * The commit of a creation in several calls (wfmulti.lua): the roots (a rid of queue `queue`, the
 * queue of the workflow's id, or the run id of a root elsewhere) released in calls of CHUNK_RUNS
 * (op g), the last call clearing the pending mark (op c); then this queue's relay drained. A
 * crash part way leaves the workflow pending, every run made: a resend, or the sweep, commits it
 * again (a root released twice is released once).
 */
async function commit(c: RedisCore, queue: string, wfKey: string, roots: readonly string[], now: number): Promise<void> {
  const redis = await c.ready();
  const k = c.k(queue);
  let relay = false;
  for (let i = 0; i + CHUNK_RUNS < roots.length; i += CHUNK_RUNS) {
    const reply = (await runScript(
      redis,
      'wfmulti',
      [wfKey],
      [k.base, now, 'g', c.eventsChannel, k.idPrefix, ...roots.slice(i, i + CHUNK_RUNS)],
    )) as unknown[];
    if (reply?.[1] === 1) relay = true;
  }
  const last = roots.slice(Math.max(0, Math.ceil(roots.length / CHUNK_RUNS) - 1) * CHUNK_RUNS);
  const reply = (await runScript(redis, 'wfmulti', [wfKey], [k.base, now, 'c', c.eventsChannel, k.idPrefix, ...last])) as unknown[];
  if (relay || reply?.[1] === 1) await drainAfter(c, [queue], now);
}

/**
 * The edges into a run stored as hash `h` of queue `queue`: its D lines, and (a run that spawned
 * runs) the runs it awaits, A's lines after its head line.
 */
function edgesOf(c: RedisCore, queue: string, rid: string, h: Record<string, string>, edges: WorkflowEdge[]): void {
  const k = c.k(queue);
  const awaited = (h.A ?? '').split('\n').slice(1);
  for (const line of [...(h.D ?? '').split('\n'), ...awaited]) {
    const [dep, pol, name] = line.split('\t');
    if (!dep) continue;
    const edge: WorkflowEdge = {
      from: dep.length === RID_LENGTH ? k.id(dep) : dep,
      to: k.id(rid),
      onFailure: POLICY_OF_CODE[pol ?? 'c'] ?? 'cancel',
    };
    if (name) {
      try {
        edge.name = String(JSON.parse(name));
      } catch {
        // a garbled name is left out
      }
    }
    edges.push(edge);
  }
}

/**
 * The payload of a spawn settlement (`w` in settleItems, lua/outcomes.lua): JSON with `m` how the
 * result is built (v, l, o), `d` the awaited runs (lines as D), `r` the runs, each the 16 values
 * of a workflow's run (`pushWorkflowRunArgs`), as strings; `retention` the broker's retention
 * once cancelled, `now` the settle's.
 */
export function spawnPayload(s: SpawnSettlement, retention: number, now: number): string {
  return JSON.stringify({
    m: MODE_CODE[s.resultFrom],
    d: depLines(s.awaits),
    r: s.runs.map((run) => {
      const values: (string | number)[] = [];
      pushWorkflowRunArgs(values, run, ridOf(run.id), now, retention, depLines(run.dependsOn));
      return values.map(String);
    }),
  });
}

export async function getWorkflow(c: RedisCore, id: string): Promise<WorkflowRecord | null> {
  const parts = splitRunId(id);
  if (!parts) return null;
  const k = c.k(parts.queue);
  const redis = await c.ready();
  const [createdAt, rids, all] = await redis.hmget(`${k.base}wf:${parts.rid}`, 't', 'r', 'a');
  if (createdAt == null || rids == null) return null;
  // Over several queues: every run id (a); one queue: its rids (r).
  const runIds =
    all != null
      ? all.split(',').filter(Boolean)
      : rids
          .split(',')
          .filter(Boolean)
          .map((rid) => k.id(rid));
  const hashes = await Promise.all(
    runIds.map((rid) => {
      const p = splitRunId(rid);
      return p ? redis.hgetall(c.k(p.queue).run(p.rid)).catch(() => ({}) as Record<string, string>) : ({} as Record<string, string>);
    }),
  );
  const runs: RunRecord[] = [];
  const edges: WorkflowEdge[] = [];
  runIds.forEach((runId, i) => {
    const h = hashes[i] as Record<string, string>;
    const p = splitRunId(runId);
    if (!p || Object.keys(h).length === 0) return;
    const rk = c.k(p.queue);
    runs.push(decodeRun(runId, p.queue, rk.run(p.rid), h));
    edgesOf(c, p.queue, p.rid, h, edges);
  });
  edges.sort((a, b) => (a.to < b.to ? -1 : a.to > b.to ? 1 : 0));
  return { id, createdAt: Number(createdAt) || 0, runs, edges };
}

export async function cancelWorkflow(c: RedisCore, id: string, now: number): Promise<WorkflowCancelOutcome> {
  now = time(now, 'now');
  const parts = splitRunId(id);
  if (!parts) return { outcome: 'not_found' };
  const redis = await c.ready();
  const others = await redis.hget(`${c.k(parts.queue).base}wf:${parts.rid}`, 'q');
  // One script per queue of the workflow (the queue of its id first: it says whether it exists).
  const queues = [parts.queue, ...(others ?? '').split(',').filter(Boolean)];
  let total = 0;
  for (const [i, queue] of queues.entries()) {
    const k = c.k(queue);
    const reply = (await runScript(
      redis,
      'wfcancel',
      [`${k.base}wf:${parts.rid}`],
      [k.base, now, c.cancelledRetentionMs, c.eventsChannel, c.cancelsChannel, k.idPrefix],
    )) as unknown[];
    const n = Number(reply?.[0]);
    if (n < 0 && i === 0) return { outcome: 'not_found' };
    if (n > 0) total += n;
  }
  return { outcome: 'cancelled', runs: total };
}

/**
 * The sweep's part for creations of workflows over several queues cut short (see the header): each
 * pending workflow of `queues` begun PENDING_GRACE_MS before `now` is completed when every one of its
 * runs exists (its roots released, as the commit does), and otherwise undone: what was made is
 * cancelled (`cancelWorkflow`) and the record marked complete. Returns how many it finished.
 */
export async function sweepPending(c: RedisCore, queues: readonly string[], now: number): Promise<number> {
  const redis = await c.ready();
  let done = 0;
  for (const queue of queues) {
    const k = c.k(queue);
    const stale = await redis.zrangebyscore(`${k.base}wp`, '-inf', now - PENDING_GRACE_MS, 'LIMIT', 0, 100);
    for (const wfRid of stale) {
      const wfId = k.id(wfRid);
      const wfKey = `${k.base}wf:${wfRid}`;
      const all = (await redis.hget(wfKey, 'a')) ?? '';
      const runIds = all.split(',').filter(Boolean);
      const runs = await Promise.all(
        runIds.map(async (id) => {
          const p = splitRunId(id);
          const [state, of, deps] = p ? await redis.hmget(c.k(p.queue).run(p.rid), 's', 'G', 'D') : [null, null, null];
          return { id, made: state != null && of === wfId, root: deps == null };
        }),
      );
      const complete = runIds.length > 0 && runs.every((r) => r.made);
      if (!complete) await cancelWorkflow(c, wfId, now);
      const roots = complete ? runs.filter((r) => r.root).map((r) => (queueOf(r.id) === queue ? ridOf(r.id) : r.id)) : [];
      await commit(c, queue, wfKey, roots, now);
      c.logger?.warn(
        { workflowId: wfId },
        complete
          ? 'Redis broker: completed the creation of a workflow over several queues that its creator left unfinished'
          : 'Redis broker: cancelled a workflow over several queues whose creation was left unfinished with runs missing',
      );
      done++;
    }
  }
  return done;
}
