--[[
  Helpers shared by the transition scripts. A script includes this file with the line
  `--!include common.lua: name, ...` naming the helpers it uses (replaced by their text, and that
  of the helpers they use, when the scripts are loaded: see scripts.ts).

  Keys of one queue share the hash tag `{<queue>}`; `base` is `<prefix>:{<queue>}:`.
    base..'r:'..rid    HASH  one run (rid: the 26-character ULID part of the run id `<queue>.<rid>`)
    base..'w:'..p      LIST  queued rids of priority p, FIFO
    base..'prios'      ZSET  priority levels with queued runs, score -p (highest first)
    base..'sched'      ZSET  scheduled rids by runAt
    base..'active'     ZSET  active rids by lease expiry, plus ACTIVE_PIN (below)
    base..'succeeded', base..'failed', base..'cancelled'
                       ZSET  finished rids by the time in their id (listing newest first, prune,
                             counts); ties are ordered by rid, so the order is the run id order
    base..'exp:'..m    LIST  rids of finished runs whose expiresAt falls in minute m (epoch ms of
                             its start), in the order they finished: prune deletes them
    base..'exps'       ZSET  the minutes that have such a list, by m
    base..'startby'    ZSET  rids with a deadline to start (field X) that may still expire, by X:
                             written with the run, removed when it is leased or cancelled, put back
                             when it is queued again with no attempt counted (promotion, release,
                             back-off); reserve sweeps those past (entries of runs no longer
                             queued are dropped then)
    base..'ik:'..task..':'..key  STRING  idempotency key -> rid, with PX ttl
    base..'db:'..task..':'..key  HASH  a debounce key: r its burst's rid, m the bound of its due time;
                             PX a minute past that run's due time (enqueue.lua), so none outlives it long
    base..'wake'       LIST  wake-up token for idle workers (BLPOP)
    base..'paused'     STRING  present while the queue is paused
    base..'st:'..minute  HASH  counters of one minute: e enqueued, d succeeded, f failed,
                             r retried, w<i>/u<i> wait/run latency histogram buckets
    base..'stm'        ZSET  the minutes that have counters
    base..'layout'     STRING  the layout version these keys were migrated to (layout.ts, migrate.lua)
  Flow control (docs/flow-control.md; g a group: a task name, no '|'; y a key: any text):
    base..'fq|'..g..'|'..y  LIST  queued rids of key y of group g, FIFO (not in any 'w:' list)
    base..'fy|'..g     HASH  the state of each key y of group g (field y; layout 3: one HMGET and
                             one HSET serve every key a reserve pass or a settlement touches), a
                             string 'a;q;c;t;r;w;e;z': a active runs, q queued runs (the length of
                             its 'fq|' list), c limit (0: none), t its GCRA time ('' none; once it
                             started under a rate), r rate ('<interval>,<burst>', '' none), w ''
                             or '1' while rate-limited or 'b' while backed off by a handler, e its
                             weight ('' for 1), z runs served in a row at the ring's head ('' for
                             0); the field is deleted when nothing is queued or active
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
    keys in a SET base..'fS' of g..'|'..y: migrate.lua converts them.)

  Run hash fields (short names to save memory; absent means the default):
    s state: q queued, s scheduled, a active, d succeeded, f failed, c cancelled
    t task, i input (JSON text), p priority (0), e enqueuedAt (the time in the run id),
    r runAt, a attempts (0), l leaseLosses (0), w worker, b startedAt of the latest attempt,
    f finishedAt, x expiresAt, k idempotency key, c traceparent, R result, E error, P progress,
    C retention once cancelled, ms (absent: the broker's default),
    O origin: where a run recorded finished from elsewhere ran (record.lua); absent for the broker's own,
    h history: one JSON array per recorded attempt, '\n'-separated:
      [attempt,"worker",startedAt,endedAt,"outcome"(,"error")]
    o open attempt: set when a run is leased. While set, the latest attempt is not in `h` but
      described by the run itself: a, w, b, and for a succeeded or failed run f and E. Settling
      as succeeded or failed thus writes no history (the hot path, and a small run keeps the
      compact listpack encoding). Every other end of an attempt (retry, lost, released,
      cancelled) appends it to `h` and clears `o`.
    W watched: set by watch(); transitions of a watched run PUBLISH its id on the events channel.
    g, y, n, m  flow control: group, key, the key's limit and the group's (a run without g has none)
    u, v  flow control: the key's rate and the group's ('<interval>,<burst>'; absent: none)
    K flow control: the key's weight (runs in a row per turn; absent: 1)
    X deadline to start (NewRun.startBy, epoch ms): reserve fails a never-started queued run past
      it (expired), found through base..'startby' or when reached; cleared by a replay
    Runs of a workflow (docs/workflows.md): G its workflow id, M how its input is built once ready
      (v value, l list, o object; absent: its own input), D its dependencies, one line each:
      rid TAB policy (c cancel, s skip, k continue) TAB name as JSON ('' for none); C is always set.
      A: a run that spawned runs (dynamic fan-out) and waits for some: a head line `<v|l|o> TAB
      <retention ms once succeeded>`, then the runs it awaits, one line each as in D.

  Workflow keys (docs/workflows.md; an edge to or from a run of another queue names it by its full
  run id `<queue>.<rid>` in we:, wd:, wv: and D, where an edge within the queue names the rid):
    base..'waiting'    ZSET  waiting rids by the time in their id (counts, listings)
    base..'wd:'..rid   SET   the dependencies of a waiting run not yet resolved
    base..'wv:'..rid   HASH  dependency rid -> its result ('' for none) once resolved
    base..'we:'..rid   HASH  the runs that wait for this one -> edge policy
                             (wd:, wv:, we: of a run are deleted with it; wd:, wv: also when it is made ready)
    base..'wf:'..id    HASH  a workflow: t created at, r its rids in this queue (comma-separated, in
                             order), n how many of them still exist (deleted with the last one); a
                             workflow over several queues has one in each of its queues, and in the
                             queue of its id also q (the other queues), a (every run id, in order)
                             and P (set while its creation is not complete: wfmulti.lua)
    base..'wr:'..rid   SET   the relay entries applied to this run: dependency run id (or '!') '|' token
    base..'wo'         LIST  the relay outbox of this queue (entries: see wfRelayOut)
    base..'wp'         ZSET  workflows over several queues whose creation is not complete (their
                             ulid), by the time it began (wfmulti.lua; the prune sweep reads it)
    base..'woN'        STRING  the token of its last entry
]]
local rcall = redis.call
-- Numbers given to redis.call are formatted with '%.17g' by Redis (a slow floating-point path):
-- integers the hot path writes are formatted here with '%d' instead.
local fmt = string.format

-- Every `active` set holds this member besides its leases. It is longer than 64 bytes, so Redis
-- keeps the set in its skiplist encoding: adding or removing a lease costs O(log n), where the
-- compact listpack encoding (used up to 128 entries) is scanned and reallocated on every change
-- (5% of Redis's time per run at concurrency 50). The member is never counted or listed, and a set
-- holding only it holds no leases. Its score is far in the future (the year 287,000) rather than
-- +inf, which a reserve script of an earlier version, running beside this one during an upgrade,
-- would have returned as its next due time: as a number it sleeps until, and not as a garbled one.
local ACTIVE_PIN = '~errand: not a run; keeps this sorted set in skiplist encoding (faster leases)'
local ACTIVE_PIN_SCORE = '9000000000000000'

-- The earliest lease of an `active` set: { rid, expiry }, or {} when it holds none.
local function earliestLease(key)
  local first = rcall('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[1] == ACTIVE_PIN then
    return {}
  end
  return first
end

-- Upper bounds (ms) of the latency histogram buckets (LATENCY_BUCKETS_MS, set at load).
local BUCKETS = { 0 } --!buckets
-- Per-minute counters are kept this long (real time), in ms.
local STATS_TTL = 172800000

-- The time (epoch ms) in a rid: its first 10 characters, Crockford base32
-- (0-9 A-H J K M N P-T V-Z). Computed from the bytes: no lookup table to build on every call.
local byte = string.byte
local function digit(b)
  if b < 58 then
    return b - 48
  elseif b < 73 then
    return b - 55
  elseif b < 76 then
    return b - 56
  elseif b < 79 then
    return b - 57
  elseif b < 86 then
    return b - 58
  end
  return b - 59
end
local function ridTime(rid)
  local b1, b2, b3, b4, b5, b6, b7, b8, b9, b10 = byte(rid, 1, 10)
  if not b10 then
    return 0
  end
  return ((((((((digit(b1) * 32 + digit(b2)) * 32 + digit(b3)) * 32 + digit(b4)) * 32 + digit(b5)) * 32 + digit(b6)) * 32
    + digit(b7)) * 32 + digit(b8)) * 32 + digit(b9)) * 32 + digit(b10)
end

-- Adds n to a counter of the minute being accumulated in `acc` (flushed by statFlush).
local function statAdd(acc, field, n)
  acc[field] = (acc[field] or 0) + n
end

-- The histogram bucket of a latency: the first bound it does not exceed, else the last bucket.
-- Counter names by prefix and bucket ('w3', 'u0', ...), made once per call rather than per run.
local BUCKET_FIELDS = { w = {}, u = {} }
local function statLatency(acc, prefix, ms)
  local i = #BUCKETS
  for j = 1, #BUCKETS do
    if ms <= BUCKETS[j] then
      i = j - 1
      break
    end
  end
  local names = BUCKET_FIELDS[prefix]
  local field = names[i]
  if not field then
    field = prefix .. i
    names[i] = field
  end
  acc[field] = (acc[field] or 0) + 1
end

local function statFlush(base, now, acc)
  if next(acc) == nil then
    return
  end
  local minute = now - (now % 60000)
  local k = base .. 'st:' .. minute
  local fresh = rcall('EXISTS', k) == 0
  for f, n in pairs(acc) do
    rcall('HINCRBY', k, f, fmt('%d', n))
  end
  if fresh then
    rcall('PEXPIRE', k, STATS_TTL)
    rcall('ZADD', base .. 'stm', minute, minute)
    rcall('ZREMRANGEBYSCORE', base .. 'stm', '-inf', '(' .. (minute - STATS_TTL))
  end
end

-- The history text with one more ended attempt. `a`, `b` are the stored strings (or false),
-- `nowS` the caller's time as given (a string: no number formatting).
local function appendHistory(h, a, w, b, nowS, outcome, err)
  local line = '[' .. (a or '0') .. ',' .. cjson.encode(w or '') .. ',' .. (b or '0') .. ',' .. nowS .. ',"' .. outcome .. '"'
  if err then
    line = line .. ',' .. cjson.encode(err)
  end
  line = line .. ']'
  if h then
    return h .. '\n' .. line
  end
  return line
end

-- Runs `cmd key args...` for a long list of args, in chunks (Lua's unpack has a stack limit);
-- `step` keeps pairs (score member) together.
local function bulk(cmd, key, args, step)
  local n = #args
  for i = 1, n, step do
    local j = i + step - 1
    if j > n then
      j = n
    end
    rcall(cmd, key, unpack(args, i, j))
  end
end

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

-- A key's state is one field of its group's hash base..'fy|'..g (field: the key), packed as
-- 'a;q;c;t;r;w;e;z' (see the layout above), so that one HMGET and one HSET serve every key a
-- reserve pass or a settlement batch touches. Unpacked: a table { a active, q queued (the length of
-- its list fq|), c limit (0: none), t GCRA time (nil: none), r rate ('<interval>,<burst>', ''
-- none), w '' or '1' (rate-limited) or 'b' (backed off), e weight (1), z runs served in a row }.
-- The hot paths (reserve's passes, flowFreeMany) read and write the text directly instead
-- (KEY_STATE below): a table and '%.17g' per key and call cost more than the commands saved.
local KEY_STATE = '^(%d*);(%d*);(%d*);([^;]*);([^;]*);([^;]*);(%d*);(%d*)$'
local function flowKeyNew()
  return { a = 0, q = 0, c = 0, r = '', t = nil, w = '', e = 1, z = 0 }
end

-- The state of packed text s (nil, or unreadable: nil).
local function flowKeyUnpack(s)
  if not s then
    return nil
  end
  local a, q, c, t, r, w, e, z = string.match(s, KEY_STATE)
  if not a then
    return nil
  end
  local st = { a = tonumber(a) or 0, q = tonumber(q) or 0, c = tonumber(c) or 0, r = r, t = tonumber(t), w = w }
  st.e, st.z = tonumber(e) or 1, tonumber(z) or 0
  return st
end

local function flowKeyPack(st)
  local t, e, z = '', '', ''
  if st.t then
    t = fmt('%.17g', st.t)
  end
  if st.e ~= 1 then
    e = fmt('%d', st.e)
  end
  if st.z > 0 then
    z = fmt('%d', st.z)
  end
  return fmt('%d;%d;%d;%s;%s;%s;%s;%s', st.a, st.q, st.c, t, st.r, st.w, e, z)
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
      rcall('ZADD', ring, flowTurn(base), y)
    end
  else
    rcall('ZREM', ring, y)
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
  st.q, st.c, st.r, st.e = len, tonumber(n) or 0, u or '', tonumber(kw) or 1
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
    st.w = 'b'
    rcall('HSET', ksh, y, flowKeyPack(st))
  end
end

-- GCRA (as gcra() in src/broker/shared/flow.ts, on the same doubles): `rate` '<interval>,<burst>',
-- `tat` the stored time (nil: none). Returns true and the new time when a start at `now` is
-- admitted, else false and when the key may start again (whole ms, rounded up).
-- A rate's interval and tau (interval * (burst - 1)), parsed once per script call.
local GCRA_RATES = {}
local function flowGcra(rate, tat, now)
  local parsed = GCRA_RATES[rate]
  if not parsed then
    local cut = string.find(rate, ',', 1, true)
    local i, burst = tonumber(string.sub(rate, 1, cut - 1)), tonumber(string.sub(rate, cut + 1))
    parsed = { i, i * (burst - 1) }
    GCRA_RATES[rate] = parsed
  end
  local interval, tau = parsed[1], parsed[2]
  local from = tat or 0
  if now > from then
    from = now
  end
  if from - now > tau then
    return false, math.ceil(from - tau)
  end
  return true, from + interval
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
      -- Only a changes: the text is cut after c and put together again (see flowKeyUnpack).
      local s = packed[i]
      local aS, qS, cS, rest
      if s then
        aS, qS, cS, rest = string.match(s, '^(%d*);(%d*);(%d*);(.*)$')
      end
      if aS then
        local a0, c = tonumber(aS) or 0, tonumber(cS) or 0
        local a = a0 - cnt
        if a < 0 then
          a = 0
        end
        if a <= 0 and (tonumber(qS) or 0) <= 0 then
          -- Nothing active, nothing queued: forgotten (it is in no ring).
          dels[#dels + 1] = y
          flowKeepTat(base, g, y, tonumber(string.match(rest, '^[^;]*')))
        else
          writes[#writes + 1] = y
          writes[#writes + 1] = fmt('%d;', a) .. qS .. ';' .. cS .. ';' .. rest
          -- At its limit before, so out of the ring: it may be ready now. (A key that had a
          -- free slot keeps its place in the ring: it cannot change.)
          if c > 0 and a0 >= c and a < c and (tonumber(qS) or 0) > 0 and string.match(rest, '^[^;]*;[^;]*;([^;]*)') == '' then
            ready[#ready + 1] = y
          end
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

-- Appends (or, at the head, prepends) a run to the list of its priority level; a run under flow
-- control (g, the field of its hash, given) to the list of its key instead.
local function pushQueued(base, rid, p, front, g)
  if g then
    local v = rcall('HMGET', base .. 'r:' .. rid, 'y', 'n', 'm', 'u', 'v', 'K')
    local y, n, m, u, rv, kw = v[1], v[2], v[3], v[4], v[5], v[6]
    flowPush(base, rid, g, y or '', n, m, u, rv, front, kw)
    return
  end
  local wk = base .. 'w:' .. p
  local n
  if front then
    n = rcall('LPUSH', wk, rid)
  else
    n = rcall('RPUSH', wk, rid)
  end
  if n == 1 then
    rcall('ZADD', base .. 'prios', -tonumber(p), p)
  end
end

-- Takes run rid out of where it waits, by its state s: waiting (w: `waiting` and its wait keys
-- wd:, wv:), queued (q: the list of its priority level `p`, the level dropped once empty; a queued
-- run under flow control is in its key's list instead: the caller's) or scheduled (s: `sched`).
-- What becomes of the run (finish) is the caller's. Used by cancel.lua and wfcancel.lua.
local function unplace(base, rid, s, p)
  if s == 'w' then
    rcall('ZREM', base .. 'waiting', rid)
    rcall('DEL', base .. 'wd:' .. rid, base .. 'wv:' .. rid)
  elseif s == 'q' then
    p = p or '0'
    local wk = base .. 'w:' .. p
    rcall('LREM', wk, -1, rid)
    if rcall('LLEN', wk) == 0 then
      rcall('ZREM', base .. 'prios', p)
    end
  elseif s == 's' then
    rcall('ZREM', base .. 'sched', rid)
  end
end

-- A new run as the creating scripts (enqueue, schedfire, wfcreate, and wfSpawn for the runs a
-- spawn creates) take it, the one place its fields are read and written: 14 values from a[j] (`a`:
-- ARGV unless given, as a spawn's payload gives its runs; pushRunArgs in run-args.ts): rid, task,
-- input, priority, runAt, enqueuedAt ('' when it is the time in the run id), idempotency key (''
-- for none), its ttl ms, traceparent ('' for none), retention once cancelled ('' for the broker's
-- default: see cancel.lua; a workflow's runs always give it), flow spec ('' for none, else
-- '<group>|<key limit>|<group limit>|<key rate>|<group rate>|<key weight>|<key>': limits 0 none,
-- rates '<interval>,<burst>' or '', the key last as it may hold '|'), schedule mark ('' for none:
-- see ScheduleMark in core/run.ts), deadline to start ('' for none; stored as X), debounce (''
-- for none, else '<maxAt or empty>|<key>': enqueue.lua applies it). A workflow's run has 2 more
-- after them (pushWorkflowRunArgs): inputFrom and dependencies, read by its caller (wfAddRun).
-- Fills table `r` (a script's one table, reused for each run: no table made per run) and returns it;
-- r.k is the run's hash key in queue `base`. The flow fields y n m u v are set only when r.g ~= ''
-- (r.w, the key's weight, is '1' without one).
local function newRun(base, j, r, a)
  a = a or ARGV
  local rid = a[j]
  r.rid, r.k, r.task, r.input, r.p, r.runAt = rid, base .. 'r:' .. rid, a[j + 1], a[j + 2], a[j + 3], a[j + 4]
  r.e, r.ik, r.ittl, r.tp, r.cret = a[j + 5], a[j + 6], a[j + 7], a[j + 8], a[j + 9]
  r.g, r.w, r.mark, r.startBy, r.deb = '', '1', a[j + 11], a[j + 12], a[j + 13]
  local spec = a[j + 10]
  if spec ~= '' then
    local parts, from = {}, 1
    for _ = 1, 6 do
      local cut = string.find(spec, '|', from, true)
      parts[#parts + 1] = string.sub(spec, from, cut - 1)
      from = cut + 1
    end
    r.g, r.n, r.m, r.u, r.v, r.w = parts[1], parts[2], parts[3], parts[4], parts[5], parts[6]
    r.y = string.sub(spec, from)
  end
  return r
end

-- The run that stands for new run r, if one does: r's own id when it exists, else the run its
-- idempotency key names. Returns that rid and its state code; nil when r is to be created (its
-- key, if any, then names r). A key never stands for a run that no longer exists: one left naming
-- a deleted run (by a version that kept keys past their runs, or by hand) is taken by r.
local function runExisting(base, r)
  local existing
  if rcall('EXISTS', r.k) == 1 then
    existing = r.rid
  elseif r.ik ~= '' then
    local ikk = base .. 'ik:' .. r.task .. ':' .. r.ik
    existing = rcall('GET', ikk)
    if existing and rcall('EXISTS', base .. 'r:' .. existing) == 0 then
      existing = nil
    end
    if not existing then
      rcall('SET', ikk, r.rid, 'PX', r.ittl)
    end
  end
  if not existing then
    return nil
  end
  local s = redis.pcall('HGET', base .. 'r:' .. existing, 's')
  if type(s) ~= 'string' then
    s = 'q'
  end
  return existing, s
end

-- Writes the hash of new run r in state `state` (q, s, or w: waiting); `more`: further field,
-- value pairs to store (nil: none). Only the hash: placing it (a list, sched, a flow key) is the
-- caller's.
local function runWrite(r, state, more)
  local f = { 's', state, 't', r.task, 'i', r.input }
  if r.p ~= '0' then
    f[#f + 1] = 'p'
    f[#f + 1] = r.p
  end
  if r.e ~= '' then
    f[#f + 1] = 'e'
    f[#f + 1] = r.e
  end
  if state == 's' then
    f[#f + 1] = 'r'
    f[#f + 1] = r.runAt
  end
  if r.ik ~= '' then
    f[#f + 1] = 'k'
    f[#f + 1] = r.ik
  end
  if r.tp ~= '' then
    f[#f + 1] = 'c'
    f[#f + 1] = r.tp
  end
  if r.cret ~= '' then
    f[#f + 1] = 'C'
    f[#f + 1] = r.cret
  end
  if r.g ~= '' then
    f[#f + 1] = 'g'
    f[#f + 1] = r.g
    f[#f + 1] = 'y'
    f[#f + 1] = r.y
    f[#f + 1] = 'n'
    f[#f + 1] = r.n
    f[#f + 1] = 'm'
    f[#f + 1] = r.m
    if r.u ~= '' then
      f[#f + 1] = 'u'
      f[#f + 1] = r.u
    end
    if r.v ~= '' then
      f[#f + 1] = 'v'
      f[#f + 1] = r.v
    end
    if r.w ~= '1' then
      f[#f + 1] = 'K'
      f[#f + 1] = r.w
    end
  end
  if r.mark ~= '' then
    f[#f + 1] = 'S'
    f[#f + 1] = r.mark
  end
  if r.startBy ~= '' then
    f[#f + 1] = 'X'
    f[#f + 1] = r.startBy
    -- Indexed by its deadline (reserve fails it then, wherever it is in its list): the base is
    -- r.k without 'r:' and the rid.
    rcall('ZADD', string.sub(r.k, 1, -(#r.rid + 3)) .. 'startby', r.startBy, r.rid)
  end
  if more then
    for i = 1, #more do
      f[#f + 1] = more[i]
    end
  end
  rcall('HSET', r.k, unpack(f))
end

-- Creates new run r (read by newRun) one at a time, as schedfire and wfAddRun do (enqueue places a
-- batch its own way): its hash written (runWrite, with `more` as there), then scheduled in
-- base..'sched' when its runAt is after `now`, else queued (pushQueued: under flow control, to its
-- key's list). Returns its state code, q or s.
local function runCreate(base, r, now, more)
  local state = 'q'
  if tonumber(r.runAt) > now then
    state = 's'
    rcall('ZADD', base .. 'sched', r.runAt, r.rid)
  end
  runWrite(r, state, more)
  if state == 'q' then
    pushQueued(base, r.rid, r.p, false, r.g ~= '' and r.g or nil)
  end
  return state
end

-- Leaves a wake-up token for one idle worker, unless one is already waiting.
local function wake(base)
  local k = base .. 'wake'
  if rcall('LLEN', k) == 0 then
    rcall('RPUSH', k, '1')
  end
end

-- Deletes a run's hash `k` and, while it still names the run, its idempotency key (fields t and
-- k): a key never stands for a run that no longer exists (purge, prune, retention 0 alike).
local function dropRun(base, k, rid)
  local v = redis.pcall('HMGET', k, 't', 'k', 'G')
  local task, key, wf = v[1], v[2], v[3]
  if not v['err'] and task and key then
    local ikk = base .. 'ik:' .. task .. ':' .. key
    if redis.pcall('GET', ikk) == rid then
      rcall('DEL', ikk)
    end
  end
  if not v['err'] and wf then
    rcall('DEL', base .. 'wd:' .. rid, base .. 'wv:' .. rid, base .. 'we:' .. rid, base .. 'wr:' .. rid)
    -- The workflow's index goes with its last run (wf ids are `<queue>.<ulid>`: the ulid names it).
    local wk = base .. 'wf:' .. string.sub(wf, -26)
    if redis.pcall('HINCRBY', wk, 'n', -1) <= 0 then
      rcall('DEL', wk)
    end
  end
  rcall('DEL', k)
end

-- Expiry lists group finished runs by the minute their retention ends (see the layout above).
local EXPIRY_MINUTE = 60000

-- Appends rids to the expiry list of minute m, registering the minute when the list is new.
local function pushExpiry(base, m, rids)
  local mS = fmt('%d', m)
  local n = #rids
  for i = 1, n, 1000 do
    local j = i + 999
    if j > n then
      j = n
    end
    if rcall('RPUSH', base .. 'exp:' .. mS, unpack(rids, i, j)) == j - i + 1 then
      rcall('ZADD', base .. 'exps', mS, mS)
    end
  end
end

-- Moves a run to a finished state (code d, f or c; zset succeeded, failed or cancelled), with
-- the extra fields given. It is indexed by the time in its id (listing, prune, counts), and listed
-- for deletion by prune in the minute its retention ends (a list push, where a PEXPIRE per run
-- cost Redis about 10% of its time per run and grew the expiry table every key lookup consults).
-- Retention 0: the run is deleted at once (with its idempotency key) and nothing is recorded.
-- With `batch` (from newBatch), the index and expiry entries are collected for flushFinished, which
-- writes each with one command per call instead of one per run.
local function finish(base, k, rid, code, zset, now, nowS, ret, batch, ...)
  if ret <= 0 then
    dropRun(base, k, rid)
    return
  end
  local x = now + ret
  rcall('HSET', k, 's', code, 'f', nowS, 'x', fmt('%d', x), ...)
  local m = x - x % EXPIRY_MINUTE
  if batch then
    local list = batch.index[zset]
    if not list then
      list = {}
      batch.index[zset] = list
    end
    list[#list + 1] = fmt('%d', ridTime(rid))
    list[#list + 1] = rid
    local rids = batch.expiry[m]
    if not rids then
      rids = {}
      batch.expiry[m] = rids
    end
    rids[#rids + 1] = rid
  else
    rcall('ZADD', base .. zset, fmt('%d', ridTime(rid)), rid)
    pushExpiry(base, m, { rid })
  end
end

local function newBatch()
  return { index = {}, expiry = {} }
end

local function flushFinished(base, batch)
  for zset, list in pairs(batch.index) do
    bulk('ZADD', base .. zset, list, 2000)
  end
  for m, rids in pairs(batch.expiry) do
    pushExpiry(base, m, rids)
  end
end

--!run-errors

-- Publishes the id (`prefix .. rid`, joined only then) of a watched run on the events channel.
local function notify(chan, prefix, rid, watched)
  if watched then
    rcall('PUBLISH', chan, prefix .. rid)
  end
end

-- Replays a failed or cancelled run (`zset` the finished index it leaves, 'failed' or 'cancelled';
-- the rest its fields p W o h a w b f E, as read by the caller): back to queued at the tail of its level with
-- attempts and leaseLosses reset, no longer expiring (prune skips its entry in an expiry list: it
-- has no expiresAt), due from `nowS` (its wait is counted from the replay); the failed attempt,
-- when still open, is appended to the history first. The caller leaves the wake-up token.
local function replay(base, k, rid, id, chan, nowS, zset, prio, watched, open, hist, att, holder, started, finished, err)
  if open then
    rcall('HSET', k, 'h', appendHistory(hist, att, holder, started, finished or '0', 'failed', err or nil))
  end
  rcall('HSET', k, 's', 'q', 'a', 0, 'l', 0, 'r', nowS)
  rcall('HDEL', k, 'f', 'x', 'E', 'P', 'o', 'X')
  rcall('PERSIST', k) -- a run finished by a version that gave finished runs a TTL
  rcall('ZREM', base .. zset, rid)
  pushQueued(base, rid, prio or '0', false, rcall('HGET', k, 'g'))
  notify(chan, id, '', watched)
end

--[[
  Workflows (docs/workflows.md). wfJoin: the JSON text joined from the results in wv: of run `rid`,
  in the order of `deps` (lines as D; a line that does not read as one is skipped), as `mode` says
  (v value, l list, o object). A waiting run `rid` whose last dependency is resolved becomes
  queued (wfReady): its input so built, due now, its wait keys gone.
]]
local function wfJoin(base, rid, mode, deps)
  local flat = rcall('HGETALL', base .. 'wv:' .. rid)
  local values = {}
  for j = 1, #flat, 2 do
    values[flat[j]] = flat[j + 1]
  end
  local parts = {}
  for line in string.gmatch(deps or '', '[^\n]+') do
    local dep, name = string.match(line, '^([^\t]*)\t[^\t]*\t(.*)$')
    if dep then
      local val = values[dep]
      if not val or val == '' then
        val = 'null'
      end
      if mode == 'o' then
        parts[#parts + 1] = name .. ':' .. val
      else
        parts[#parts + 1] = val
      end
    end
  end
  if mode == 'v' then
    return parts[1] or 'null'
  elseif mode == 'l' then
    return '[' .. table.concat(parts, ',') .. ']'
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

local function wfReady(base, rid, nowS)
  local k = base .. 'r:' .. rid
  local v = rcall('HMGET', k, 'M', 'D', 'p')
  local mode, deps, prio = v[1], v[2], v[3]
  if mode then
    rcall('HSET', k, 'i', wfJoin(base, rid, mode, deps))
  end
  rcall('HSET', k, 's', 'q', 'r', nowS)
  rcall('ZREM', base .. 'waiting', rid)
  rcall('DEL', base .. 'wd:' .. rid, base .. 'wv:' .. rid)
  pushQueued(base, rid, prio or '0', false)
end

--[[
  The relay between slots (docs/workflows.md, "Redis Cluster"): an edge whose dependent is in
  another queue (its `we:` field, and its line in the dependent's D and wd:, is then the full run
  id `<queue>.<rid>`, where an edge within the queue names the 26-character rid) is not applied by
  this script but recorded in this slot's outbox `wo`, one entry per edge:
    token TAB dependent run id TAB dependency run id ('!' for the release of a root) TAB op TAB
    policy TAB result
  op d succeeded (with its result), f failed or cancelled, r retried (rewait), g release (a root
  of a workflow over several queues, once its creation is complete). The token (INCR of `woN`, '@',
  the caller's now) is unique; the dependent's slot remembers the entries it applied (`wr:<rid>`:
  dependency '|' token), so an entry applied twice (a drain repeated after a crash between applying
  and removing it) changes nothing. Drained by the broker (wfrelay.lua on the dependent's slot, then
  LREM here).
]]
local function wfRelayOut(base, d, src, op, pol, res, nowS)
  local token = rcall('INCR', base .. 'woN') .. '@' .. nowS
  rcall('RPUSH', base .. 'wo', token .. '\t' .. d .. '\t' .. src .. '\t' .. op .. '\t' .. pol .. '\t' .. res)
end

--[[
  One edge: the end of dependency `src` (as the dependent's wd: names it; `srcId` its run id)
  applied to waiting run `d` of this slot (`good`: succeeded with `res`; otherwise failed or
  cancelled; `pol` the edge policy). A resolved dependency is removed from the dependent's set
  (SREM: a second report removes nothing), and the dependent is made ready only by the removal that
  empties the set. A dependent cancelled or skipped, or a spawning run whose awaited runs are all
  done, is appended to `todo` (3 per run: rid, ok, result) for its own dependents and to `finished`
  (see wfCascade), which finishes it once the cascade is done. Returns whether a run became queued.
]]
local function wfEdge(base, qp, chan, now, nowS, d, src, srcId, good, res, pol, todo, finished)
  local dk = base .. 'r:' .. d
  local v = redis.pcall('HMGET', dk, 's', 'W', 'C', 'A')
  local ds, watched, ownRet, adopt = v[1], v[2], v[3], v[4]
  if v['err'] then
    return false
  end
  local woke = false
  if good or pol == 'k' then
    -- Recorded whatever the dependent's state: one cancelled by another dependency keeps its
    -- wait keys, and a retry of that dependency makes it wait again for what is still missing
    -- (as SQLite marks the edge resolved). Made ready only while it waits.
    local wd = base .. 'wd:' .. d
    if rcall('SREM', wd, src) == 1 then
      if good then
        rcall('HSET', base .. 'wv:' .. d, src, res)
      else
        rcall('HSET', base .. 'wv:' .. d, src, '')
      end
      if ds == 'w' then
        if rcall('SCARD', wd) == 0 then
          if adopt then
            -- A run that spawned runs (dynamic fan-out): it succeeds with their values.
            local head = string.match(adopt, '^[^\n]*')
            local mode, ret = string.match(head, '^([^\t]*)\t(.*)$')
            local value = wfJoin(base, d, mode, string.sub(adopt, #head + 2))
            rcall('HSET', dk, 's', 'd')
            rcall('ZREM', base .. 'waiting', d)
            rcall('DEL', wd, base .. 'wv:' .. d)
            if value == 'null' then
              finished[#finished + 1] = { dk, d, 'd', 'succeeded', tonumber(ret) or 0 }
            else
              finished[#finished + 1] = { dk, d, 'd', 'succeeded', tonumber(ret) or 0, nil, value }
            end
            todo[#todo + 1] = d
            todo[#todo + 1] = true
            todo[#todo + 1] = value
          else
            wfReady(base, d, nowS)
            woke = true
          end
        end
        notify(chan, qp, d, watched)
      end
    end
  elseif ds == 'w' then
    -- Its wait keys stay (until it is deleted): a retry of the failed step makes it wait again.
    rcall('ZREM', base .. 'waiting', d)
    -- Finished once the cascade is done: a retention of 0 deletes it, and its edges with it.
    local ret = tonumber(ownRet) or 86400000
    if pol == 'c' then
      rcall('HSET', dk, 's', 'c')
      finished[#finished + 1] = { dk, d, 'c', 'cancelled', ret, dependencyFailedError(srcId) }
      todo[#todo + 1] = d
      todo[#todo + 1] = false
    else
      rcall('HSET', dk, 's', 'd')
      finished[#finished + 1] = { dk, d, 'd', 'succeeded', ret }
      todo[#todo + 1] = d
      todo[#todo + 1] = true
    end
    todo[#todo + 1] = ''
    notify(chan, qp, d, watched)
  end
  return woke
end

--[[
  Applies the ends of runs of this slot listed in `todo` (3 per run: rid, ok, result; ok:
  succeeded with result, '' for none; else failed or cancelled) to the runs that wait for them,
  and transitively to those they cancel or skip; a dependent in another queue gets an outbox entry
  instead (wfRelayOut). `finished` (may be nil) holds runs wfEdge ended; they are finished here,
  once the cascade is done (finish deletes a run kept 0 ms, and its edge index): { key, rid, state
  code, finished set, retention, error or nil, result or nil }. Returns whether a run became
  queued, and whether an entry was written.
]]
local function wfCascade(base, qp, chan, now, nowS, todo, finished)
  finished = finished or {}
  local woke, relayed = false, false
  local i = 1
  while i <= #todo do
    local src, good, res = todo[i], todo[i + 1], todo[i + 2]
    i = i + 3
    local edges = rcall('HGETALL', base .. 'we:' .. src)
    for j = 1, #edges, 2 do
      local d, pol = edges[j], edges[j + 1]
      if #d ~= 26 then
        if good then
          wfRelayOut(base, d, qp .. src, 'd', pol, res, nowS)
        else
          wfRelayOut(base, d, qp .. src, 'f', pol, '', nowS)
        end
        relayed = true
      elseif wfEdge(base, qp, chan, now, nowS, d, src, qp .. src, good, res, pol, todo, finished) then
        woke = true
      end
    end
  end
  for _, f in ipairs(finished) do
    if f[6] then
      finish(base, f[1], f[2], f[3], f[4], now, nowS, f[5], nil, 'E', f[6])
    elseif f[7] then
      finish(base, f[1], f[2], f[3], f[4], now, nowS, f[5], nil, 'R', f[7])
    else
      finish(base, f[1], f[2], f[3], f[4], now, nowS, f[5], nil)
    end
  end
  return woke, relayed
end

-- The end of run `rid` of a workflow applied to the runs that wait for it (see wfCascade).
-- Returns whether a run became queued.
local function wfResolve(base, qp, chan, now, nowS, rid, ok, result)
  local woke = wfCascade(base, qp, chan, now, nowS, { rid, ok, result })
  return woke
end

--[[
  Retry from a step: run `rid` of a workflow was replayed; the runs its failure cancelled (reason
  dependency_failed), transitively, wait again. Their wait sets still hold the replayed runs, and
  the results of the dependencies that succeeded are still in wv:. A dependent in another queue
  gets an outbox entry (op r: its slot applies the same, wfRewaitFrom).
]]
local function wfRewait(base, qp, rid, nowS)
  local rerun = { rid }
  local seen = { [rid] = true }
  local i = 1
  while i <= #rerun do
    local src = rerun[i]
    local edges = rcall('HGETALL', base .. 'we:' .. src)
    i = i + 1
    for j = 1, #edges, 2 do
      local d = edges[j]
      if #d ~= 26 then
        wfRelayOut(base, d, qp .. src, 'r', edges[j + 1], '', nowS)
      else
        local k = base .. 'r:' .. d
        local v = redis.pcall('HMGET', k, 's', 'E')
        local ds, err = v[1], v[2]
        if not seen[d] and not v['err'] and ds == 'c' and err and string.find(err, '"reason":"dependency_failed"', 1, true) then
          seen[d] = true
          rerun[#rerun + 1] = d
          rcall('HSET', k, 's', 'w')
          rcall('HDEL', k, 'f', 'x', 'E')
          rcall('PERSIST', k)
          rcall('ZREM', base .. 'cancelled', d)
          rcall('ZADD', base .. 'waiting', ridTime(d), d)
        end
      end
    end
  end
  for n = 2, #rerun do
    local d = rerun[n]
    local v = rcall('HMGET', base .. 'r:' .. d, 'D', 'A')
    local own, awaited = v[1], v[2]
    -- A: a spawning run's head line, then what it awaits
    local deps = (own or '') .. '\n' .. (awaited or '')
    for line in string.gmatch(deps, '[^\n]+') do
      local dep = string.match(line, '^([^\t]*)\t')
      if dep and seen[dep] then
        rcall('SADD', base .. 'wd:' .. d, dep)
        rcall('HDEL', base .. 'wv:' .. d, dep)
      end
    end
  end
end

--[[
  The relay applied on the dependent's slot (wfrelay.lua): op r of dependency `src` (a run id):
  run `d`, if its failure cancelled it (reason dependency_failed), waits again for `src`, and what
  it cancelled in turn (wfRewait). A run waiting already is left as it is.
]]
local function wfRewaitFrom(base, qp, d, src, nowS)
  local k = base .. 'r:' .. d
  local v = redis.pcall('HMGET', k, 's', 'E')
  local ds, err = v[1], v[2]
  if v['err'] or ds ~= 'c' or not err or not string.find(err, '"reason":"dependency_failed"', 1, true) then
    return
  end
  rcall('HSET', k, 's', 'w')
  rcall('HDEL', k, 'f', 'x', 'E')
  rcall('PERSIST', k)
  rcall('ZREM', base .. 'cancelled', d)
  rcall('ZADD', base .. 'waiting', ridTime(d), d)
  rcall('SADD', base .. 'wd:' .. d, src)
  rcall('HDEL', base .. 'wv:' .. d, src)
  wfRewait(base, qp, d, nowS)
end

--[[
  A root of a workflow over several queues is created waiting for '!' (its workflow not complete
  yet); its release removes that: the run is queued (or scheduled at its runAt, field r), unless it
  was cancelled meanwhile. Returns whether it was queued or scheduled.
]]
local function wfRelease(base, qp, chan, rid, now, nowS)
  local k = base .. 'r:' .. rid
  local wd = base .. 'wd:' .. rid
  if rcall('SREM', wd, '!') == 0 then
    return false
  end
  local v = rcall('HMGET', k, 's', 'r', 'W')
  local state, runAtS, watched = v[1], v[2], v[3]
  if state ~= 'w' or rcall('SCARD', wd) > 0 then
    return false
  end
  local runAt = tonumber(runAtS)
  if runAt and runAt > now then
    rcall('HSET', k, 's', 's')
    rcall('ZREM', base .. 'waiting', rid)
    rcall('DEL', wd, base .. 'wv:' .. rid)
    rcall('ZADD', base .. 'sched', runAtS, rid)
  else
    wfReady(base, rid, nowS)
  end
  notify(chan, qp, rid, watched)
  return true
end

-- Fails an unreadable run (not a hash, or lacking task or input) with reason `corrupt`.
-- A run of a workflow failed so reaches the runs that wait for it, as any terminal failure does
-- (before it is finished: with retention 0 that deletes it and its edges). Returns whether a run
-- became queued.
local function failCorrupt(base, k, rid, id, now, nowS, ret, why, acc, chan)
  local err = corruptError(id, why)
  local woke = wfResolve(base, string.sub(id, 1, #id - #rid), chan, now, nowS, rid, false, '')
  if rcall('TYPE', k)['ok'] ~= 'hash' then
    rcall('DEL', k)
  else
    rcall('HDEL', k, 'o')
  end
  finish(base, k, rid, 'f', 'failed', now, nowS, ret, nil, 'E', err)
  if acc then
    statAdd(acc, 'f', 1)
  end
  return woke
end

--[[
  Creates run r (read by newRun) of workflow `wfId` (wfcreate.lua, and the runs a spawn creates):
  queued, or scheduled when its runAt is later than now, or waiting when it has dependencies (deps:
  lines as D): in `waiting`, its dependencies in wd:<rid>, itself in the we: edge index of each of
  them. Its fields are written as enqueue writes them (runWrite: C, its retention once cancelled,
  always given for a workflow's run), then a workflow's own: G its workflow, M how its input is
  built (mode: '', v, l, o), D its dependencies, and for a held run its runAt in r. An idempotency
  key names it (the caller checked it is free). `held`: a root of a workflow over several queues,
  created waiting for '!' (its release, wfRelease). A dependency in another queue (named by its
  full run id) is in wd: and D only: its edge index is in its own slot.
  Returns whether idle workers must be woken.
]]
local function wfAddRun(base, wfId, now, r, mode, deps, held)
  local rid, runAtS = r.rid, r.runAt
  local more = { 'G', wfId }
  if held and tonumber(runAtS) > now then
    more[#more + 1] = 'r'
    more[#more + 1] = runAtS
  end
  if mode ~= '' then
    more[#more + 1] = 'M'
    more[#more + 1] = mode
  end
  if deps ~= '' then
    more[#more + 1] = 'D'
    more[#more + 1] = deps
  end
  if r.ik ~= '' then
    rcall('SET', base .. 'ik:' .. r.task .. ':' .. r.ik, rid, 'PX', r.ittl)
  end
  if deps == '' and not held then
    -- Queued or scheduled, as any new run; a scheduled run due before every other wakes workers.
    local first = tonumber(runAtS) > now and rcall('ZRANGE', base .. 'sched', 0, 0, 'WITHSCORES')
    if runCreate(base, r, now, more) == 'q' then
      return true
    end
    return not first[2] or tonumber(runAtS) < tonumber(first[2])
  end
  runWrite(r, 'w', more)
  rcall('ZADD', base .. 'waiting', ridTime(rid), rid)
  if held then
    rcall('SADD', base .. 'wd:' .. rid, '!')
  end
  for line in string.gmatch(deps, '[^\n]+') do
    local dep, pol = string.match(line, '^([^\t]*)\t([^\t]*)\t')
    rcall('SADD', base .. 'wd:' .. rid, dep)
    if #dep == 26 then
      rcall('HSET', base .. 'we:' .. dep, rid, pol)
    end
  end
  return false
end

--[[
  Dynamic fan-out (docs/workflows.md): the held run `rid` (hash k) ends its attempt (the history
  gets it, outcome `spawned`) by creating the runs of `payload` (see spawnPayload in workflows.ts)
  and waiting, in `waiting`, for those it awaits: wd:/we: as for a dependency, and field A (a head
  line `<mode> TAB <retention ms>`, then one line per awaited run as in D), which wfResolve reads to
  finish it with their values. The runs join its workflow (G), or one named by its own id. Nothing
  is written when a run id is taken: returns false and that id. Else returns whether idle workers
  must be woken.
]]
local function wfSpawn(base, qp, now, nowS, rid, k, payload, retS, worker, att, started, acc)
  local sp = cjson.decode(payload)
  for _, r in ipairs(sp.r) do
    if rcall('EXISTS', base .. 'r:' .. r[1]) == 1 then
      return false, r[1]
    end
  end
  local wf = rcall('HGET', k, 'G')
  if not wf then
    wf = qp .. rid
    rcall('HSET', k, 'G', wf)
  end
  local wk = base .. 'wf:' .. string.sub(wf, -26)
  local listed = rcall('HGET', wk, 'r')
  local rids = {}
  if not listed then
    rids[1] = rid
    rcall('HSET', wk, 't', nowS, 'n', 1)
  end
  local wakeUp = false
  local run = {}
  for _, a in ipairs(sp.r) do
    rids[#rids + 1] = a[1]
    if wfAddRun(base, wf, now, newRun(base, 1, run, a), a[15], a[16], false) then
      wakeUp = true
    end
  end
  if listed then
    rcall('HSET', wk, 'r', listed .. ',' .. table.concat(rids, ','))
  else
    rcall('HSET', wk, 'r', table.concat(rids, ','))
  end
  rcall('HINCRBY', wk, 'n', #sp.r)
  statAdd(acc, 'e', #sp.r)
  -- What an earlier spawn of this run (replayed since) awaited is forgotten.
  local old = rcall('HGET', k, 'A')
  if old then
    for line in string.gmatch(old, '[^\n]+') do
      local dep = string.match(line, '^([^\t]*)\t[^\t]*\t')
      if dep then
        rcall('HDEL', base .. 'we:' .. dep, rid)
      end
    end
  end
  rcall('DEL', base .. 'wd:' .. rid, base .. 'wv:' .. rid)
  for line in string.gmatch(sp.d, '[^\n]+') do
    local dep, pol = string.match(line, '^([^\t]*)\t([^\t]*)\t')
    rcall('SADD', base .. 'wd:' .. rid, dep)
    rcall('HSET', base .. 'we:' .. dep, rid, pol)
  end
  local h = appendHistory(rcall('HGET', k, 'h'), att, worker, started, nowS, 'spawned')
  rcall('HSET', k, 's', 'w', 'A', sp.m .. '\t' .. retS .. '\n' .. sp.d, 'h', h, 'r', nowS)
  rcall('HDEL', k, 'o')
  rcall('ZADD', base .. 'waiting', ridTime(rid), rid)
  return wakeUp
end

--[[
  Records the outcomes of leased runs of one queue (the settle transition, also applied by reserve
  before it leases). Items are ARGV[from], ARGV[from + 1], ... up to `to`, 5 per item: rid,
  attempt, outcome (s succeeded, f failed, r retry, w spawned, b backoff), payload (result JSON,
  '' for null; or error JSON; or the spawn's JSON, see wfSpawn; for b: k or g, the scope),
  retentionMs (s, f, w) or runAt (r) or until (b). Each item is applied only if the run is active with
  this worker and attempt; otherwise it is lost and nothing is written. Appends one status per
  item to `out` (1 applied, 0 lost), counts outcomes and run times in `acc`, and returns whether
  a run became queued, or scheduled before every other scheduled run (then idle workers must be
  woken). See settle.lua for what each outcome writes.
]]
local function settleItems(base, worker, now, nowS, chan, qp, activeKey, schedKey, from, to, out, acc)
  local wakeUp = false
  local done = {} -- rids leaving `active`
  local freed, anyFreed = {}, false -- flow slots freed: freed[group][key] = runs
  local batch = newBatch() -- finished index and expiry entries
  for j = from, to, 5 do
    local rid, att, kind, payload, numS = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4]
    local k = base .. 'r:' .. rid
    local v = redis.pcall('HMGET', k, 's', 'w', 'a', 'W', 'p', 'b', 'g', 'y', 'G')
    local state, holder, runAtt, watched, prio, started, g, y, wf = v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9]
    if v['err'] or state ~= 'a' or holder ~= worker or runAtt ~= att then
      out[#out + 1] = 0
    else
      local num = tonumber(numS)
      done[#done + 1] = rid
      if g then
        -- A slot freed (counted once per key after the loop); retried runs are queued after that.
        local keys = freed[g]
        if not keys then
          keys = {}
          freed[g] = keys
        end
        keys[y or ''] = (keys[y or ''] or 0) + 1
        anyFreed = true
      end
      if kind ~= 'b' then
        statLatency(acc, 'u', now - (tonumber(started) or now))
      end
      -- Fan-in and failure propagation, in this script (docs/workflows.md); before the run is
      -- finished, which deletes it (and its edges) at once when its retention is 0.
      if wf and kind ~= 'r' and kind ~= 'w' and kind ~= 'b' and wfResolve(base, qp, chan, now, nowS, rid, kind == 's', payload) then
        wakeUp = true
      end
      if kind == 'w' then
        -- A spawn: its dependents are resolved when it finishes with the values of what it awaits.
        local woke, taken = wfSpawn(base, qp, now, nowS, rid, k, payload, numS, worker, att, started, acc)
        if taken then
          statAdd(acc, 'f', 1)
          if wf and wfResolve(base, qp, chan, now, nowS, rid, false, '') then
            wakeUp = true
          end
          finish(base, k, rid, 'f', 'failed', now, nowS, num, batch, 'E', spawnRefusedError(qp .. taken))
        elseif woke then
          wakeUp = true
        end
      elseif kind == 's' then
        statAdd(acc, 'd', 1)
        if att ~= '1' then
          rcall('HDEL', k, 'E') -- the error of an earlier attempt
        end
        if payload ~= '' then
          finish(base, k, rid, 'd', 'succeeded', now, nowS, num, batch, 'R', payload)
        else
          finish(base, k, rid, 'd', 'succeeded', now, nowS, num, batch)
        end
      elseif kind == 'f' then
        statAdd(acc, 'f', 1)
        finish(base, k, rid, 'f', 'failed', now, nowS, num, batch, 'E', payload)
      elseif kind == 'b' then
        -- A back-off (ctx.backOff): the attempt not counted; the run's key (payload 'k') or group
        -- ('g') waits until num (the later of it and a wait already set), the run at its key's
        -- head; a run without flow control waits itself, scheduled.
        local h = appendHistory(rcall('HGET', k, 'h'), att, worker, started, nowS, 'backoff')
        rcall('HDEL', k, 'o')
        rcall('HSET', k, 'a', tonumber(att) - 1, 'h', h)
        if att == '1' then
          -- No attempt counted now: a deadline to start holds again (see 'startby' above).
          local x = rcall('HGET', k, 'X')
          if x then
            rcall('ZADD', base .. 'startby', x, rid)
          end
        end
        if g then
          local ofKey = payload ~= 'g' and (y or '') ~= ''
          local wz, wm = base .. 'fW', g .. '|' .. (y or '')
          if not ofKey then
            wz, wm = base .. 'fWg', g
          end
          local cur = tonumber(rcall('ZSCORE', wz, wm))
          if not cur or cur <= num then
            rcall('ZADD', wz, numS, wm)
            rcall('HSET', base .. 'fM', 'w', flowWaitFirst(base) or '')
            if ofKey then
              flowKeyWait(base, g, y)
            else
              rcall('HSET', base .. 'fG|' .. g, 'w', 'b')
            end
          end
          rcall('HSET', k, 's', 'q')
          pushQueued(base, rid, prio or '0', true, g)
        elseif num > now then
          rcall('HSET', k, 's', 's', 'r', numS)
          local first = rcall('ZRANGE', schedKey, 0, 0, 'WITHSCORES')
          if not first[2] or num < tonumber(first[2]) then
            wakeUp = true
          end
          rcall('ZADD', schedKey, numS, rid)
        else
          rcall('HSET', k, 's', 'q', 'r', numS)
          pushQueued(base, rid, prio or '0', true, g)
          wakeUp = true
        end
      else
        statAdd(acc, 'r', 1)
        local h = appendHistory(rcall('HGET', k, 'h'), att, worker, started, nowS, 'retry', payload)
        rcall('HDEL', k, 'o')
        if num > now then
          rcall('HSET', k, 's', 's', 'r', numS, 'h', h, 'E', payload)
          -- Due before every other scheduled run: idle workers must recompute when to wake.
          local first = rcall('ZRANGE', schedKey, 0, 0, 'WITHSCORES')
          if not first[2] or num < tonumber(first[2]) then
            wakeUp = true
          end
          rcall('ZADD', schedKey, numS, rid) -- the string as sent (see fmt)
        else
          rcall('HSET', k, 's', 'q', 'r', numS, 'h', h, 'E', payload)
          pushQueued(base, rid, prio or '0', false, g)
          wakeUp = true
        end
      end
      notify(chan, qp, rid, watched)
      out[#out + 1] = 1
    end
  end
  bulk('ZREM', activeKey, done, 1000)
  flushFinished(base, batch)
  if anyFreed and flowFreeMany(base, freed) then
    wakeUp = true -- slots freed: keys may be ready again
  end
  return wakeUp
end
