--[[
  wfcreate: creates a workflow's runs of one queue (docs/workflows.md): all of them and their
  edges, or nothing. A run without dependencies is queued (or scheduled, as enqueue does); a run with some
  is waiting: in `waiting`, its dependencies in wd:<rid>, and itself in the we: edge index of each
  of them. Every run stores its workflow id (g), its retention once cancelled (C, also used when a
  failed dependency skips it), how its input is built (m) and its dependencies (D).
  Counts the runs created in this minute's stats; leaves a wake-up token when a run was queued or
  a scheduled run is due first.
  A workflow over several queues (mode m) is created by one call per queue (workflows.ts): then a
  run without dependencies is created waiting for '!' (its runAt kept in r) until the workflow is
  complete (wfmulti.lua releases it); a dependency in another queue is named by its run id in D and
  wd:, and the edges from runs of this queue to dependents elsewhere are given at the end (the we:
  index of a run lives in its own queue). The call is skipped, returning { 0 }, when its first run
  exists as a run of this workflow (a creation resumed); the workflow HASH holds this queue's part.

  KEYS[1] the workflow HASH (base..'wf:'..<ulid of the workflow id>)

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] now
  ARGV[3] workflow id
  ARGV[4] mode: '' one queue, m one queue of a workflow over several
  ARGV[5] number of runs n
  then 12 per run: rid, task, input, priority, runAt, enqueuedAt ('' when it is the time in the
    run id), traceparent ('' for none), retention once cancelled (ms), inputFrom ('' given, v
    value, l list, o object), dependencies ('' for none; else one line each: rid TAB policy TAB
    name as JSON), idempotency key ('' for none), its ttl (ms)
  then (mode m) 3 per edge from a run of this queue to a run of another: dependency rid, dependent
    run id, policy

  Returns { 1 } created, { 0 } when the workflow exists already (nothing written), { -1, rid }
  when a run id is taken (nothing written), { -2, rid, holder rid } when the idempotency key of
  run rid is held by a stored run (nothing written).
]]
--!keys 1
--!include common.lua: rcall, statFlush, wake, wfAddRun
local base, nowS, wfId, multi = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == 'm'
local now = tonumber(nowS)
local last = 5 + 12 * tonumber(ARGV[5])
if multi then
  if rcall('HGET', base .. 'r:' .. ARGV[6], 'G') == wfId then
    return { 0 }
  end
elseif rcall('EXISTS', KEYS[1]) == 1 then
  return { 0 }
end
for j = 6, last, 12 do
  if rcall('EXISTS', base .. 'r:' .. ARGV[j]) == 1 then
    return { -1, ARGV[j] }
  end
  if ARGV[j + 10] ~= '' then
    -- A key never stands for a run that no longer exists (as enqueue.lua).
    local holder = rcall('GET', base .. 'ik:' .. ARGV[j + 1] .. ':' .. ARGV[j + 10])
    if holder and rcall('EXISTS', base .. 'r:' .. holder) == 1 then
      return { -2, ARGV[j], holder }
    end
  end
end
local rids = {}
local wakeUp = false
for j = 6, last, 12 do
  rids[#rids + 1] = ARGV[j]
  local a = ARGV
  local held = multi and a[j + 9] == ''
  if wfAddRun(base, wfId, now, a[j], a[j + 1], a[j + 2], a[j + 3], a[j + 4], a[j + 5], a[j + 6], a[j + 7], a[j + 8], a[j + 9], a[j + 10], a[j + 11], held) then
    wakeUp = true
  end
end
for j = last + 1, #ARGV, 3 do
  rcall('HSET', base .. 'we:' .. ARGV[j], ARGV[j + 1], ARGV[j + 2])
end
rcall('HSET', KEYS[1], 't', nowS, 'r', table.concat(rids, ','), 'n', #rids)
statFlush(base, now, { e = #rids })
if wakeUp then
  wake(base)
end
return { 1 }
