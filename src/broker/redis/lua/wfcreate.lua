--[[
  wfcreate: creates a workflow's runs of one queue (docs/workflows.md): all of them and their
  edges, or nothing. A run without dependencies is queued (or scheduled, as enqueue does); a run with some
  is waiting: in `waiting`, its dependencies in wd:<rid>, and itself in the we: edge index of each
  of them. Every run stores its workflow id (G), its retention once cancelled (C, also used when a
  failed dependency skips it), how its input is built (M) and its dependencies (D), besides the
  fields every run has (written as enqueue writes them: runWrite in runs.lua).
  Counts the runs created in this minute's stats; leaves a wake-up token when a run was queued or
  a scheduled run is due first.
  A workflow over several queues (mode m) is created by one call per queue (workflows.ts): then a
  run without dependencies is created waiting for '!' (its runAt kept in r) until the workflow is
  complete (wfmulti.lua releases it); a dependency in another queue is named by its run id in D and
  wd:, and the edges from runs of this queue to dependents elsewhere are given at the end (the we:
  index of a run lives in its own queue). A queue's runs may come in several calls (a large
  workflow): each adds the rids it made to the workflow HASH's `r` and their count to `n`. A run
  that exists as a run of this workflow (a creation resumed) is skipped (its edges to other queues
  written again: the same), and a call that finds every run made returns { 0 }; the workflow HASH
  holds this queue's part.

  KEYS[1] the workflow HASH (base..'wf:'..<ulid of the workflow id>)

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] now
  ARGV[3] workflow id
  ARGV[4] mode: '' the whole workflow (one queue, one call), m a part of a workflow created in
    several calls (over several queues, or too large for one call)
  ARGV[5] number of runs n
  then 16 per run (pushWorkflowRunArgs in run-args.ts): the 14 of a new run as newRun in
    runs.lua reads them (as enqueue.lua takes them: rid, task, input, priority, runAt,
    enqueuedAt, idempotency key, its ttl, traceparent, retention once cancelled (ms, always
    given), flow spec, schedule mark, deadline to start, debounce), then inputFrom ('' given, v
    value, l list, o object) and dependencies ('' for none; else one line each: rid TAB policy TAB
    name as JSON)
  then (mode m) 3 per edge from a run of this queue to a run of another: dependency rid, dependent
    run id, policy

  Returns { 1 } created, { 0 } when the workflow exists already (mode ''), or every run of the
  call was made already (mode m), nothing written; { -1, rid }
  when a run id is taken (nothing written), { -2, rid, holder rid } when the idempotency key of
  run rid is held by a stored run (nothing written).
]]
--!keys 1
--!include common.lua: rcall, wake
--!include stats.lua: statFlush
--!include runs.lua: newRun
--!include spawn.lua: wfAddRun
local base, nowS, wfId, multi = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == 'm'
local now = tonumber(nowS)
local last = 5 + 16 * tonumber(ARGV[5])
if not multi and rcall('EXISTS', KEYS[1]) == 1 then
  return { 0 }
end
local r = {} -- each run's values in turn (newRun)
local made = {} -- (mode m) runs this workflow made already, by an earlier call: skipped
local fresh = 0
for j = 6, last, 16 do
  newRun(base, j, r)
  if multi and rcall('HGET', r.k, 'G') == wfId then
    made[j] = true
  elseif rcall('EXISTS', r.k) == 1 then
    return { -1, r.rid }
  else
    fresh = fresh + 1
    if r.ik ~= '' then
      -- A key never stands for a run that no longer exists (as enqueue.lua).
      local holder = rcall('GET', base .. 'ik:' .. r.task .. ':' .. r.ik)
      if holder and rcall('EXISTS', base .. 'r:' .. holder) == 1 then
        return { -2, r.rid, holder }
      end
    end
  end
end
if fresh == 0 then
  return { 0 }
end
local rids = {}
local wakeUp = false
for j = 6, last, 16 do
  if not made[j] then
    newRun(base, j, r)
    rids[#rids + 1] = r.rid
    local deps = ARGV[j + 15]
    if wfAddRun(base, wfId, now, r, ARGV[j + 14], deps, multi and deps == '') then
      wakeUp = true
    end
  end
end
for j = last + 1, #ARGV, 3 do
  rcall('HSET', base .. 'we:' .. ARGV[j], ARGV[j + 1], ARGV[j + 2])
end
if multi then
  local had = rcall('HGET', KEYS[1], 'r')
  rcall('HSETNX', KEYS[1], 't', nowS)
  if had and had ~= '' then
    rcall('HSET', KEYS[1], 'r', had .. ',' .. table.concat(rids, ','))
  else
    rcall('HSET', KEYS[1], 'r', table.concat(rids, ','))
  end
  rcall('HINCRBY', KEYS[1], 'n', #rids)
else
  rcall('HSET', KEYS[1], 't', nowS, 'r', table.concat(rids, ','), 'n', #rids)
end
statFlush(base, now, { e = #rids })
if wakeUp then
  wake(base)
end
return { 1 }
