--[[
  wfq.lua: EXPERIMENT (bench/tools/wfq-proto.ts), not the product. Flow control by start-time fair
  queuing with virtual-time tags, in place of flow.lua's rings. The tool builds its scripts from the
  product's libraries with flow.lua's flowPush, flowFreeMany, flowFree and flowUnqueue taken out and
  these in their place (one more library, after flow.lua). Keys (of one queue, as flow.lua's):
    base..'fA'              ZSET  admitted runs of every key and group, member rid..'|'..g..'|'..y
                                  (the 26-character rid first: equal tags go in rid order), score
                                  the run's tag
    base..'fy|'..g          HASH  key state 'a;q;c;t;r;w;e;z;F;n': a q c t r e z as flow.lua (z
                                  unused), q counting the key's runs in fA and in both lists, w ''
                                  or '1' (waiting for its rate, in fW), F its finish tag (the tag
                                  of its latest admitted run), n its runs in fA
    base..'fp|'..g..'|'..y  LIST  runs popped from fA and parked (the key waits for its rate, or
                                  its limit was lowered): older than those in fq|
    base..'fq|'..g..'|'..y  LIST  runs not admitted yet (the key had no free slot, or runs waited)
    base..'fM'              HASH  v the virtual time V (the tag of the last run dispatched), w the
                                  first score of fW ('' none)
    base..'fG|'..g          HASH  a the group's active runs (no group limit or rate here)
  A run is admitted (into fA) with tag max(V, F) + 1/weight only while its key takes it at once:
  not waiting, nothing listed before it, and a + n below the key's limit; so a key at its limit has
  nothing in fA and costs reserve nothing. A slot freed admits min(free slots, listed) runs.
]]
local WFQ_STATE = '^(%d*);(%d*);(%d*);([^;]*);([^;]*);([^;]*);(%d*);([^;]*);([^;]*);(%d*)$'

-- The tool's `wfq-credit` build sets this: a slot is taken when a run is admitted (a counts the
-- key's admitted runs with its active ones, q only its listed runs, n stays 0), so reserve reads
-- and writes no key state and settle frees the slot; concurrency limits only (no rate checked).
local WFQ_CREDIT = false

-- A tag as text: '%d' while it is whole (weight 1), else exact.
local function wfqNum(x)
  if x == math.floor(x) and x < 1e15 then
    return fmt('%d', x)
  end
  return fmt('%.17g', x)
end

-- A key's state as a table (off the hot paths: admission, wake, single pushes).
local function wfqUnpack(s)
  local a, q, c, t, r, w, e, z, f, n
  if s then
    a, q, c, t, r, w, e, z, f, n = string.match(s, WFQ_STATE)
  end
  if not a then
    return nil
  end
  return {
    a = tonumber(a) or 0, q = tonumber(q) or 0, c = tonumber(c) or 0, t = t, r = r, w = w, e = tonumber(e) or 1, z = z,
    F = tonumber(f) or 0, n = tonumber(n) or 0,
  }
end

local function wfqNew()
  return { a = 0, q = 0, c = 0, t = '', r = '', w = '', e = 1, z = '', F = 0, n = 0 }
end

local function wfqPack(st)
  local e = ''
  if st.e ~= 1 then
    e = fmt('%d', st.e)
  end
  return fmt('%d;%d;%d;', st.a, st.q, st.c) .. st.t .. ';' .. st.r .. ';' .. st.w .. ';' .. e .. ';' .. st.z .. ';'
    .. wfqNum(st.F) .. ';' .. fmt('%d', st.n)
end

-- How many starts key state st's rate admits at `now` (nil: no rate).
local function wfqRoom(st, now)
  if st.r == '' then
    return nil
  end
  local tat = tonumber(st.t)
  flowGcra(st.r, tat, now) -- parses the rate into GCRA_RATES
  local parsed = GCRA_RATES[st.r]
  local interval, tau = parsed[1], parsed[2]
  local from = tat or 0
  if now > from then
    from = now
  end
  local room = math.floor((tau - (from - now)) / interval) + 1
  if room < 0 then
    room = 0
  end
  return room
end

-- Admits runs of key y of group g (state st, changed in place) from its lists, parked ones first:
-- as many as its free slots (and its rate at `now`, when given; without `now` a rate-limited key
-- takes one) allow; their tags and members appended to `adds`. Returns how many.
local function wfqAdmit(base, g, y, st, V, adds, now)
  local listed = st.q - st.n
  if listed <= 0 or st.w ~= '' then
    return 0
  end
  local k = listed
  if st.c > 0 and st.c - st.a - st.n < k then
    k = st.c - st.a - st.n
  end
  if st.r ~= '' then
    local room = 1
    if now then
      room = wfqRoom(st, now) - st.n
    end
    if room < k then
      k = room
    end
  end
  if k <= 0 then
    return 0
  end
  local tail = '|' .. g .. '|' .. y
  local rids = rcall('LPOP', base .. 'fp|' .. g .. '|' .. y, k) or {}
  if #rids < k then
    local more = rcall('LPOP', base .. 'fq|' .. g .. '|' .. y, k - #rids) or {}
    for _, rid in ipairs(more) do
      rids[#rids + 1] = rid
    end
  end
  local F = st.F
  local step = 1 / st.e
  for _, rid in ipairs(rids) do
    if F < V then
      F = V
    end
    F = F + step
    adds[#adds + 1] = wfqNum(F)
    adds[#adds + 1] = rid .. tail
  end
  st.F = F
  if WFQ_CREDIT then
    st.a = st.a + #rids
    st.q = st.q - #rids
    if #rids < k then
      st.q = 0 -- the lists held fewer than counted: they are empty
    end
  else
    st.n = st.n + #rids
    if #rids < k then
      st.q = st.n -- the lists held fewer than counted: they are empty
    end
  end
  return #rids
end

-- Appends (at the head: prepends) queued run rid to key y of group g (a retry, a recovered lease, a
-- back-off, a replay: one run; enqueue.lua does a batch its own way). Admitted at once when the key
-- takes it (at the front: tag V, ahead of every other admitted run), else listed.
local function flowPush(base, rid, g, y, n, m, u, v, front, kw)
  local ksh = base .. 'fy|' .. g
  local st = wfqUnpack(rcall('HGET', ksh, y))
  if not st then
    st = wfqNew()
    rcall('SADD', base .. 'fY', g)
  end
  st.c, st.r, st.e = tonumber(n) or 0, u or '', tonumber(kw) or 1
  local V = tonumber(rcall('HGET', base .. 'fM', 'v')) or 0
  if st.w == '' and st.q == st.n and (st.c <= 0 or st.a + st.n < st.c) then
    local tag = V
    if not front then
      local F = st.F
      if F < V then
        F = V
      end
      F = F + 1 / st.e
      st.F = F
      tag = F
    end
    rcall('ZADD', base .. 'fA', wfqNum(tag), rid .. '|' .. g .. '|' .. y)
    if WFQ_CREDIT then
      st.a = st.a + 1
    else
      st.n = st.n + 1
      st.q = st.q + 1
    end
  elseif front then
    rcall('LPUSH', base .. 'fp|' .. g .. '|' .. y, rid)
    st.q = st.q + 1
  else
    rcall('RPUSH', base .. 'fq|' .. g .. '|' .. y, rid)
    st.q = st.q + 1
  end
  rcall('HSET', ksh, y, wfqPack(st))
  local gh = base .. 'fG|' .. g
  rcall('HSET', gh, 'c', m or '0')
  flowSetRate(gh, v)
  return true
end

-- Slots freed by many runs at once: `freed[g][y]` runs of key y of group g left active. Per group,
-- one HMGET and one HSET of its keys' states (only a changes, in the text, unless the key has runs
-- listed: then min(free slots, listed) are admitted with fresh tags) and one read and write of the
-- group's count. `now`: for a rate-limited key's room (nil: it takes one). Returns whether runs
-- were admitted.
local function flowFreeMany(base, freed, now)
  local woke = false
  local V
  for g, keys in pairs(freed) do
    local ksh = base .. 'fy|' .. g
    local ys = {}
    for y in pairs(keys) do
      ys[#ys + 1] = y
    end
    local packed = flowKeyMany(ksh, ys)
    local writes, dels, adds = {}, {}, {}
    local total = 0
    for i, y in ipairs(ys) do
      local cnt = keys[y]
      total = total + cnt
      local s = packed[i]
      local aS, qS, cS, rest
      if s then
        aS, qS, cS, rest = string.match(s, '^(%d*);(%d*);(%d*);(.*)$')
      end
      if aS then
        local a, q = (tonumber(aS) or 0) - cnt, tonumber(qS) or 0
        if a < 0 then
          a = 0
        end
        local n = tonumber(string.match(rest, '^.*;(%d*)$')) or 0
        if q > n and string.match(rest, '^[^;]*;[^;]*;([^;]*)') == '' then
          -- Runs listed and not waiting: admitted as slots allow.
          local st = wfqUnpack(s)
          st.a = a
          if not V then
            V = tonumber(rcall('HGET', base .. 'fM', 'v')) or 0
          end
          wfqAdmit(base, g, y, st, V, adds, now)
          writes[#writes + 1] = y
          writes[#writes + 1] = wfqPack(st)
        elseif a <= 0 and q <= 0 then
          dels[#dels + 1] = y
          flowKeepTat(base, g, y, tonumber(string.match(rest, '^[^;]*')))
        else
          writes[#writes + 1] = y
          writes[#writes + 1] = fmt('%d;', a) .. qS .. ';' .. cS .. ';' .. rest
        end
      end
    end
    bulk('HSET', ksh, writes, 2000)
    bulk('HDEL', ksh, dels, 1000)
    if #adds > 0 then
      bulk('ZADD', base .. 'fA', adds, 2000)
      woke = true
    end
    local gh = base .. 'fG|' .. g
    local ga = (tonumber(rcall('HGET', gh, 'a')) or 0) - total
    if ga < 0 then
      ga = 0
    end
    rcall('HSET', gh, 'a', fmt('%d', ga))
  end
  return woke
end

-- Run hash k of group g left active (a lost lease): its key's and group's slot is freed.
local function flowFree(base, k, g)
  local y = rcall('HGET', k, 'y') or ''
  return flowFreeMany(base, { [g] = { [y] = 1 } })
end

-- Queued run rid of key y of group g leaves without starting (cancel, expiry): out of fA or of
-- its lists, the key's counts kept right (forgotten when nothing is left).
local function flowUnqueue(base, rid, g, y)
  local ksh = base .. 'fy|' .. g
  local st = wfqUnpack(rcall('HGET', ksh, y))
  if not st then
    return
  end
  if rcall('ZREM', base .. 'fA', rid .. '|' .. g .. '|' .. y) > 0 then
    st.n = st.n - 1
    st.q = st.q - 1
  elseif rcall('LREM', base .. 'fp|' .. g .. '|' .. y, -1, rid) > 0 or rcall('LREM', base .. 'fq|' .. g .. '|' .. y, -1, rid) > 0 then
    st.q = st.q - 1
  end
  if st.q <= 0 and st.a <= 0 then
    rcall('HDEL', ksh, y)
    flowKeepTat(base, g, y, tonumber(st.t))
  else
    rcall('HSET', ksh, y, wfqPack(st))
  end
end

-- Keys whose rate wait is over (at most `limit`): no longer waiting, their listed runs admitted as
-- their slots and rate allow. Returns whether `limit` were read, and the first wait still pending.
local function wfqWake(base, now, limit, V)
  local due = rcall('ZRANGEBYSCORE', base .. 'fW', '-inf', now, 'LIMIT', 0, limit)
  local adds = {}
  for _, gy in ipairs(due) do
    rcall('ZREM', base .. 'fW', gy)
    local cut = string.find(gy, '|', 1, true)
    local g, y = string.sub(gy, 1, cut - 1), string.sub(gy, cut + 1)
    local ksh = base .. 'fy|' .. g
    local st = wfqUnpack(rcall('HGET', ksh, y))
    if st then
      st.w = ''
      wfqAdmit(base, g, y, st, V, adds, now)
      rcall('HSET', ksh, y, wfqPack(st))
    end
  end
  bulk('ZADD', base .. 'fA', adds, 2000)
  local first = rcall('ZRANGE', base .. 'fW', 0, 0, 'WITHSCORES')
  return #due == limit, tonumber(first[2])
end
