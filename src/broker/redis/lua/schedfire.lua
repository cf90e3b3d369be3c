--[[
  schedfire: the fire step of a schedule (see fireSchedule in broker/types.ts), atomic.

  Only if the schedule exists, is not paused, has hash ARGV[3] and its next fire time is still
  ARGV[4] (the compare-and-set): moves the next fire time to ARGV[5], adds to its misses and fires,
  records the last fire, and creates the runs as enqueue.lua does, with the same helpers (newRun,
  runExisting, runWrite in runs.lua): a run whose id exists, or whose idempotency key is held by
  an existing run, is not created again; a run with a flow spec is under its task's limits
  (docs/flow-control.md). Otherwise writes nothing.
  The overlap policy (FireRequest.overlap in broker/types.ts) is applied here, in the same step:
  the previous run (field L) overlaps while it is queued or active; then skip creates no run and
  counts the times as missed, buffer writes nothing (reply 'buffered'), cancel creates the runs and
  names the previous one (the caller cancels it). buffer without an overlap, with a previous run,
  creates only the last run and counts the others as missed.

  KEYS[1] the schedule's hash `<base>S:<id>`
  KEYS[2] the queue's due ZSET `<base>Sdue`
  KEYS[3] the queue's sched ZSET (scheduled runs)

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] id, ARGV[3] hash, ARGV[4] expected next fire time, ARGV[5] new next fire time ('' none),
  ARGV[6] missed to add, ARGV[7] now, ARGV[8] nominal time of each run, comma-separated ('' when
  no run), ARGV[9] overlap policy ('' allow, skip, cancel, buffer)
  then 14 per run, as enqueue.lua takes them (newRun in runs.lua; pushRunArgs in run-args.ts)

  Returns { 'fired', missed added, the overlapping previous rid with cancel ('' none), then 3 per
  run kept: rid, created (1 or 0), state code } or { 'buffered', the previous rid } or { 'stale',
  stored next ('' none), stored hash } or { 'paused' } or { 'not_found' }.
]]
--!keys 3
--!include common.lua: rcall, wake
--!include stats.lua: statFlush
--!include runs.lua: newRun, runExisting, runCreate
local base, id, hash, expect, nextS = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local missed, nowS, atsS, policy = tonumber(ARGV[6]), ARGV[7], ARGV[8], ARGV[9]
local now = tonumber(nowS)
local s = rcall('HMGET', KEYS[1], 'n', 'h', 'p', 'L')
local sNext, sHash, sPaused, prev = s[1], s[2], s[3], s[4]
if not sHash then
  return { 'not_found' }
end
if sPaused == '1' then
  return { 'paused' }
end
if sHash ~= hash or sNext ~= expect then
  return { 'stale', sNext or '', sHash }
end

-- The runs to create: ARGV[from], ARGV[from + RUN_ARGS], ... up to ARGV[to]; their nominal times.
local RUN_ARGS = 14 -- values per run (newRun in runs.lua)
local from, to = 10, #ARGV
local ats = {}
for at in string.gmatch(atsS, '[^,]+') do
  ats[#ats + 1] = at
end
local overlapped = ''
if policy ~= '' and prev and #ats > 0 then
  local ps = redis.pcall('HGET', base .. 'r:' .. prev, 's')
  if ps == 'q' or ps == 'a' then
    if policy == 'buffer' then
      return { 'buffered', prev }
    elseif policy == 'skip' then
      missed = missed + #ats
      from, ats = to + 1, {}
    else
      overlapped = prev
    end
  elseif policy == 'buffer' and #ats > 1 then
    missed = missed + #ats - 1
    from, ats = to - (RUN_ARGS - 1), { ats[#ats] }
  end
end
local lastFire = ''
for _, at in ipairs(ats) do
  if lastFire == '' or tonumber(at) > tonumber(lastFire) then
    lastFire = at
  end
end

local out = { 'fired', missed, overlapped }
local created, last, woken = 0, nil, false
local fires = 0
local run = {} -- each run's values in turn (newRun)
for j = from, to, RUN_ARGS do
  local r = newRun(base, j, run)
  local existing, st = runExisting(base, r)
  fires = fires + 1
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
    out[#out + 1] = st
    last = existing
  else
    local state = runCreate(base, r, now)
    out[#out + 1] = r.rid
    out[#out + 1] = 1
    out[#out + 1] = state
    created = created + 1
    last = r.rid
    woken = true
  end
end

local upd = { 'n', nextS, 'u', nowS }
if last then
  upd[#upd + 1] = 'L'
  upd[#upd + 1] = last
end
if lastFire ~= '' then
  upd[#upd + 1] = 'l'
  upd[#upd + 1] = lastFire
end
rcall('HSET', KEYS[1], unpack(upd))
if missed > 0 then
  rcall('HINCRBY', KEYS[1], 'm', missed)
end
if fires > 0 then
  rcall('HINCRBY', KEYS[1], 'f', fires)
end
if nextS ~= '' then
  rcall('ZADD', KEYS[2], nextS, id)
else
  rcall('ZREM', KEYS[2], id)
end
if created > 0 then
  statFlush(base, now, { e = created })
end
if woken then
  wake(base)
end
return out
