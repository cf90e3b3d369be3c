--[[
  migrate: brings the keys of one queue to a layout version (see layout.ts), one step per version,
  and records the version reached in the queue's layout marker. The whole call is one atomic
  step: when several processes migrate at once, the first call on a queue applies the steps and
  the others find its marker and apply nothing.

  Each step must be safe on data that code of the previous layout keeps writing during a rolling
  deploy (a queue it creates later has no marker, and counts as being at the prefix's version).

  KEYS[1] the queue's layout marker `<prefix>:{<queue>}:layout` STRING (the version its keys are in)

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] the version of a queue without a marker (the prefix's recorded version, or 1)
  ARGV[3] the version to reach

  Returns the number of steps applied (0: the queue was at that version already).
]]
--!keys 1
--!include common.lua: rcall, ACTIVE_PIN, ACTIVE_PIN_SCORE, bulk
--!include flow.lua: flowKeyNew, flowKeyPack, flowRateNums, flowWaitFirst

local base, to = ARGV[1], tonumber(ARGV[3])
local marker = rcall('GET', KEYS[1])
local at = tonumber(marker or ARGV[2])
if not at then
  return redis.error_reply('ERR the layout marker ' .. KEYS[1] .. ' is not a version: ' .. tostring(marker))
end
local applied = 0

-- 2: every lease set holds the pin at its finite score (common.lua). Builds from ad5dc52 to
-- 27c37c3 scored it +inf, earlier ones had no pin: reserve adds it again on its next lease anyway,
-- this makes it so before then.
if at < 2 and to >= 2 then
  local active = base .. 'active'
  if rcall('EXISTS', active) == 1 then
    redis.pcall('ZADD', active, ACTIVE_PIN_SCORE, ACTIVE_PIN) -- a key of another type: left to reserve
  end
  applied = applied + 1
end

-- 3: a flow-control key's state moves from its own hash fk|<g>|<y> (fields a c r t w e z, listed
-- in the set fS as g|y) to field y of its group's hash fy|<g>, packed with its queued count (the
-- length of its list fq|<g>|<y>); the groups are listed in fY. Rings, waiting sets, lists and
-- GCRA times (ft|, fT|) stay as they are; fM's w (new) gets the first time in the waiting sets.
-- O(keys of the queue), in this one call.
if at < 3 and to >= 3 then
  local fS = base .. 'fS'
  for _, gy in ipairs(rcall('SMEMBERS', fS)) do
    local cut = string.find(gy, '|', 1, true)
    local kh = base .. 'fk|' .. gy
    if cut and rcall('TYPE', kh)['ok'] == 'hash' then
      local g, y = string.sub(gy, 1, cut - 1), string.sub(gy, cut + 1)
      local kv = rcall('HMGET', kh, 'a', 'c', 'r', 't', 'w', 'e', 'z')
      local aS, cS, rate, tat, waiting, weight, streak = kv[1], kv[2], kv[3], kv[4], kv[5], kv[6], kv[7]
      local st = flowKeyNew()
      st.a = math.max(0, math.floor(tonumber(aS) or 0))
      st.q = rcall('LLEN', base .. 'fq|' .. gy)
      st.c = math.floor(tonumber(cS) or 0)
      st.t, st.w = tonumber(tat), waiting or ''
      st.ri, st.rb = flowRateNums(rate)
      st.e, st.z = math.floor(tonumber(weight) or 1), math.floor(tonumber(streak) or 0)
      if st.a > 0 or st.q > 0 then
        rcall('HSET', base .. 'fy|' .. g, y, flowKeyPack(st))
        rcall('SADD', base .. 'fY', g)
      end
      rcall('DEL', kh)
    end
  end
  rcall('DEL', fS)
  local first = flowWaitFirst(base)
  if first then
    rcall('HSET', base .. 'fM', 'w', first)
  end
  applied = applied + 1
end

-- 4: a key's state in fy|<g> is packed by struct (KEY_FMT in flow.lua) instead of as text
-- 'a;q;c;t;r;w;e;z' (r '<interval>,<burst>', t '%.17g', w '' '1' or 'b', e and z '' for 1 and 0).
-- Only fields in that text form are rewritten (step 3 above writes the new form already: its
-- fields start with a's four bytes, which are not digits). O(keys of the queue), in this one call.
if at < 4 and to >= 4 then
  for _, g in ipairs(rcall('SMEMBERS', base .. 'fY')) do
    local ksh = base .. 'fy|' .. g
    local all = redis.pcall('HGETALL', ksh)
    local writes = {}
    if type(all) == 'table' and not all.err then
      for i = 1, #all, 2 do
        local a, q, c, t, r, w, e, z = string.match(all[i + 1], '^(%d*);(%d*);(%d*);([^;]*);([^;]*);([^;]*);(%d*);(%d*)$')
        if a then
          local st = flowKeyNew()
          st.a, st.q, st.c = tonumber(a) or 0, tonumber(q) or 0, tonumber(c) or 0
          st.t, st.w, st.e, st.z = tonumber(t), w, tonumber(e) or 1, tonumber(z) or 0
          st.ri, st.rb = flowRateNums(r)
          writes[#writes + 1] = all[i]
          writes[#writes + 1] = flowKeyPack(st)
        end
      end
    end
    bulk('HSET', ksh, writes, 2000)
  end
  applied = applied + 1
end

if at < to then
  rcall('SET', KEYS[1], to)
end
return applied
