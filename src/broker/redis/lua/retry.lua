--[[
  retry: replays a failed or cancelled run: back to queued (tail of its priority level) with
  attempts and leaseLosses reset; it no longer expires (its finish time, expiry, error and
  progress are cleared). Its history is kept: the failed attempt, when still the open attempt (see
  `o` in runs.lua), is appended to it first. A run of a workflow is retried from that step: the
  runs its failure cancelled wait again (wfRewait in workflow.lua).

  KEYS[1] the run HASH

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] rid
  ARGV[3] events channel (watched runs)
  ARGV[4] run id
  ARGV[5] now (the run is due from then)

  Returns { 'Q', '', relay } when queued (relay 1 when this queue's relay outbox holds entries: see
  wfRelayOut in workflow.lua), { 'S', state code } when the run is neither failed nor cancelled,
  { 'R', origin } when it was recorded from elsewhere (field O, see record.lua), { 'N' } when there
  is no such run, { 'X' } when the stored run is unreadable.
]]
--!keys 1
--!include common.lua: rcall, wake
--!include runs.lua: replay
--!include workflow.lua: wfRewait
local k, base, rid = KEYS[1], ARGV[1], ARGV[2]
local v = redis.pcall('HMGET', k, 's', 'p', 'W', 'o', 'h', 'a', 'w', 'b', 'f', 'E', 'O', 'G')
local s, prio, watched, open, hist, att, holder, started, finished, err = v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10]
local origin, wf = v[11], v[12]
if v['err'] then
  return { 'X' }
end
if not s then
  if rcall('EXISTS', k) == 1 then
    return { 'X' }
  end
  return { 'N' }
end
if origin then
  return { 'R', origin }
end
if s ~= 'f' and s ~= 'c' then
  return { 'S', s }
end
local zset = s == 'f' and 'failed' or 'cancelled'
replay(base, k, rid, ARGV[4], ARGV[3], ARGV[5], zset, prio, watched, open, hist, att, holder, started, finished, err)
if wf then
  wfRewait(base, string.sub(ARGV[4], 1, #ARGV[4] - #rid), rid, ARGV[5])
end
wake(base)
return { 'Q', '', rcall('EXISTS', base .. 'wo') }
