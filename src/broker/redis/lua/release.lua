--[[
  release: hands leased runs of one queue back (worker shutting down). Each run held by the
  worker (same attempt) returns to the head of its priority level at once, its attempt not
  counted (attempts - 1); the attempt is recorded in history as `released`. Others are ignored.
  A run with a deadline to start whose attempts fall back to 0 may expire again: indexed again.

  KEYS[1] active ZSET

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] worker id
  ARGV[3] now
  ARGV[4] events channel (watched runs)
  ARGV[5] run id prefix `<queue>.`
  then 2 per lease: rid, attempt

  Returns the number of runs released.
]]
--!keys 1
--!include common.lua: rcall, appendHistory, wake, notify
--!include flow.lua: flowFree
--!include runs.lua: pushQueued
local base, worker, nowS, chan, qp = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local released = 0
-- Backwards, so that pushing each at the head keeps the runs in the order given.
for j = #ARGV - 1, 6, -2 do
  local rid, att = ARGV[j], ARGV[j + 1]
  local k = base .. 'r:' .. rid
  local v = redis.pcall('HMGET', k, 's', 'w', 'a', 'b', 'h', 'W', 'p', 'g', 'X')
  local state, holder, runAtt, started, hist, watched, prio, g, startBy = v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9]
  if not v['err'] and state == 'a' and holder == worker and runAtt == att then
    local h = appendHistory(hist, att, worker, started, nowS, 'released')
    rcall('HSET', k, 's', 'q', 'a', tonumber(att) - 1, 'h', h)
    rcall('HDEL', k, 'o')
    rcall('ZREM', KEYS[1], rid)
    if g then
      flowFree(base, k, g) -- its slot, freed before the run is queued again
    end
    pushQueued(base, rid, prio or '0', true, g)
    if startBy and tonumber(att) == 1 then
      -- Its attempt given back, it may expire again (see 'startby' in runs.lua).
      rcall('ZADD', base .. 'startby', startBy, rid)
    end
    notify(chan, qp, rid, watched)
    released = released + 1
  end
end
if released > 0 then
  wake(base)
end
return released
