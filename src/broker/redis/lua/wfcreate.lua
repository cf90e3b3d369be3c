--[[
  wfcreate: creates a workflow of one queue (docs/workflows.md): all its runs and edges, or
  nothing. A run without dependencies is queued (or scheduled, as enqueue does); a run with some
  is waiting: in `waiting`, its dependencies in wd:<rid>, and itself in the we: edge index of each
  of them. Every run stores its workflow id (g), its retention once cancelled (C, also used when a
  failed dependency skips it), how its input is built (m) and its dependencies (D).
  Counts the runs created in this minute's stats; leaves a wake-up token when a run was queued or
  a scheduled run is due first.

  KEYS[1] the workflow HASH (base..'wf:'..<ulid of the workflow id>)

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] now
  ARGV[3] workflow id
  then 10 per run: rid, task, input, priority, runAt, enqueuedAt ('' when it is the time in the
    run id), traceparent ('' for none), retention once cancelled (ms), inputFrom ('' given, v
    value, l list, o object), dependencies ('' for none; else one line each: rid TAB policy TAB
    name as JSON)

  Returns { 1 } created, { 0 } when the workflow exists already (nothing written), { -1, rid }
  when a run id is taken (nothing written).
]]
--!keys 1
--!include common.lua: rcall, statFlush, wake, wfAddRun
local base, nowS, wfId = ARGV[1], ARGV[2], ARGV[3]
local now = tonumber(nowS)
if rcall('EXISTS', KEYS[1]) == 1 then
  return { 0 }
end
for j = 4, #ARGV, 10 do
  if rcall('EXISTS', base .. 'r:' .. ARGV[j]) == 1 then
    return { -1, ARGV[j] }
  end
end
local rids = {}
local wakeUp = false
for j = 4, #ARGV, 10 do
  rids[#rids + 1] = ARGV[j]
  if wfAddRun(base, wfId, now, ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4], ARGV[j + 5], ARGV[j + 6], ARGV[j + 7], ARGV[j + 8], ARGV[j + 9]) then
    wakeUp = true
  end
end
rcall('HSET', KEYS[1], 't', nowS, 'r', table.concat(rids, ','), 'n', #rids)
statFlush(base, now, { e = #rids })
if wakeUp then
  wake(base)
end
return { 1 }
