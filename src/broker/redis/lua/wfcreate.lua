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
  then 12 per run: rid, task, input, priority, runAt, enqueuedAt ('' when it is the time in the
    run id), traceparent ('' for none), retention once cancelled (ms), inputFrom ('' given, v
    value, l list, o object), dependencies ('' for none; else one line each: rid TAB policy TAB
    name as JSON), idempotency key ('' for none), its ttl (ms)

  Returns { 1 } created, { 0 } when the workflow exists already (nothing written), { -1, rid }
  when a run id is taken (nothing written), { -2, rid, holder rid } when the idempotency key of
  run rid is held by a stored run (nothing written).
]]
--!keys 1
--!include common.lua: rcall, statFlush, wake, wfAddRun
local base, nowS, wfId = ARGV[1], ARGV[2], ARGV[3]
local now = tonumber(nowS)
if rcall('EXISTS', KEYS[1]) == 1 then
  return { 0 }
end
for j = 4, #ARGV, 12 do
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
for j = 4, #ARGV, 12 do
  rids[#rids + 1] = ARGV[j]
  local a = ARGV
  if wfAddRun(base, wfId, now, a[j], a[j + 1], a[j + 2], a[j + 3], a[j + 4], a[j + 5], a[j + 6], a[j + 7], a[j + 8], a[j + 9], a[j + 10], a[j + 11]) then
    wakeUp = true
  end
end
rcall('HSET', KEYS[1], 't', nowS, 'r', table.concat(rids, ','), 'n', #rids)
statFlush(base, now, { e = #rids })
if wakeUp then
  wake(base)
end
return { 1 }
