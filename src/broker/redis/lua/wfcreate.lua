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
  then 14 per run: the 12 of enqueue.lua (newRun in common.lua; pushRunArgs in run-args.ts: no
    idempotency key, flow spec or schedule mark here, and the retention once cancelled always
    given), then inputFrom ('' given, v value, l list, o object), dependencies ('' for none; else
    one line each: rid TAB policy TAB name as JSON)

  Returns { 1 } created, { 0 } when the workflow exists already (nothing written), { -1, rid }
  when a run id is taken (nothing written).
]]
--!keys 1
--!include common.lua: rcall, ridTime, statFlush, pushQueued, newRun, runWrite, wake
local base, nowS, wfId = ARGV[1], ARGV[2], ARGV[3]
local now = tonumber(nowS)
if rcall('EXISTS', KEYS[1]) == 1 then
  return { 0 }
end
for j = 4, #ARGV, 14 do
  if rcall('EXISTS', base .. 'r:' .. ARGV[j]) == 1 then
    return { -1, ARGV[j] }
  end
end
local rids = {}
local wakeUp = false
local run = {} -- each run's values in turn (newRun)
for j = 4, #ARGV, 14 do
  local r = newRun(base, j, run)
  local rid, p, runAtS, mode, deps = r.rid, r.p, r.runAt, ARGV[j + 12], ARGV[j + 13]
  rids[#rids + 1] = rid
  local state
  if deps ~= '' then
    state = 'w'
  elseif tonumber(runAtS) > now then
    state = 's'
  else
    state = 'q'
  end
  local more = { 'G', wfId }
  if mode ~= '' then
    more[#more + 1] = 'M'
    more[#more + 1] = mode
  end
  if deps ~= '' then
    more[#more + 1] = 'D'
    more[#more + 1] = deps
  end
  runWrite(r, state, more)
  if state == 'w' then
    rcall('ZADD', base .. 'waiting', ridTime(rid), rid)
    for line in string.gmatch(deps, '[^\n]+') do
      local dep, pol = string.match(line, '^([^\t]*)\t([^\t]*)\t')
      rcall('SADD', base .. 'wd:' .. rid, dep)
      rcall('HSET', base .. 'we:' .. dep, rid, pol)
    end
  elseif state == 's' then
    local first = rcall('ZRANGE', base .. 'sched', 0, 0, 'WITHSCORES')
    if not first[2] or tonumber(runAtS) < tonumber(first[2]) then
      wakeUp = true
    end
    rcall('ZADD', base .. 'sched', runAtS, rid)
  else
    pushQueued(base, rid, p, false)
    wakeUp = true
  end
end
rcall('HSET', KEYS[1], 't', nowS, 'r', table.concat(rids, ','), 'n', #rids)
statFlush(base, now, { e = #rids })
if wakeUp then
  wake(base)
end
return { 1 }
