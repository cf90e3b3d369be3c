--[[
  flow.lua: flow control (see common.lua for how libraries are included).
  Flow control (docs/flow-control.md; g a group: a task name, no '|'; y a key: any text):
    base..'fq|'..g..'|'..y  LIST  queued rids of key y of group g, FIFO (not in any 'w:' list)
    base..'fy|'..g     HASH  the state of each key y of group g (field y; layout 4: one HMGET and
                             one HSET serve every key a reserve pass or a settlement touches), 45
                             bytes packed by struct (KEY_FMT below): a active runs, q queued runs
                             (the length of its 'fq|' list), c limit (0: none), t its GCRA time
                             (negative: none; once it started under a rate), ri and rb its rate's
                             interval and burst (ri 0: no rate), w 0, 1 while rate-limited or 2
                             while backed off by a handler, e its weight, z runs served in a row at
                             the ring's head; the field is deleted when nothing is queued or active
    base..'fG|'..g     HASH  a active runs of the group, c its limit, r its rate, w as above
    base..'ft|'..g..'|'..y, base..'fT|'..g  STRING  GCRA time of a rate-limited key once its state
                             is gone (its t moves here), of a group (PX, PXAT: kept a
                             minute past when it stops mattering)
    base..'fW', base..'fWg'  ZSET  rate-limited or backed-off keys (g..'|'..y), groups, by when they
                             may start again
    base..'fK|'..g     ZSET  the ring of g's ready keys (queued runs and a free slot), by turn
    base..'fR'         ZSET  the ring of ready groups (a free slot and a ready key), by turn
    base..'fM'         HASH  t the turn counter, q how many rids the 'fq|' lists hold, w the
                             first score of 'fW' and 'fWg' ('' or absent: none; layout 3)
    base..'fY'         SET   the groups that have had key states ('fy|'; purge and listings find
                             them here; a group stays, as its 'fG|' hash does)
    (Layout 2 kept a key's state in a hash base..'fk|'..g..'|'..y of fields a c r t w e z and the
    keys in a SET base..'fS' of g..'|'..y; layout 3 packed it as text 'a;q;c;t;r;w;e;z' in fy|:
    migrate.lua converts both.)

  Run hash fields (see runs.lua for the others):
    g, y  flow control: group, key (a run without g has none)
    L  flow control: its limits, '<n>|<m>|<u>|<v>|<K>': n the key's limit and m the group's (0:
       none), u the key's rate and v the group's ('<interval>,<burst>'; '': none), K the key's
       weight (runs in a row per turn). One field, not five: every field of a run's hash makes
       each HMGET of it dearer (a field asked for and absent is looked for through all of them).
       Runs written before layout 4 have n m u v K as fields of their own (pushQueued reads both).
]]
-- Flow control (see the layout above and docs/flow-control.md). A key is in its group's ring
-- exactly while it has queued runs and a free slot; a group is in the queue's ring exactly while
-- it has a free slot and a key in its ring. Reserve reads only the rings.
local function flowTurn(base)
  return rcall('HINCRBY', base .. 'fM', 't', 1)
end

-- Puts group g in the queue's ring, or takes it out, by the rule above. Returns whether it is in.
local function flowGroupReady(base, g)
  local v = rcall('HMGET', base .. 'fG|' .. g, 'a', 'c', 'w')
  local aS, cS, waiting = v[1], v[2], v[3]
  local a, c = tonumber(aS) or 0, tonumber(cS) or 0
  local ring = base .. 'fR'
  if not waiting and (c <= 0 or a < c) and rcall('ZCARD', base .. 'fK|' .. g) > 0 then
    if not rcall('ZSCORE', ring, g) then
      rcall('ZADD', ring, flowTurn(base), g)
    end
    return true
  end
  rcall('ZREM', ring, g)
  return false
end

-- A key's state is one field of its group's hash base..'fy|'..g (field: the key), so that one HMGET
-- and one HSET serve every key a reserve pass or a settlement batch touches. It is packed by
-- struct (KEY_FMT, KEY_LEN bytes: a, q, c, t, ri, rb, w, e, z as in the layout above), which reads
-- and writes numbers directly: text ('%.17g' for the GCRA time, a pattern with eight captures and
-- tonumber to read it) cost about 2 us per key and call, struct.unpack and struct.pack 0.3 us. The
-- doubles are stored exactly (GCRA times agree with SQLite's to the bit). A field of another
-- length is unreadable (nil below): reserve rebuilds such a key's state from its list.
-- Unpacked: a table { a active, q queued, c limit (0: none), t GCRA time (nil: none), ri, rb the
-- rate's interval and burst (ri 0: none), w '' or '1' (rate-limited) or 'b' (backed off), e weight,
-- z runs served in a row }. The hot paths (reserve's passes, flowFreeMany) unpack to locals instead.
local KEY_FMT = '<i4i4i4dddBi4i4'
local KEY_LEN = 45
local KEY_WAIT_TEXT = { [0] = '', [1] = '1', [2] = 'b' }
local KEY_WAIT_CODE = { [''] = 0, ['1'] = 1, b = 2 }
local function flowKeyNew()
  return { a = 0, q = 0, c = 0, t = nil, ri = 0, rb = 0, w = '', e = 1, z = 0 }
end

-- The state of packed field s (nil, or unreadable: nil).
local function flowKeyUnpack(s)
  if not s or #s ~= KEY_LEN then
    return nil
  end
  local a, q, c, t, ri, rb, w, e, z = struct.unpack(KEY_FMT, s)
  if t < 0 then
    t = nil
  end
  return { a = a, q = q, c = c, t = t, ri = ri, rb = rb, w = KEY_WAIT_TEXT[w] or '', e = e, z = z }
end

local function flowKeyPack(st)
  return struct.pack(KEY_FMT, st.a, st.q, st.c, st.t or -1, st.ri, st.rb, KEY_WAIT_CODE[st.w] or 0, st.e, st.z)
end

-- A rate '<interval>,<burst>' as its two numbers ('' or nil: 0, 0, no rate), parsed once per call.
local RATE_NUMS = {}
local function flowRateNums(rate)
  if not rate or rate == '' then
    return 0, 0
  end
  local p = RATE_NUMS[rate]
  if not p then
    local cut = string.find(rate, ',', 1, true)
    p = { tonumber(string.sub(rate, 1, cut - 1)), tonumber(string.sub(rate, cut + 1)) }
    RATE_NUMS[rate] = p
  end
  return p[1], p[2]
end

-- Whether a key belongs in its group's ring: queued runs, a free slot, not waiting.
local function flowKeyIsReady(st)
  return st.q > 0 and st.w == '' and (st.c <= 0 or st.a < st.c)
end

-- The packed states of keys ys (a list) of the group hash ksh, in order (false: none).
local function flowKeyMany(ksh, ys)
  if #ys <= 1000 then
    return rcall('HMGET', ksh, unpack(ys))
  end
  local out = {}
  for i = 1, #ys, 1000 do
    local part = rcall('HMGET', ksh, unpack(ys, i, math.min(i + 999, #ys)))
    for j = 1, #part do
      out[#out + 1] = part[j]
    end
  end
  return out
end

-- Adds keys to a ring unless there already: `pairs` is { turn, key, turn, key, ... }.
local function flowRingAdd(ring, pairs)
  for i = 1, #pairs, 2000 do
    rcall('ZADD', ring, 'NX', unpack(pairs, i, math.min(i + 1999, #pairs)))
  end
end

-- A key forgotten (its state deleted: nothing queued or active) keeps its GCRA time `tat`, if
-- any, in ft| until a minute past when it stops mattering.
local function flowKeepTat(base, g, y, tat)
  if tat then
    -- PXAT: an absolute time (already past: no key, which is what a time that long past means).
    rcall('SET', base .. 'ft|' .. g .. '|' .. y, fmt('%.17g', tat), 'PXAT', math.ceil(tat) + 60000)
  end
end

-- Stores state st of key y of group g and puts the key in its group's ring, or takes it out; a
-- key with nothing queued or active is forgotten.
local function flowKeyStore(base, g, y, st)
  local ring = base .. 'fK|' .. g
  if flowKeyIsReady(st) then
    if not rcall('ZSCORE', ring, y) then
      -- Joins at the back, a fresh turn: its count of runs in a row starts again.
      rcall('ZADD', ring, flowTurn(base), y)
      st.z = 0
    end
  else
    -- Out of the ring: its turn is over.
    rcall('ZREM', ring, y)
    st.z = 0
  end
  if st.q <= 0 and st.a <= 0 then
    rcall('HDEL', base .. 'fy|' .. g, y)
    flowKeepTat(base, g, y, st.t)
  else
    rcall('HSET', base .. 'fy|' .. g, y, flowKeyPack(st))
  end
end

-- Key y of group g and its group to their rings, or out, by the rules above; its queued count
-- taken again from its list (its state rebuilt if its list has runs and it has none). `unwait`:
-- its rate or back-off wait is over. Returns whether the group is ready.
local function flowReady(base, g, y, unwait)
  local st = flowKeyUnpack(rcall('HGET', base .. 'fy|' .. g, y))
  local len = rcall('LLEN', base .. 'fq|' .. g .. '|' .. y)
  if not st and len > 0 then
    st = flowKeyNew()
    rcall('SADD', base .. 'fY', g)
  end
  if st then
    st.q = len
    if unwait then
      st.w = ''
    end
    flowKeyStore(base, g, y, st)
  else
    rcall('ZREM', base .. 'fK|' .. g, y)
  end
  return flowGroupReady(base, g)
end

-- When the first waiting key or group (fW, fWg) may start: its score as stored, or nil. fM's w
-- holds it (layout 3), so that reserve reads the waiting sets only once it has come: whatever
-- adds to them or moves a score later sets w again (reserve keeps it itself).
local function flowWaitFirst(base)
  local k = rcall('ZRANGE', base .. 'fW', 0, 0, 'WITHSCORES')
  local g = rcall('ZRANGE', base .. 'fWg', 0, 0, 'WITHSCORES')
  if k[2] and (not g[2] or tonumber(k[2]) <= tonumber(g[2])) then
    return k[2]
  end
  return g[2]
end

-- Sets field r (a rate) of hash h, or removes it ('' or nil: no rate).
local function flowSetRate(h, rate)
  if rate and rate ~= '' then
    rcall('HSET', h, 'r', rate)
  else
    rcall('HDEL', h, 'r')
  end
end

-- Appends (at the head: prepends) queued run rid to its key's list; y its key, n m u v its limits,
-- kw its weight. The key's limits, rate and weight become these (the latest run's).
local function flowPush(base, rid, g, y, n, m, u, v, front, kw)
  local q = base .. 'fq|' .. g .. '|' .. y
  local len
  if front then
    len = rcall('LPUSH', q, rid)
  else
    len = rcall('RPUSH', q, rid)
  end
  local st = flowKeyUnpack(rcall('HGET', base .. 'fy|' .. g, y))
  if not st then
    st = flowKeyNew()
    rcall('SADD', base .. 'fY', g)
  end
  st.q, st.c, st.e = len, tonumber(n) or 0, tonumber(kw) or 1
  st.ri, st.rb = flowRateNums(u)
  flowKeyStore(base, g, y, st)
  local gh = base .. 'fG|' .. g
  rcall('HSET', gh, 'c', m or '0')
  flowSetRate(gh, v)
  rcall('HINCRBY', base .. 'fM', 'q', 1)
  return flowGroupReady(base, g)
end

-- A key's (or a group's) wait set by a back-off: w 'b' in its state.
local function flowKeyWait(base, g, y)
  local ksh = base .. 'fy|' .. g
  local st = flowKeyUnpack(rcall('HGET', ksh, y))
  if st then
    st.w, st.z = 'b', 0 -- out of its ring: its turn is over
    rcall('HSET', ksh, y, flowKeyPack(st))
  end
end

-- GCRA (as gcra() in src/broker/shared/flow.ts, on the same doubles): a rate of `interval` and
-- `burst`, `tat` the stored time (nil: none). Returns true and the new time when a start at `now` is
-- admitted, else false and when the key may start again (whole ms, rounded up).
local function flowGcraN(interval, burst, tat, now)
  local tau = interval * (burst - 1)
  local from = tat or 0
  if now > from then
    from = now
  end
  if from - now > tau then
    return false, math.ceil(from - tau)
  end
  return true, from + interval
end

-- The same for a rate as text '<interval>,<burst>' (a group's).
local function flowGcra(rate, tat, now)
  local interval, burst = flowRateNums(rate)
  return flowGcraN(interval, burst, tat, now)
end

-- Stores a GCRA time (exactly: '%.17g'), kept a minute past when it stops mattering.
local function flowSetTat(key, tat, now)
  rcall('SET', key, fmt('%.17g', tat), 'PX', math.ceil(tat - now) + 60000)
end

-- Slots freed by many runs at once: `freed[g][y]` runs of key y of group g left active. Per group,
-- one HMGET and one HSET of its keys' states and one read and write of the group's count; the
-- rings are touched only where they change (a key or group that was at its limit). Returns
-- whether a key or group became ready (idle workers should look).
local function flowFreeMany(base, freed)
  local woke = false
  for g, keys in pairs(freed) do
    local ksh = base .. 'fy|' .. g
    local ys = {}
    for y in pairs(keys) do
      ys[#ys + 1] = y
    end
    local packed = flowKeyMany(ksh, ys)
    local writes, dels, ready = {}, {}, {}
    local total = 0
    for i, y in ipairs(ys) do
      local cnt = keys[y]
      total = total + cnt
      local s = packed[i]
      if s and #s == KEY_LEN then
        local a0, q, c, t, ri, rb, w, e, z = struct.unpack(KEY_FMT, s)
        local a = a0 - cnt
        if a < 0 then
          a = 0
        end
        if a <= 0 and q <= 0 then
          -- Nothing active, nothing queued: forgotten (it is in no ring).
          dels[#dels + 1] = y
          if t >= 0 then
            flowKeepTat(base, g, y, t)
          end
        else
          -- At its limit before, so out of the ring: it may be ready now, at the back with a fresh
          -- turn (z, its runs in a row, back to 0). (A key that had a free slot keeps its place in
          -- the ring: it cannot change.)
          if c > 0 and a0 >= c and a < c and q > 0 and w == 0 then
            ready[#ready + 1] = y
            z = 0
          end
          writes[#writes + 1] = y
          writes[#writes + 1] = struct.pack(KEY_FMT, a, q, c, t, ri, rb, w, e, z)
        end
      end
    end
    bulk('HSET', ksh, writes, 2000)
    bulk('HDEL', ksh, dels, 1000)
    if #ready > 0 then
      local turn = rcall('HINCRBY', base .. 'fM', 't', fmt('%d', #ready)) - #ready
      local adds = {}
      for i, y in ipairs(ready) do
        adds[#adds + 1] = fmt('%d', turn + i)
        adds[#adds + 1] = y
      end
      flowRingAdd(base .. 'fK|' .. g, adds)
    end
    local gh = base .. 'fG|' .. g
    local gv = rcall('HMGET', gh, 'a', 'c')
    local gaS, gcS = gv[1], gv[2]
    local ga0, gc = tonumber(gaS) or 0, tonumber(gcS) or 0
    local ga = ga0 - total
    if ga < 0 then
      ga = 0
    end
    rcall('HSET', gh, 'a', fmt('%d', ga))
    -- The group's place in the queue's ring changes only if it was at its limit or a key joined.
    if (#ready > 0 or (gc > 0 and ga0 >= gc)) and flowGroupReady(base, g) then
      woke = true
    end
  end
  return woke
end

-- Queued run rid of key y of group g leaves its key's list without starting (cancel, expiry): the
-- one way such a run is taken out of its key, keeping the count of queued rids (fM q) and the
-- rings right (the key may leave them, or be forgotten).
local function flowUnqueue(base, rid, g, y)
  if rcall('LREM', base .. 'fq|' .. g .. '|' .. y, -1, rid) > 0 then
    rcall('HINCRBY', base .. 'fM', 'q', -1)
  end
  flowReady(base, g, y)
end

-- Run hash k of group g left active: its key's and group's slot is freed. Returns whether a key
-- or group became ready (idle workers should look).
local function flowFree(base, k, g)
  local y = rcall('HGET', k, 'y') or ''
  return flowFreeMany(base, { [g] = { [y] = 1 } })
end

