--[[
  enqueue: creates a batch of runs of one queue, in order.

  A run due at or before `now` is queued (appended to the list of its priority level), a later
  one is scheduled. A run with an idempotency key whose key is held (same task, same queue) is not
  created: the result names the run holding the key. A run whose id already exists (a resent
  call) is not created again either.
  Counts the runs created in this minute's stats.
  Leaves a wake-up token when a run was queued, or when a scheduled run is due before every
  other scheduled run (so that idle workers recompute when to wake).

  KEYS[1] sched ZSET

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] now (epoch ms)
  then 14 per run, as newRun in runs.lua reads them (pushRunArgs in run-args.ts): rid, task,
    input, priority, runAt, enqueuedAt ('' when it is the time in the run id), idempotency key, its
    ttl, traceparent, retention once cancelled, flow spec ('' for none, else '<group>|<key limit>|
    <group limit>|<key rate>|<group rate>|<key weight>|<key>'), schedule mark, deadline to start
    (epoch ms, '' for none: NewRun.startBy; stored as X, checked by reserve), debounce ('' for none,
    else '<maxAt or empty>|<key>' (NewRun.debounce): a scheduled, never started run named by the
    key's hash base..'db:'..task..':'..key (r rid, m maxAt; no TTL: kept while that run is
    scheduled, see debForget in runs.lua) takes this input and runAt (at most m) and is returned
    instead of a new run; else the hash is written anew for the run created);
    a queued run with a flow spec goes to its key's list (as flowPush in flow.lua does for one
    run; here each key and group of the call is updated once)

  Returns, 3 per run: rid (the created run, or the existing one), created (1 or 0), state code
  of that run (q s a d f c).
]]
--!keys 1
--!include common.lua: rcall, fmt, bulk, wake
--!include stats.lua: statFlush
--!include flow.lua: flowGroupReady, flowKeyNew, flowKeyUnpack, flowKeyPack, flowRateNums, flowKeyIsReady, flowKeyMany, flowRingAdd
--!include runs.lua: newRun, runExisting, runWrite
local base = ARGV[1]
local now = tonumber(ARGV[2])
local out = {}
local queued = {} -- priority level -> rids to append, in order
local levels = {} -- the levels of `queued`, in first-seen order
local created = 0
local earliest -- earliest runAt among scheduled runs created here
local before = false -- earliest scheduled runAt before this call (nil: none), read once

local flowQueued = false
local flowKeys = {} -- g..'|'..y -> { g, y, n, m, u, v, rids }, in first-seen order in flowOrder
local flowOrder = {}
local run = {} -- each run's values in turn (newRun)
for j = 3, #ARGV, 14 do
  local r = newRun(base, j, run)
  local rid, p = r.rid, r.p
  local existing, s
  local dbk, dbMax -- debounce: the key's hash, the burst's bound ('' none)
  if r.deb ~= '' then
    local cut = string.find(r.deb, '|', 1, true)
    dbMax, dbk = string.sub(r.deb, 1, cut - 1), base .. 'db:' .. r.task .. ':' .. string.sub(r.deb, cut + 1)
    local dv = rcall('HMGET', dbk, 'r', 'm')
    local drid, dmax = dv[1], dv[2]
    local rv = drid and rcall('HMGET', base .. 'r:' .. drid, 's', 'a') or {}
    local dstate, dattempts = rv[1], rv[2]
    if dstate == 's' and (dattempts or '0') == '0' then -- scheduled, never started (not a retry)
      local at = tonumber(r.runAt)
      if dmax and tonumber(dmax) < at then
        at = tonumber(dmax)
      end
      -- B names the hash for debForget (a run of an earlier version has none), and the hash
      -- loses the TTL such a version gave it: it goes when the run leaves `scheduled`.
      rcall('HSET', base .. 'r:' .. drid, 'i', r.input, 'r', fmt('%d', at), 'B', string.sub(r.deb, cut + 1))
      rcall('ZADD', KEYS[1], at, drid)
      rcall('PERSIST', dbk)
      existing, s = drid, 's'
      dbk = nil
    end
  end
  if not existing then
    existing, s = runExisting(base, r)
  end
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
    out[#out + 1] = s
  else
    local runAt = tonumber(r.runAt)
    local state
    if runAt > now then
      state = 's'
      if before == false then
        local first = rcall('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
        before = tonumber(first[2])
      end
      rcall('ZADD', KEYS[1], runAt, rid)
      if earliest == nil or runAt < earliest then
        earliest = runAt
      end
    else
      state = 'q'
    end
    if dbk then
      rcall('DEL', dbk)
      if dbMax ~= '' then
        rcall('HSET', dbk, 'r', rid, 'm', dbMax)
      else
        rcall('HSET', dbk, 'r', rid)
      end
    end
    runWrite(r, state)
    if state == 'q' and r.g ~= '' then
      local gy = r.g .. '|' .. r.y
      local e = flowKeys[gy]
      if not e then
        e = { g = r.g, y = r.y, rids = {} }
        flowKeys[gy] = e
        flowOrder[#flowOrder + 1] = gy
      end
      e.n, e.m, e.u, e.v, e.w = r.n, r.m, r.u, r.v, r.w -- the latest run's limits
      e.rids[#e.rids + 1] = rid
      flowQueued = true
    elseif state == 'q' then
      local list = queued[p]
      if not list then
        list = {}
        queued[p] = list
        levels[#levels + 1] = p
      end
      list[#list + 1] = rid
    end
    out[#out + 1] = rid
    out[#out + 1] = 1
    out[#out + 1] = state
    created = created + 1
  end
end

for _, p in ipairs(levels) do
  local list = queued[p]
  local wk = base .. 'w:' .. p
  local len = 0
  for i = 1, #list, 1000 do
    len = rcall('RPUSH', wk, unpack(list, i, math.min(i + 999, #list)))
  end
  if len == #list then -- the level was empty
    rcall('ZADD', base .. 'prios', -tonumber(p), p)
  end
end

-- Runs under flow control: per group, its keys' states read with one HMGET and written with one
-- HSET, each key's list appended to and the key put in its group's ring; then the group (see
-- flowPush, flowReady in flow.lua).
if flowQueued then
  local turn = tonumber(rcall('HGET', base .. 'fM', 't')) or 0
  local total = 0
  local groups, groupOrder = {}, {}
  for _, gy in ipairs(flowOrder) do
    local e = flowKeys[gy]
    local ge = groups[e.g]
    if not ge then
      ge = { ys = {}, es = {} }
      groups[e.g] = ge
      groupOrder[#groupOrder + 1] = e.g
    end
    ge.ys[#ge.ys + 1] = e.y
    ge.es[#ge.es + 1] = e
    ge.last = e
  end
  for _, g in ipairs(groupOrder) do
    local ge = groups[g]
    local ksh = base .. 'fy|' .. g
    local packed = flowKeyMany(ksh, ge.ys)
    local writes, ready = {}, {}
    local fresh = false
    for i, e in ipairs(ge.es) do
      local st = flowKeyUnpack(packed[i])
      if not st then
        st = flowKeyNew()
        fresh = true
      end
      local q = base .. 'fq|' .. g .. '|' .. e.y
      local len = 0
      for j = 1, #e.rids, 1000 do
        len = rcall('RPUSH', q, unpack(e.rids, j, math.min(j + 999, #e.rids)))
      end
      total = total + #e.rids
      st.q, st.c, st.e = len, tonumber(e.n) or 0, tonumber(e.w) or 1
      st.ri, st.rb = flowRateNums(e.u)
      if flowKeyIsReady(st) then
        turn = turn + 1
        ready[#ready + 1] = fmt('%d', turn)
        ready[#ready + 1] = e.y
      end
      writes[#writes + 1] = e.y
      writes[#writes + 1] = flowKeyPack(st)
    end
    bulk('HSET', ksh, writes, 2000)
    flowRingAdd(base .. 'fK|' .. g, ready)
    if fresh then
      rcall('SADD', base .. 'fY', g)
    end
    local e = ge.last -- the group's limits: those of its latest run
    local gh = base .. 'fG|' .. g
    rcall('HSET', gh, 'c', e.m)
    if e.v ~= '' then
      rcall('HSET', gh, 'r', e.v)
    else
      rcall('HDEL', gh, 'r')
    end
    flowGroupReady(base, g)
  end
  rcall('HSET', base .. 'fM', 't', fmt('%d', turn))
  rcall('HINCRBY', base .. 'fM', 'q', total)
end

if created > 0 then
  statFlush(base, now, { e = created })
end

if #levels > 0 or flowQueued or (earliest ~= nil and (before == nil or earliest < before)) then
  wake(base)
end
return out
