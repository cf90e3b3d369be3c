--[[
  settle: records the outcome of a batch of leased runs of one queue. Each item is applied only
  if the run is active with the same worker and attempt; otherwise it is `lost` and nothing is
  written.
    succeeded: result stored (none when null), finished (see `finish` in common.lua);
    failed:    error stored, finished;
    retry:     error stored, the attempt appended to the history, scheduled at runAt (queued at
               once when runAt <= now).
  A succeeded or failed attempt stays the run's open attempt (see `o` in common.lua): no history
  is written on this, the hot path.
  Counts, for this minute's stats, each outcome and the run time of each attempt.
  Leaves a wake-up token when a run was queued, or scheduled before every other scheduled run.

  KEYS[1] active ZSET
  KEYS[2] sched  ZSET

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] worker id
  ARGV[3] now
  ARGV[4] events channel (watched runs)
  ARGV[5] run id prefix `<queue>.`
  then 5 per item: rid, attempt, outcome (s succeeded, f failed, r retry),
    payload (result JSON, '' for null; or error JSON), retentionMs (s, f) or runAt (r)

  Returns one integer per item: 1 applied, 0 lost.
]]
--!include common.lua

local base, worker, nowS = ARGV[1], ARGV[2], ARGV[3]
local now = tonumber(nowS)
local chan, qp = ARGV[4], ARGV[5]
local out = {}
local wakeUp = false
local done = {} -- rids leaving `active`
local batch = {} -- finished index entries
local acc = {} -- this minute's counters

for j = 6, #ARGV, 5 do
  local rid, att, kind, payload, numS = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4]
  local k = base .. 'r:' .. rid
  local v = redis.pcall('HMGET', k, 's', 'w', 'a', 'W', 'p', 'b')
  if v['err'] or v[1] ~= 'a' or v[2] ~= worker or v[3] ~= att then
    out[#out + 1] = 0
  else
    local num = tonumber(numS)
    done[#done + 1] = rid
    statLatency(acc, 'u', now - (tonumber(v[6]) or now))
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
      local h = appendHistory(rcall('HGET', k, 'h'), att, worker, v[6], nowS, 'retry', payload)
      rcall('HDEL', k, 'o')
      if num > now then
        rcall('HSET', k, 's', 's', 'r', numS, 'h', h, 'E', payload)
        -- Due before every other scheduled run: idle workers must recompute when to wake.
        local first = rcall('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
        if not first[2] or num < tonumber(first[2]) then
          wakeUp = true
        end
        rcall('ZADD', KEYS[2], num, rid)
      else
        rcall('HSET', k, 's', 'q', 'r', numS, 'h', h, 'E', payload)
        pushQueued(base, rid, v[5] or '0', false)
        wakeUp = true
      end
    end
    notify(chan, qp .. rid, v[4])
    out[#out + 1] = 1
  end
end

bulk('ZREM', KEYS[1], done, 1000)
flushFinished(base, batch)
statFlush(base, now, acc)
if wakeUp then
  wake(base)
end
return out
