--[[
  stats.lua: the per-minute counters of a queue (see common.lua for how libraries are included).
    base..'st:'..minute  HASH  counters of one minute: e enqueued, d succeeded, f failed,
                             r retried, w<i>/u<i> wait/run latency histogram buckets
    base..'stm'        ZSET  the minutes that have counters
  A script counts in a table `acc` (statAdd, statLatency) and writes it once (statFlush).
]]
-- Upper bounds (ms) of the latency histogram buckets (LATENCY_BUCKETS_MS, set at load).
local BUCKETS = { 0 } --!buckets
-- Per-minute counters are kept this long (real time), in ms.
local STATS_TTL = 172800000

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

