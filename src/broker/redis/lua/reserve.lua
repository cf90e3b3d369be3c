--[[
  reserve: for one queue, in one atomic step:
    1. promotes scheduled runs that are due (runAt <= now) to queued, each at the tail of its
       priority level;
    2. recovers runs whose lease expired (expiry <= now): the attempt is recorded as `lost` and
       leaseLosses incremented; the run goes back to the head of its priority level, or is failed
       with reason `lease_lost` once leaseLosses reaches maxLeaseLosses;
    3. leases up to `max` queued runs to the worker, highest priority first and FIFO within a
       level: state active, attempts + 1, worker, startedAt = now, open attempt, lease expiry
       in `active`.
  Counts, for this minute's stats, the wait of each leased run and the runs failed here.
  A run whose hash is unreadable (not a hash, or lacking task or input) is failed with reason
  `corrupt` and the script goes on. Steps 1 and 2 handle at most `limit` runs each per call; when
  more are pending, nextAt is `now` so that the caller comes back at once.
  When queued runs remain after step 3, leaves a wake-up token (another idle worker takes them).

  KEYS[1] sched   ZSET runAt
  KEYS[2] active  ZSET lease expiry
  KEYS[3] prios   ZSET priority levels with queued runs
  KEYS[4] paused  STRING present while the queue is paused: then nothing is done

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] worker id
  ARGV[3] max runs to lease (0: housekeeping only)
  ARGV[4] lease expiry (now + leaseMs)
  ARGV[5] now
  ARGV[6] maxLeaseLosses
  ARGV[7] retention of runs failed here (lease_lost, corrupt), ms
  ARGV[8] limit of runs promoted, and of leases recovered, per call
  ARGV[9] events channel (watched runs)
  ARGV[10] run id prefix `<queue>.`
  ARGV[11...] outcomes of this worker's runs to record first (even while the queue is paused),
    5 per item as in settle.lua: a worker sends them along with its next reservation, which
    saves a round trip per batch

  Returns { nextAt (-1: nothing pending), queued (with max 0: the runs queued; otherwise 0 when
            none remain, more than 0 when some do),
            m (the outcomes given), then m statuses (1 applied, 0 lost, as settle.lua returns),
            then 8 per leased run: rid, task, input, attempt, priority, enqueuedAt ('': the
            time in the run id), traceparent ('' for none), schedule mark ('' for none) }
]]
--!keys 4
--!include common.lua: rcall, fmt, ACTIVE_PIN, ACTIVE_PIN_SCORE, earliestLease, ridTime, statAdd, statLatency, statFlush, appendHistory, pushQueued, wake, bulk, finish, failCorrupt, notify, settleItems, leaseLostError
local base, worker = ARGV[1], ARGV[2]
local max = tonumber(ARGV[3])
local leaseUntil = ARGV[4] -- a string: written as given (see fmt in common.lua)
local nowS = ARGV[5]
local now = tonumber(nowS)
local maxLosses = tonumber(ARGV[6])
local failedRet = tonumber(ARGV[7])
local limit = tonumber(ARGV[8])
local chan, qp = ARGV[9], ARGV[10]
local more = false
local acc = {} -- this minute's counters
local out = { 0, 0, (#ARGV - 10) / 5 }

-- 0. Outcomes sent along.
local wakeUp = false
if #ARGV > 10 then
  wakeUp = settleItems(base, worker, now, nowS, chan, qp, KEYS[2], KEYS[1], 11, #ARGV, out, acc)
end

-- A paused queue is left untouched until resumed (its due times do not count either).
if rcall('EXISTS', KEYS[4]) == 1 then
  statFlush(base, now, acc)
  if wakeUp then
    wake(base)
  end
  out[1] = -1
  return out
end

-- 1. Due scheduled runs become queued.
-- The earliest scheduled run and lease expiry, read first: usually neither is due, and they also
-- give nextAt below without reading again.
local s1 = rcall('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local a1 = earliestLease(KEYS[2])
local due = {}
if s1[2] and tonumber(s1[2]) <= now then
  due = rcall('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
end
if #due > 0 then
  if #due == limit then
    more = true
  end
  for _, rid in ipairs(due) do
    local k = base .. 'r:' .. rid
    local v = redis.pcall('HMGET', k, 's', 'p', 'W')
    local state, prio, watched = v[1], v[2], v[3]
    if v['err'] then
      failCorrupt(base, k, rid, qp .. rid, now, nowS, failedRet, 'not a hash', acc)
    elseif state == 's' then
      rcall('HSET', k, 's', 'q')
      pushQueued(base, rid, prio or '0', false)
      notify(chan, qp, rid, watched)
    end
  end
  rcall('ZREMRANGEBYRANK', KEYS[1], 0, #due - 1)
end

-- 2. Expired leases: back to the head of their level (in lease order), or failed.
local expired = {}
if a1[2] and tonumber(a1[2]) <= now then
  expired = rcall('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
end
if #expired > 0 then
  if #expired == limit then
    more = true
  end
  for j = #expired, 1, -1 do
    local rid = expired[j]
    local k = base .. 'r:' .. rid
    local v = redis.pcall('HMGET', k, 's', 'p', 'W', 'a', 'w', 'b', 'l', 'h')
    local state, prio, watched, att, holder, started, lost, hist = v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]
    if v['err'] then
      failCorrupt(base, k, rid, qp .. rid, now, nowS, failedRet, 'not a hash', acc)
    elseif state == 'a' then
      local losses = (tonumber(lost) or 0) + 1
      local h = appendHistory(hist, att, holder, started, nowS, 'lost')
      rcall('HDEL', k, 'o')
      if losses >= maxLosses then
        finish(base, k, rid, 'f', 'failed', now, nowS, failedRet, nil, 'l', losses, 'h', h, 'E', leaseLostError)
        statAdd(acc, 'f', 1)
      else
        rcall('HSET', k, 's', 'q', 'l', losses, 'h', h)
        pushQueued(base, rid, prio or '0', true)
      end
      notify(chan, qp, rid, watched)
    end
  end
  rcall('ZREMRANGEBYRANK', KEYS[2], 0, #expired - 1)
end

-- 3. Lease up to max queued runs.
local n = 0
local leases = { ACTIVE_PIN_SCORE, ACTIVE_PIN } -- score, rid pairs for `active` (the pin first: see common.lua)
local levels = rcall('ZRANGE', KEYS[3], 0, -1)
if max > 0 then
  for _, p in ipairs(levels) do
    if n >= max then
      break
    end
    local wk = base .. 'w:' .. p
    while n < max do
      local want = max - n
      local rids = rcall('LPOP', wk, want)
      if not rids then
        break
      end
      for _, rid in ipairs(rids) do
        local k = base .. 'r:' .. rid
        local v = redis.pcall('HMGET', k, 's', 't', 'i', 'a', 'e', 'c', 'W', 'r', 'S')
        local state, task, input, attempts, enq, tp, watched, runAt, mark = v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9]
        if v['err'] then
          failCorrupt(base, k, rid, qp .. rid, now, nowS, failedRet, 'not a hash', acc)
        elseif state == 'q' and task and input then
          local a = (tonumber(attempts) or 0) + 1
          rcall('HSET', k, 's', 'a', 'a', fmt('%d', a), 'w', worker, 'b', nowS, 'o', '1')
          leases[#leases + 1] = leaseUntil
          leases[#leases + 1] = rid
          n = n + 1
          out[#out + 1] = rid
          out[#out + 1] = task
          out[#out + 1] = input
          out[#out + 1] = a
          out[#out + 1] = p
          out[#out + 1] = enq or ''
          out[#out + 1] = tp or ''
          out[#out + 1] = mark or ''
          notify(chan, qp, rid, watched)
          -- Wait: from enqueue, or from the due time of a scheduled run, to this start.
          local since = tonumber(enq) or ridTime(rid)
          local due = tonumber(runAt)
          if due and due > since then
            since = due
          end
          statLatency(acc, 'w', now - since)
        elseif state == 'q' or (not state and (task or input)) then
          failCorrupt(base, k, rid, qp .. rid, now, nowS, failedRet, 'its task, input or state is missing', acc)
        end
        -- Otherwise the run is gone or no longer queued (a stale entry): skipped.
      end
      if #rids < want then
        break
      end
    end
    if rcall('LLEN', wk) == 0 then
      rcall('ZREM', KEYS[3], p)
    end
  end
  if n > 0 then
    bulk('ZADD', KEYS[2], leases, 2000)
  end
end

-- Runs still queued: counted for a housekeeping call (the caller shares out its slots by them);
-- after leasing, only whether any remain matters (then another idle worker is woken).
local queued = 0
if max == 0 then
  for _, p in ipairs(levels) do
    queued = queued + rcall('LLEN', base .. 'w:' .. p)
  end
elseif n >= max then
  queued = rcall('ZCARD', KEYS[3])
  if queued > 0 then
    wakeUp = true
  end
end
if wakeUp then
  wake(base)
end

local nextAt = -1
if more then
  nextAt = now
else
  -- Read again only if steps 1 and 2 changed them; leases made in step 3 expire at leaseUntil.
  if #due > 0 then
    s1 = rcall('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  end
  if #expired > 0 or (not a1[2] and n > 0) then
    a1 = earliestLease(KEYS[2])
  end
  if s1[2] then
    nextAt = tonumber(s1[2])
  end
  if a1[2] then
    local t = tonumber(a1[2])
    if nextAt < 0 or t < nextAt then
      nextAt = t
    end
  end
end
statFlush(base, now, acc)
out[1] = nextAt
out[2] = queued
return out
