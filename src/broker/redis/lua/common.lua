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
    base..'ik:'..task..':'..key  STRING  idempotency key -> rid, with PX ttl
    base..'wake'       LIST  wake-up token for idle workers (BLPOP)
    base..'paused'     STRING  present while the queue is paused
    base..'st:'..minute  HASH  counters of one minute: e enqueued, d succeeded, f failed,
                             r retried, w<i>/u<i> wait/run latency histogram buckets
    base..'stm'        ZSET  the minutes that have counters
    base..'layout'     STRING  the layout version these keys were migrated to (layout.ts, migrate.lua)

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

-- Appends (or, at the head, prepends) a run to the list of its priority level.
local function pushQueued(base, rid, p, front)
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

-- Leaves a wake-up token for one idle worker, unless one is already waiting.
local function wake(base)
  local k = base .. 'wake'
  if rcall('LLEN', k) == 0 then
    rcall('RPUSH', k, '1')
  end
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

-- Deletes a run's hash `k` and, while it still names the run, its idempotency key (fields t and
-- k): a key never stands for a run that no longer exists (purge, prune, retention 0 alike).
local function dropRun(base, k, rid)
  local v = redis.pcall('HMGET', k, 't', 'k')
  local task, key = v[1], v[2]
  if not v['err'] and task and key then
    local ikk = base .. 'ik:' .. task .. ':' .. key
    if redis.pcall('GET', ikk) == rid then
      rcall('DEL', ikk)
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

-- Fails an unreadable run (not a hash, or lacking task or input) with reason `corrupt`.
local function failCorrupt(base, k, rid, id, now, nowS, ret, why, acc)
  local err = corruptError(id, why)
  if rcall('TYPE', k)['ok'] ~= 'hash' then
    rcall('DEL', k)
  else
    rcall('HDEL', k, 'o')
  end
  finish(base, k, rid, 'f', 'failed', now, nowS, ret, nil, 'E', err)
  if acc then
    statAdd(acc, 'f', 1)
  end
end

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
  rcall('HDEL', k, 'f', 'x', 'E', 'P', 'o')
  rcall('PERSIST', k) -- a run finished by a version that gave finished runs a TTL
  rcall('ZREM', base .. zset, rid)
  pushQueued(base, rid, prio or '0', false)
  notify(chan, id, '', watched)
end

--[[
  Records the outcomes of leased runs of one queue (the settle transition, also applied by reserve
  before it leases). Items are ARGV[from], ARGV[from + 1], ... up to `to`, 5 per item: rid,
  attempt, outcome (s succeeded, f failed, r retry), payload (result JSON, '' for null; or error
  JSON), retentionMs (s, f) or runAt (r). Each item is applied only if the run is active with
  this worker and attempt; otherwise it is lost and nothing is written. Appends one status per
  item to `out` (1 applied, 0 lost), counts outcomes and run times in `acc`, and returns whether
  a run became queued, or scheduled before every other scheduled run (then idle workers must be
  woken). See settle.lua for what each outcome writes.
]]
local function settleItems(base, worker, now, nowS, chan, qp, activeKey, schedKey, from, to, out, acc)
  local wakeUp = false
  local done = {} -- rids leaving `active`
  local batch = newBatch() -- finished index and expiry entries
  for j = from, to, 5 do
    local rid, att, kind, payload, numS = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4]
    local k = base .. 'r:' .. rid
    local v = redis.pcall('HMGET', k, 's', 'w', 'a', 'W', 'p', 'b')
    local state, holder, runAtt, watched, prio, started = v[1], v[2], v[3], v[4], v[5], v[6]
    if v['err'] or state ~= 'a' or holder ~= worker or runAtt ~= att then
      out[#out + 1] = 0
    else
      local num = tonumber(numS)
      done[#done + 1] = rid
      statLatency(acc, 'u', now - (tonumber(started) or now))
      if kind == 's' then
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
          pushQueued(base, rid, prio or '0', false)
          wakeUp = true
        end
      end
      notify(chan, qp, rid, watched)
      out[#out + 1] = 1
    end
  end
  bulk('ZREM', activeKey, done, 1000)
  flushFinished(base, batch)
  return wakeUp
end
