--[[
  wfcancel: cancels every run of a workflow of one queue that is not finished (docs/workflows.md),
  as cancel.lua cancels one: a waiting run leaves `waiting` and its wait keys, a queued run its
  list (a step under flow control its key's list, flowUnqueue), a scheduled one the schedule, an
  active one its lease (its attempt recorded as `cancelled`, its id published on the cancels
  channel; under flow control its slot freed, flowFree, and idle workers woken). Every run of the workflow being finished then, nothing
  cascades (nothing is left waiting).

  KEYS[1] the workflow HASH

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] now
  ARGV[3] retention of cancelled runs, ms (a run stored with its own, field C, keeps that)
  ARGV[4] events channel (watched runs)
  ARGV[5] cancels channel
  ARGV[6] run id prefix `<queue>.`

  Returns { -1 } when there is no such workflow, else { n }: how many runs were cancelled.
]]
--!keys 1
--!include common.lua: rcall, notify, wake
--!include runs.lua: cancelRun
local base, nowS, chan, cancels, qp = ARGV[1], ARGV[2], ARGV[4], ARGV[5], ARGV[6]
local now = tonumber(nowS)
local list = rcall('HGET', KEYS[1], 'r')
if not list then
  return { -1 }
end
local rids = {}
for rid in string.gmatch(list, '[^,]+') do
  rids[#rids + 1] = rid
end
local n = 0
local freed = false
-- Last made first: a queued run is taken out of its list from the tail (LREM -1, cancelRun), where
-- the runs of a workflow were pushed last to first: each is found at once, where creation order made
-- a workflow of 10,000 queued runs cost 10,000 scans of its list (seconds of a blocked Redis).
for i = #rids, 1, -1 do
  local rid = rids[i]
  local k = base .. 'r:' .. rid
  local v = redis.pcall('HMGET', k, 's', 'p', 'a', 'w', 'b', 'h', 'W', 'C', 'g', 'y')
  local s, prio, att, holder, started, hist, watched, ownRet = v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]
  local g, y = v[9], v[10]
  if not v['err'] and (s == 'w' or s == 'q' or s == 's' or s == 'a') then
    local ret = tonumber(ownRet) or tonumber(ARGV[3])
    -- As cancel.lua cancels one (under flow control: out of its key's list, or its slot freed).
    if cancelRun(base, k, rid, qp .. rid, cancels, s, prio, g, y, now, nowS, ret, hist, att, holder, started) then
      freed = true -- its slot freed: a key may be ready again
    end
    notify(chan, qp, rid, watched)
    n = n + 1
  end
end
if freed then
  wake(base)
end
return { n }
