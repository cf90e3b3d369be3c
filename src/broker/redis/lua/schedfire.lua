--[[
  schedfire: the fire step of a schedule (see fireSchedule in broker/types.ts), atomic.

  Only if the schedule exists, is not paused, has hash ARGV[3] and its next fire time is still
  ARGV[4] (the compare-and-set): moves the next fire time to ARGV[5], adds to its misses and fires,
  records the last fire, and creates the runs as enqueue.lua does, with the same helpers (newRun,
  runExisting, runWrite in common.lua): a run whose id exists, or whose idempotency key is held by
  an existing run, is not created again; a run with a flow spec is under its task's limits
  (docs/flow-control.md). Otherwise writes nothing.

  KEYS[1] the schedule's hash `<base>S:<id>`
  KEYS[2] the queue's due ZSET `<base>Sdue`
  KEYS[3] the queue's sched ZSET (scheduled runs)

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] id, ARGV[3] hash, ARGV[4] expected next fire time, ARGV[5] new next fire time ('' none),
  ARGV[6] missed to add, ARGV[7] now, ARGV[8] nominal time of the latest run ('' when no run)
  then 12 per run, as enqueue.lua takes them (newRun in common.lua; pushRunArgs in run-args.ts)

  Returns { 'fired', then 3 per run: rid, created (1 or 0), state code } or { 'stale', stored next
  ('' none), stored hash } or { 'paused' } or { 'not_found' }.
]]
--!keys 3
--!include common.lua: rcall, statFlush, pushQueued, newRun, runExisting, runWrite, wake
local base, id, hash, expect, nextS = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local missed, nowS, lastFire = tonumber(ARGV[6]), ARGV[7], ARGV[8]
local now = tonumber(nowS)
local s = rcall('HMGET', KEYS[1], 'n', 'h', 'p')
local sNext, sHash, sPaused = s[1], s[2], s[3]
if not sHash then
  return { 'not_found' }
end
if sPaused == '1' then
  return { 'paused' }
end
if sHash ~= hash or sNext ~= expect then
  return { 'stale', sNext or '', sHash }
end

local out = { 'fired' }
local created, last, woken = 0, nil, false
local fires = 0
for j = 9, #ARGV, 12 do
  local r = newRun(j)
  local existing, st = runExisting(base, r)
  fires = fires + 1
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
    out[#out + 1] = st
    last = existing
  else
    local state = 'q'
    if tonumber(r.runAt) > now then
      state = 's'
      rcall('ZADD', KEYS[3], r.runAt, r.rid)
    end
    runWrite(base, r, state)
    if state == 'q' then
      pushQueued(base, r.rid, r.p, false, r.g ~= '' and r.g or nil)
    end
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
