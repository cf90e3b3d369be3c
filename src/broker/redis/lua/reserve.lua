--[[
  reserve: for one queue, in one atomic step:
    1. promotes scheduled runs that are due (runAt <= now) to queued, each at the tail of its
       priority level;
    2. recovers runs whose lease expired (expiry <= now): the attempt is recorded as `lost` and
       leaseLosses incremented; the run goes back to the head of its priority level, or is failed
       with reason `lease_lost` once leaseLosses reaches maxLeaseLosses;
    3. leases up to `max` queued runs to the worker: first runs under flow control, one per turn
       from the first ready key of the first ready group (docs/flow-control.md; keys and groups
       over their rate wait, and count in nextAt, until they may start again), then the
       others, highest priority first and FIFO within a level: state active, attempts + 1,
       worker, startedAt = now, open attempt, lease expiry in `active`. A run met past its
       deadline to start (field X) and never started (no attempt counted) is failed with
       reason `expired` instead.
  Before step 3, and also while the queue is paused, runs past that deadline are failed the same
  way wherever they are in their lists (at most `limit` per call): they are indexed by deadline in
  `startby` (see runs.lua), whose earliest entry counts in nextAt.
  Counts, for this minute's stats, the wait of each leased run and the runs failed here.
  A run whose hash is unreadable (not a hash, or lacking task or input) is failed with reason
  `corrupt` and the script goes on (a run of a workflow so failed reaches the runs waiting for it,
  as any terminal failure does). Steps 1 and 2 handle at most `limit` runs each per call; when
  more are pending, nextAt is `now` so that the caller comes back at once.
  When queued runs remain after step 3, leaves a wake-up token (another idle worker takes them).

  KEYS[1] sched   ZSET runAt
  KEYS[2] active  ZSET lease expiry
  KEYS[3] prios   ZSET priority levels with queued runs
  KEYS[4] paused  STRING present while the queue is paused: then nothing is done
  (and the flow-control keys of the queue, under the same hash tag: see flow.lua)

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
            time in the run id), traceparent ('' for none), schedule mark ('' for none),
            then 1 when this queue's relay outbox holds entries (a workflow over several queues:
            the caller drains it, see wfRelayOut in workflow.lua), else 0 }
]]
--!keys 4
--!include common.lua: rcall, fmt, ACTIVE_PIN, ACTIVE_PIN_SCORE, wake, bulk, earliestLease
--!include stats.lua: statFlush
--!include flow.lua: KEY_FMT, KEY_LEN, flowKeyMany, flowKeepTat, flowGcraN, flowGcra, flowSetTat
--!include outcomes.lua: settleItems
--!include leasing.lua: reserveSweep, reservePromote, reserveRecover, reserveLease, reserveFlowWake, reserveFlowPlan, reserveFlowMeta, reserveFirstDeadline, reserveNextAt
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
-- The context of the steps in leasing.lua (see there).
local leases = { ACTIVE_PIN_SCORE, ACTIVE_PIN } -- score, rid pairs for `active` (the pin first: see common.lua)
local c = {
  base = base, worker = worker, now = now, nowS = nowS, leaseUntil = leaseUntil, failedRet = failedRet,
  limit = limit, chan = chan, qp = qp, acc = acc, leases = leases, out = out,
}

-- 0. Outcomes sent along.
local wakeUp = false
if #ARGV > 10 then
  wakeUp = settleItems(base, worker, now, nowS, chan, qp, KEYS[2], KEYS[1], 11, #ARGV, out, acc)
end

-- Never-started queued runs past their deadline to start: failed (reserveSweep).
local function sweepExpired()
  local full, woke = reserveSweep(c, KEYS[3])
  if full then
    more = true
  end
  if woke then
    wakeUp = true
  end
end

-- A paused queue is left untouched until resumed (its due times do not count either), but for
-- runs past their deadline to start: they are failed at it, paused or not.
if rcall('EXISTS', KEYS[4]) == 1 then
  sweepExpired()
  statFlush(base, now, acc)
  if wakeUp then
    wake(base)
  end
  out[1] = more and now or reserveFirstDeadline(c) or -1
  out[#out + 1] = rcall('EXISTS', base .. 'wo')
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
  if reservePromote(c, KEYS[1], due) then
    wakeUp = true
  end
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
  if reserveRecover(c, KEYS[2], expired, maxLosses) then
    wakeUp = true
  end
end

sweepExpired()

-- 3. Lease up to max queued runs.
local n = 0

-- Leases queued run rid (its priority level p, or nil: the one stored) if it is still queued
-- (reserveLease); returns whether it did.
local function lease(rid, p)
  local leased, woke = reserveLease(c, rid, p)
  if woke then
    wakeUp = true
  end
  if leased then
    n = n + 1
  end
  return leased
end

-- 3a. Runs under flow control: one per turn, from the first ready key of the first ready group;
-- the key and the group go to the back of their rings if still ready (see flowReady). A group or
-- key over its rate leaves its ring for the waiting set until it may start again; those due now
-- come back first.
local flowRing, flowWaitK, flowWaitG = base .. 'fR', base .. 'fW', base .. 'fWg'
-- Only a queue that has had runs under flow control has its counters hash: the others skip this.
-- fM: t the turn counter (read again below if the waiting keys took turns), q the runs in key
-- lists, w when the first waiting key or group may start (see flowWaitFirst in flow.lua): the
-- waiting sets are read only once that time has come. All three are written once, at the end.
local fm = rcall('HMGET', base .. 'fM', 't', 'q', 'w')
local turnS, flowQS, flowWS = fm[1], fm[2], fm[3]
local flowOn = turnS ~= false or flowQS ~= false or flowWS ~= false
local waitAt = tonumber(flowWS) -- nil: nothing waits
local waitAt0 = waitAt
if waitAt and waitAt <= now then
  local full
  full, waitAt, turnS = reserveFlowWake(c)
  if full then
    more = true
  end
end
-- A key or group sent to wait below (at `at`): waitAt follows.
local function waits(at)
  if not waitAt or at < waitAt then
    waitAt = at
  end
end
local flowTurnS, flowQ = nil, nil -- fM's t and q to write, if they changed
-- Runs are leased group by group: the first ready group serves its keys in turn (each key to the
-- back of the group's ring after one run) until the call's slots are taken or the group is at its
-- limit, over its rate or out of ready keys; then it goes to the back of the queue's ring (or out).
-- Counters of the group and the queue are kept in locals and written once per group and call; the
-- states of the keys taken from a ring are read with one HMGET and written with one HSET.
local flowBack = false -- a group went back to the queue's ring
if max > 0 and flowOn then
  local turn = tonumber(turnS) or 0
  local turn0 = turn
  local popped = 0 -- rids taken from key lists
  while n < max do
    local g = rcall('ZRANGE', flowRing, 0, 0)[1]
    if not g then
      break
    end
    local gh, keyRing, ksh = base .. 'fG|' .. g, base .. 'fK|' .. g, base .. 'fy|' .. g
    local keyList = base .. 'fq|' .. g .. '|' -- a key's list: keyList .. y
    local gv = rcall('HMGET', gh, 'a', 'c', 'r')
    local gaS, gcS, grate = gv[1], gv[2], gv[3]
    local ga, gc = tonumber(gaS) or 0, tonumber(gcS) or 0
    local gtat = nil
    if grate then
      gtat = tonumber(rcall('GET', base .. 'fT|' .. g))
    end
    local started, heldUntil = 0, nil
    local ringLeft = false -- keys known to be in the ring after the last pass
    -- Keys are read from the head of the ring as many at once as the call (and the group) has
    -- slots for, each served one run in ring order; those served and still ready move to the end
    -- of the ring in one ZADD (a new turn: the score changes in place), those no longer ready
    -- leave it in one ZREM, then the next keys are read (so a key comes round again within a call
    -- only after every other ready key, as one key at a time would have it). Keys read but not
    -- reached (the group's rate or the call's slots ran out) keep their turns: at the front.
    local stop = false
    while not stop and n < max and (gc <= 0 or ga < gc) do
      local want = max - n
      if gc > 0 and gc - ga < want then
        want = gc - ga
      end
      local ys = rcall('ZRANGE', keyRing, 0, want - 1)
      if #ys == 0 then
        ringLeft = false
        break
      end
      local packed = flowKeyMany(ksh, ys)
      local back, gone, writes, dels = {}, {}, {}, {}
      local kept = false -- a key keeps its place
      for i, y in ipairs(ys) do
        -- A key taken with the others but not reached: the call or the group ran out of slots
        -- (a weighted key before it took more than one), or the group's rate ran out.
        local gnext, gok = nil, not stop and n < max and (gc <= 0 or ga < gc)
        if gok and grate then
          local ok, v = flowGcra(grate, gtat, now)
          if ok then
            gnext = v
          else
            -- The group's rate: over it, the group waits out of the ring (all its keys with it).
            heldUntil, gok, stop = v, false, true
          end
        end
        if not gok then
          kept = true
        else
          local q = keyList .. y
          -- The key's state, unpacked to locals (the fields of flowKeyUnpack in flow.lua).
          local s = packed[i]
          local ka, kq, kc, tat, kri, krb, kw, weight, streak
          if s and #s == KEY_LEN then
            ka, kq, kc, tat, kri, krb, kw, weight, streak = struct.unpack(KEY_FMT, s)
          else
            -- A key in the ring without a state (lost, or written by hand): rebuilt from its list.
            ka, kq, kc, tat, kri, krb, kw, weight, streak = 0, rcall('LLEN', q), 0, -1, 0, 0, 0, 1, 0
            rcall('SADD', base .. 'fY', g)
          end
          local tat0 = tat -- the GCRA time as read (kept in ft| if the key is forgotten)
          local kok, kval = true, nil
          if kri > 0 then
            -- The key's GCRA time: in its state while it has one, else (a key forgotten and back) in ft|.
            local t = tat
            if t < 0 then
              t = tonumber(rcall('GET', base .. 'ft|' .. g .. '|' .. y))
            end
            kok, kval = flowGcraN(kri, krb, t, now)
          end
          if kc > 0 and ka >= kc then
            -- At its limit (lowered by a newer run while the key was in the ring): out of the ring
            -- until one of its runs frees a slot, its turn over.
            gone[#gone + 1] = y
            if streak ~= 0 then
              writes[#writes + 1] = y
              writes[#writes + 1] = struct.pack(KEY_FMT, ka, kq, kc, tat, kri, krb, kw, weight, 0)
            end
          elseif not kok then
            -- Over its rate: out of the ring into the waiting set.
            gone[#gone + 1] = y
            writes[#writes + 1] = y
            writes[#writes + 1] = struct.pack(KEY_FMT, ka, kq, kc, tat, kri, krb, 1, weight, streak)
            rcall('ZADD', flowWaitK, kval, g .. '|' .. y)
            waits(kval)
          else
            -- One run; or, when this key is the only one ready in its group, as many as the call,
            -- its limit and the rates allow, in one pass (turns would have served it alone anyway);
            -- or, a key of weight w, what is left of its w runs in a row (z counts them).
            -- The GCRA times after each start are stepped here: the first start was admitted above.
            local take = 1
            if #ys == 1 and want > 1 then -- fewer keys than asked for: it is alone in the ring
              take = want
            elseif weight > 1 then
              take = weight - streak
            end
            if take > max - n then
              take = max - n
            end
            if gc > 0 and gc - ga < take then
              take = gc - ga
            end
            if kc > 0 and kc - ka < take then
              take = kc - ka
            end
            if take < 1 then
              take = 1
            end
            local kts, gts, kHeld, gHeld
            if take > 1 then
              take, kts, gts, kHeld, gHeld = reserveFlowPlan(take, kri, krb, kval, grate, gnext, now)
            end
            local rids
            if take == 1 then
              local r = rcall('LPOP', q)
              rids = r and { r } or {}
            else
              rids = rcall('LPOP', q, take) or {}
            end
            -- The queued count follows the list (a list shorter than counted is empty now).
            kq = kq - #rids
            if kq < 0 or #rids < take then
              kq = 0
            end
            local done = 0
            for _, rid in ipairs(rids) do
              popped = popped + 1
              if lease(rid, nil) then
                done = done + 1
              end
            end
            if done > 0 then
              ka = ka + done
              ga = ga + done
              started = started + done
              if kri > 0 then
                tat = done == 1 and kval or kts[done]
              end
              if grate then
                gtat = done == 1 and gnext or gts[done]
              end
            end
            -- Every start planned was made and a rate stopped the plan: the key (or the group)
            -- waits for it now rather than at the next pass.
            local full = done == take and #rids == take
            local free = kc <= 0 or ka < kc
            if kq > 0 and free and kHeld and full then
              kw, streak = 1, 0
              gone[#gone + 1] = y
              rcall('ZADD', flowWaitK, kHeld, g .. '|' .. y)
              waits(kHeld)
            elseif kq > 0 and free then
              if weight > 1 and streak + #rids < weight then
                -- Its w runs in a row not all served (the call ran out): it keeps its place.
                streak = streak + #rids
                kept = true
              else
                streak = 0
                turn = turn + 1
                back[#back + 1] = fmt('%d', turn)
                back[#back + 1] = y
              end
            else
              -- At its limit or out of runs: out of the ring, its turn over (a fresh one when it is back).
              streak = 0
              gone[#gone + 1] = y
            end
            if kq <= 0 and ka <= 0 then
              dels[#dels + 1] = y
              if tat0 >= 0 then
                flowKeepTat(base, g, y, tat0)
              end
            else
              writes[#writes + 1] = y
              writes[#writes + 1] = struct.pack(KEY_FMT, ka, kq, kc, tat, kri, krb, kw, weight, streak)
            end
            if gHeld and full then
              heldUntil, stop = gHeld, true
            end
          end
        end
      end
      bulk('HSET', ksh, writes, 2000)
      bulk('HDEL', ksh, dels, 1000)
      bulk('ZADD', keyRing, back, 2000)
      bulk('ZREM', keyRing, gone, 1000)
      ringLeft = #back > 0 or kept
    end
    if started > 0 then
      rcall('HINCRBY', gh, 'a', fmt('%d', started))
      if grate then
        flowSetTat(base .. 'fT|' .. g, gtat, now)
      end
    end
    if heldUntil then
      rcall('ZREM', flowRing, g)
      rcall('HSET', gh, 'w', '1')
      rcall('ZADD', flowWaitG, heldUntil, g)
      waits(heldUntil)
    elseif (gc <= 0 or ga < gc) and (ringLeft or rcall('ZCARD', keyRing) > 0) then
      -- To the back of the queue's ring (a new score moves it).
      turn = turn + 1
      rcall('ZADD', flowRing, fmt('%d', turn), g)
      flowBack = true
    else
      rcall('ZREM', flowRing, g)
    end
  end
  -- Nothing in the passes above queues a run under flow control (lease may finish a run and
  -- reach a workflow's steps, which have no limits), so q as read at the start still holds.
  if popped > 0 then
    flowQ = (tonumber(flowQS) or 0) - popped
    if flowQ < 0 then
      flowQ = 0
    end
  end
  if turn ~= turn0 then
    flowTurnS = fmt('%d', turn)
  end
end
-- fM written once, and only when something changed.
reserveFlowMeta(base, flowTurnS, flowQ, waitAt, waitAt0)

-- 3b. The other runs, by priority level.
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
        lease(rid, p)
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
  -- Runs under flow control count while some key can take one.
  if flowOn and rcall('EXISTS', flowRing) == 1 then
    queued = queued + (tonumber(rcall('HGET', base .. 'fM', 'q')) or 0)
  end
elseif n >= max then
  if flowBack then
    queued = 1 -- a group went back to its ring: it has a ready key
  else
    queued = rcall('ZCARD', KEYS[3])
    if flowOn then
      queued = queued + rcall('ZCARD', flowRing)
    end
  end
  if queued > 0 then
    wakeUp = true
  end
end
if wakeUp then
  wake(base)
end

-- When to come back: now when more is pending, else the earliest due time (reserveNextAt; sched
-- and active read again only if steps 1 and 2 changed them, leases made in step 3 expire at
-- leaseUntil).
local nextAt = now
if not more then
  nextAt = reserveNextAt(c, KEYS[1], KEYS[2], s1, a1, #due > 0, #expired > 0 or (not a1[2] and n > 0), waitAt)
end
statFlush(base, now, acc)
out[1] = nextAt
out[2] = queued
out[#out + 1] = rcall('EXISTS', base .. 'wo')
return out
