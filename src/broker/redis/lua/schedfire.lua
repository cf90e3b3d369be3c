--[[
  schedfire: the fire step of a schedule (see fireSchedule in broker/types.ts), atomic.

  Only if the schedule exists, is not paused, has hash ARGV[3] and its next fire time is still
  ARGV[4] (the compare-and-set): moves the next fire time to ARGV[5], adds to its misses and fires,
  records the last fire, and creates the runs as enqueue.lua does (a run whose id exists, or whose
  idempotency key is held by an existing run, is not created again). Otherwise writes nothing.

  KEYS[1] the schedule's hash `<base>S:<id>`
  KEYS[2] the queue's due ZSET `<base>Sdue`
  KEYS[3] the queue's sched ZSET (scheduled runs)

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] id, ARGV[3] hash, ARGV[4] expected next fire time, ARGV[5] new next fire time ('' none),
  ARGV[6] missed to add, ARGV[7] now, ARGV[8] nominal time of the latest run ('' when no run)
  then 10 per run: rid, task, input, priority, runAt, idempotency key, idempotency ttl ms,
    schedule mark, traceparent ('' for none), retention once cancelled ('' for the default)

  Returns { 'fired', then 3 per run: rid, created (1 or 0), state code } or { 'stale', stored next
  ('' none), stored hash } or { 'paused' } or { 'not_found' }.
]]
--!keys 3
--!include common.lua: rcall, statFlush, wake
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
for j = 9, #ARGV, 10 do
  local rid, task, input, p, runAtS = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4]
  local ik, ittl, mark, tp, cret = ARGV[j + 5], ARGV[j + 6], ARGV[j + 7], ARGV[j + 8], ARGV[j + 9]
  local k = base .. 'r:' .. rid
  local existing
  if rcall('EXISTS', k) == 1 then
    existing = rid
  elseif ik ~= '' then
    local ikk = base .. 'ik:' .. task .. ':' .. ik
    existing = rcall('GET', ikk)
    if existing and rcall('EXISTS', base .. 'r:' .. existing) == 0 then
      existing = nil
    end
    if not existing then
      rcall('SET', ikk, rid, 'PX', ittl)
    end
  end
  if existing then
    local st = redis.pcall('HGET', base .. 'r:' .. existing, 's')
    if type(st) ~= 'string' then
      st = 'q'
    end
    out[#out + 1] = existing
    out[#out + 1] = 0
    out[#out + 1] = st
    last = existing
  else
    local state = 'q'
    local f = { 't', task, 'i', input, 'e', nowS, 'S', mark }
    if tonumber(runAtS) > now then
      state = 's'
      rcall('ZADD', KEYS[3], runAtS, rid)
      f[#f + 1] = 'r'
      f[#f + 1] = runAtS
    else
      local wk = base .. 'w:' .. p
      if rcall('RPUSH', wk, rid) == 1 then
        rcall('ZADD', base .. 'prios', -tonumber(p), p)
      end
    end
    f[#f + 1] = 's'
    f[#f + 1] = state
    if p ~= '0' then
      f[#f + 1] = 'p'
      f[#f + 1] = p
    end
    if ik ~= '' then
      f[#f + 1] = 'k'
      f[#f + 1] = ik
    end
    if tp ~= '' then
      f[#f + 1] = 'c'
      f[#f + 1] = tp
    end
    if cret ~= '' then
      f[#f + 1] = 'C'
      f[#f + 1] = cret
    end
    rcall('HSET', k, unpack(f))
    out[#out + 1] = rid
    out[#out + 1] = 1
    out[#out + 1] = state
    created = created + 1
    last = rid
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
local fires = math.floor((#ARGV - 8) / 10)
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
