--[[
  common.lua: the helpers every part uses (redis.call, number formatting, rid times, history text,
  chunked commands, the wake-up token, PUBLISH of watched runs, the run errors). The helpers of the
  scripts live in libraries, each owning a part of a queue's keys and of a run's fields:
    common.lua    this file: the keys below
    stats.lua     per-minute counters (statAdd, statLatency, statFlush)
    flow.lua      flow control: a key's and a group's state, rings, waiting sets (flow*)
    runs.lua      a run's hash and where it is: creation, placing, finishing, expiry, replay
    workflow.lua  workflows: fan-in, failure propagation, retry from a step, the relay (wf*)
    spawn.lua     creating a workflow's runs (wfAddRun), dynamic fan-out (wfSpawn)
    outcomes.lua  the outcomes of leased runs (settleItems), a corrupt run failed (failCorrupt)
    leasing.lua   the steps of reserve.lua (reserve*)
  A script includes helpers with one line per library, `--!include flow.lua: name, ...`, naming
  those it uses: the loader (scripts.ts) pastes them in with those they use in turn (of any
  library), each library's opening comment first, the libraries in the order of their uses.

  Keys of one queue share the hash tag `{<queue>}`; `base` is `<prefix>:{<queue>}:`. Owned here:
    base..'wake'       LIST  wake-up token for idle workers (BLPOP)
    base..'paused'     STRING  present while the queue is paused
    base..'layout'     STRING  the layout version these keys were migrated to (layout.ts, migrate.lua)
  and the pin of every `active` set (ACTIVE_PIN, below; the set itself: runs.lua).
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

-- Leaves a wake-up token for one idle worker, unless one is already waiting.
local function wake(base)
  local k = base .. 'wake'
  if rcall('LLEN', k) == 0 then
    rcall('RPUSH', k, '1')
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
