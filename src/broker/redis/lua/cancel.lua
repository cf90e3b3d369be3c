--[[
  cancel: cancels a waiting, queued, scheduled or active run. A queued run leaves its list, a scheduled
  one the schedule, an active one its lease (its attempt is recorded as `cancelled`, and its id
  is published on the cancels channel so that its worker can stop at once), a waiting one its
  wait keys. The run is then finished as cancelled (see `finish` in runs.lua), and, when it is a
  run of a workflow, that failure reaches the runs waiting for it (wfResolve). Finished runs are
  left as they are.

  KEYS[1] the run HASH

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] rid
  ARGV[3] now
  ARGV[4] retention of cancelled runs, ms (a run stored with its own, field C, keeps that)
  ARGV[5] events channel (watched runs)
  ARGV[6] cancels channel
  ARGV[7] run id

  Returns { 'C', previous state code, relay } when cancelled (relay 1 when this queue's relay outbox
  holds entries: see wfRelayOut in workflow.lua), { 'F', state code } when already finished,
  { 'N' } when there is no such run, { 'X' } when the stored run is unreadable.
]]
--!keys 1
--!include common.lua: rcall, notify, wake
--!include runs.lua: cancelRun, debForget
--!include workflow.lua: wfResolve
local k, base, rid, nowS = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local now = tonumber(nowS)
local v = redis.pcall('HMGET', k, 's', 'p', 'a', 'w', 'b', 'h', 'W', 'C', 'g', 'y', 'G', 'X', 'B', 't')
local s, prio, att, holder, started, hist, watched, ownRet, g, y, wf = v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11]
local startBy, deb, task = v[12], v[13], v[14]
if v['err'] then
  return { 'X' }
end
if not s then
  if rcall('EXISTS', k) == 1 then
    return { 'X' }
  end
  return { 'N' }
end
if s == 'd' or s == 'f' or s == 'c' then
  return { 'F', s }
end
if s ~= 'q' and s ~= 'w' and s ~= 's' and s ~= 'a' then
  return { 'X' }
end
-- The runs waiting for it first: finishing it with a retention of 0 deletes it and its edges.
local woke = wf and wfResolve(base, string.sub(ARGV[7], 1, #ARGV[7] - #rid), ARGV[5], now, nowS, rid, false, '')
local ret = tonumber(ownRet) or tonumber(ARGV[4])
if startBy then
  rcall('ZREM', base .. 'startby', rid) -- it can no longer expire
end
if deb then
  debForget(base, rid, task, deb) -- its debounce burst is over
end
-- Out of where it waits (under flow control: its key's list, or its slot freed) and finished.
local freed = cancelRun(base, k, rid, ARGV[7], ARGV[6], s, prio, g, y, now, nowS, ret, hist, att, holder, started)
notify(ARGV[5], ARGV[7], '', watched)
if freed or woke then
  wake(base) -- a key may be ready again (its slot freed), or dependents became queued
end
return { 'C', s, rcall('EXISTS', base .. 'wo') }
