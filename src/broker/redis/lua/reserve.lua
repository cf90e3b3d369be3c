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
--!include common.lua: rcall, fmt, ACTIVE_PIN, ACTIVE_PIN_SCORE, earliestLease, ridTime, appendHistory, wake, bulk, notify, leaseLostError, expiredError
--!include stats.lua: statAdd, statLatency, statFlush
--!include flow.lua: flowReady, flowGroupReady, flowFree, flowWaitFirst, KEY_STATE, flowKeyMany, flowKeepTat, flowGcra, flowSetTat, flowUnqueue
--!include runs.lua: pushQueued, finish
--!include workflow.lua: wfResolve
--!include outcomes.lua: failCorrupt, settleItems
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

-- Never-started queued runs past their deadline to start (field X, indexed in `startby`): failed
-- with reason `expired`, as lease() below does for one it reaches, wherever they are in their lists.
-- A run under flow control leaves its key's list (flowUnqueue, as cancel); another leaves its
-- level's list when it is among the first entries (LPOS bounds the search), else its entry there
-- is left stale and skipped when reached. Entries of runs that cannot expire now are dropped (a
-- scheduled one is indexed again when promoted).
local startby = base .. 'startby'
local function sweepExpired()
  local rids = rcall('ZRANGEBYSCORE', startby, '-inf', '(' .. nowS, 'LIMIT', 0, limit)
  if #rids == limit then
    more = true
  end
  for _, rid in ipairs(rids) do
    local k = base .. 'r:' .. rid
    local v = redis.pcall('HMGET', k, 's', 'a', 'X', 'W', 'G', 'g', 'y', 'p')
    local state, attempts, startBy, watched, wf, g, y, prio = v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]
    if not v['err'] and state == 'q' and startBy and now > (tonumber(startBy) or now) and (tonumber(attempts) or 0) == 0 then
      if g then
        flowUnqueue(base, rid, g, y or '')
      else
        local wk = base .. 'w:' .. (prio or '0')
        if rcall('LPOS', wk, rid, 'MAXLEN', 1000) then
          rcall('LREM', wk, 1, rid)
          if rcall('LLEN', wk) == 0 then
            rcall('ZREM', KEYS[3], prio or '0')
          end
        end
      end
      if wf and wfResolve(base, qp, chan, now, nowS, rid, false, '') then
        wakeUp = true
      end
      finish(base, k, rid, 'f', 'failed', now, nowS, failedRet, nil, 'E', expiredError(startBy))
      statAdd(acc, 'f', 1)
      notify(chan, qp, rid, watched)
    end
  end
  bulk('ZREM', startby, rids, 1000)
end

-- When the first run indexed in `startby` expires (nil: none): a run exactly at its deadline may
-- still start, so a millisecond after it.
local function firstDeadline()
  local first = rcall('ZRANGE', startby, 0, 0, 'WITHSCORES')
  return first[2] and tonumber(first[2]) + 1 or nil
end

-- A paused queue is left untouched until resumed (its due times do not count either), but for
-- runs past their deadline to start: they are failed at it, paused or not.
if rcall('EXISTS', KEYS[4]) == 1 then
  sweepExpired()
  statFlush(base, now, acc)
  if wakeUp then
    wake(base)
  end
  out[1] = more and now or firstDeadline() or -1
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
  for _, rid in ipairs(due) do
    local k = base .. 'r:' .. rid
    local v = redis.pcall('HMGET', k, 's', 'p', 'W', 'g', 'X')
    local state, prio, watched, g, startBy = v[1], v[2], v[3], v[4], v[5]
    if v['err'] then
      if failCorrupt(base, k, rid, qp .. rid, now, nowS, failedRet, 'not a hash', acc, chan) then
        wakeUp = true
      end
    elseif state == 's' then
      rcall('HSET', k, 's', 'q')
      pushQueued(base, rid, prio or '0', false, g)
      if startBy then
        rcall('ZADD', startby, startBy, rid) -- again, if a sweep dropped it while scheduled
      end
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
    local v = redis.pcall('HMGET', k, 's', 'p', 'W', 'a', 'w', 'b', 'l', 'h', 'g', 'G')
    local state, prio, watched, att, holder, started, lost, hist, g, wf = v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10]
    if v['err'] then
      if failCorrupt(base, k, rid, qp .. rid, now, nowS, failedRet, 'not a hash', acc, chan) then
        wakeUp = true
      end
    elseif state == 'a' then
      if g then
        flowFree(base, k, g)
      end
      local losses = (tonumber(lost) or 0) + 1
      local h = appendHistory(hist, att, holder, started, nowS, 'lost')
      rcall('HDEL', k, 'o')
      if losses >= maxLosses then
        -- A terminal failure of a run of a workflow reaches the runs that wait for it (before the
        -- run is finished: with retention 0 that deletes it and its edges).
        if wf and wfResolve(base, qp, chan, now, nowS, rid, false, '') then
          wakeUp = true
        end
        finish(base, k, rid, 'f', 'failed', now, nowS, failedRet, nil, 'l', losses, 'h', h, 'E', leaseLostError)
        statAdd(acc, 'f', 1)
      else
        rcall('HSET', k, 's', 'q', 'l', losses, 'h', h)
        pushQueued(base, rid, prio or '0', true, g)
      end
      notify(chan, qp, rid, watched)
    end
  end
  rcall('ZREMRANGEBYRANK', KEYS[2], 0, #expired - 1)
end

sweepExpired()

-- 3. Lease up to max queued runs.
local n = 0
local leases = { ACTIVE_PIN_SCORE, ACTIVE_PIN } -- score, rid pairs for `active` (the pin first: see common.lua)

-- Leases queued run rid (its priority level p, or nil: the one stored) if it is still queued;
-- returns whether it did. A corrupt run is failed; a stale entry (gone, no longer queued) skipped.
local function lease(rid, p)
  local k = base .. 'r:' .. rid
  local v = redis.pcall('HMGET', k, 's', 't', 'i', 'a', 'e', 'c', 'W', 'r', 'p', 'S', 'X', 'G')
  local state, task, input, attempts, enq, tp, watched, runAt, prio, mark = v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10]
  local startBy, wf = v[11], v[12]
  if startBy and state == 'q' then
    rcall('ZREM', startby, rid) -- leased or failed here: no longer in the index
  end
  if v['err'] then
    if failCorrupt(base, k, rid, qp .. rid, now, nowS, failedRet, 'not a hash', acc, chan) then
      wakeUp = true
    end
  elseif state == 'q' and startBy and now > (tonumber(startBy) or now) and (tonumber(attempts) or 0) == 0 then
    -- Past its deadline to start (expiry): failed, never started, no attempt counted; a
    -- workflow's dependents are told first (finish may delete the run).
    if wf and wfResolve(base, qp, chan, now, nowS, rid, false, '') then
      wakeUp = true
    end
    finish(base, k, rid, 'f', 'failed', now, nowS, failedRet, nil, 'E', expiredError(startBy))
    statAdd(acc, 'f', 1)
    notify(chan, qp, rid, watched)
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
    out[#out + 1] = p or prio or '0'
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
    return true
  elseif state == 'q' or (not state and (task or input)) then
    if failCorrupt(base, k, rid, qp .. rid, now, nowS, failedRet, 'its task, input or state is missing', acc, chan) then
      wakeUp = true
    end
  end
  -- Otherwise the run is gone or no longer queued (a stale entry): skipped.
  return false
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
local dueK, dueG = {}, {}
if waitAt and waitAt <= now then
  dueK = rcall('ZRANGEBYSCORE', flowWaitK, '-inf', now, 'LIMIT', 0, limit)
  for _, gy in ipairs(dueK) do
    local cut = string.find(gy, '|', 1, true)
    rcall('ZREM', flowWaitK, gy)
    flowReady(base, string.sub(gy, 1, cut - 1), string.sub(gy, cut + 1), true)
  end
  dueG = rcall('ZRANGEBYSCORE', flowWaitG, '-inf', now, 'LIMIT', 0, limit)
  for _, g in ipairs(dueG) do
    rcall('ZREM', flowWaitG, g)
    rcall('HDEL', base .. 'fG|' .. g, 'w')
    flowGroupReady(base, g)
  end
  if #dueK == limit or #dueG == limit then
    more = true
  end
  waitAt = tonumber(flowWaitFirst(base))
  turnS = rcall('HGET', base .. 'fM', 't')
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
          local q = base .. 'fq|' .. g .. '|' .. y
          -- The key's state, read and written as text (the order of flowKeyUnpack in flow.lua).
          local s = packed[i]
          local kaS, kqS, kcS, tS, krate, waitS, eS, zS
          if s then
            kaS, kqS, kcS, tS, krate, waitS, eS, zS = string.match(s, KEY_STATE)
          end
          if not kaS then
            -- A key in the ring without a state (lost, or written by hand): rebuilt from its list.
            kaS, kqS, kcS, tS, krate, waitS, eS, zS = '0', rcall('LLEN', q), '0', '', '', '', '', ''
            rcall('SADD', base .. 'fY', g)
          end
          local ka, kq, kc = tonumber(kaS) or 0, tonumber(kqS) or 0, tonumber(kcS) or 0
          local weight = tonumber(eS) or 1
          local tS0 = tS -- the GCRA time as read (kept in ft| if the key is forgotten)
          local kok, kval = true, nil
          if krate == '' then
            krate = nil
          else
            -- The key's GCRA time: in its state while it has one, else (a key forgotten and back) in ft|.
            local tat = tonumber(tS)
            if not tat then
              tat = tonumber(rcall('GET', base .. 'ft|' .. g .. '|' .. y))
            end
            kok, kval = flowGcra(krate, tat, now)
          end
          if kc > 0 and ka >= kc then
            -- At its limit (lowered by a newer run while the key was in the ring): out of the ring
            -- until one of its runs frees a slot.
            gone[#gone + 1] = y
          elseif not kok then
            -- Over its rate: out of the ring into the waiting set.
            gone[#gone + 1] = y
            writes[#writes + 1] = y
            writes[#writes + 1] = kaS .. ';' .. kqS .. ';' .. kcS .. ';' .. tS .. ';' .. krate .. ';1;' .. eS .. ';' .. zS
            rcall('ZADD', flowWaitK, kval, g .. '|' .. y)
            waits(kval)
          else
            -- One run; or, when this key is the only one ready in its group, as many as the call,
            -- its limit and the rates allow, in one pass (turns would have served it alone anyway);
            -- or, a key of weight w, what is left of its w runs in a row (z counts them).
            -- The GCRA times after each start are stepped here: the first start was admitted above.
            local take = 1
            local streak = tonumber(zS) or 0
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
            local kts, gts -- the GCRA times after each start, when more than one is planned
            local kHeld, gHeld = nil, nil
            if take > 1 then
              kts, gts = { kval }, { gnext }
            end
            for st = 2, take do
              if krate then
                local ok, v = flowGcra(krate, kts[st - 1], now)
                if not ok then
                  kHeld, take = v, st - 1
                  break
                end
                kts[st] = v
              end
              if grate then
                local ok, v = flowGcra(grate, gts[st - 1], now)
                if not ok then
                  gHeld, take = v, st - 1
                  break
                end
                gts[st] = v
              end
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
              if krate then
                tS = fmt('%.17g', done == 1 and kval or kts[done])
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
              waitS, streak = '1', 0
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
              gone[#gone + 1] = y
            end
            if kq <= 0 and ka <= 0 then
              dels[#dels + 1] = y
              flowKeepTat(base, g, y, tonumber(tS0))
            else
              if streak > 0 then
                zS = fmt('%d', streak)
              else
                zS = ''
              end
              writes[#writes + 1] = y
              writes[#writes + 1] = fmt('%d;%d;', ka, kq) .. kcS .. ';' .. tS .. ';' .. (krate or '') .. ';' .. waitS .. ';' .. eS .. ';' .. zS
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
-- fM written once, and only when something changed: a reserve that served no flow key writes nothing.
if flowTurnS or flowQ or waitAt ~= waitAt0 then
  local f = {}
  if flowTurnS then
    f[#f + 1] = 't'
    f[#f + 1] = flowTurnS
  end
  if flowQ then
    f[#f + 1] = 'q'
    f[#f + 1] = fmt('%d', flowQ)
  end
  if waitAt ~= waitAt0 then
    f[#f + 1] = 'w'
    f[#f + 1] = waitAt and fmt('%.17g', waitAt) or ''
  end
  rcall('HSET', base .. 'fM', unpack(f))
end

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
  -- When the first deadline to start passes.
  local x1 = firstDeadline()
  if x1 and (nextAt < 0 or x1 < nextAt) then
    nextAt = x1
  end
  -- When the first rate-limited or backed-off key or group may start again.
  if waitAt and (nextAt < 0 or waitAt < nextAt) then
    nextAt = waitAt
  end
end
statFlush(base, now, acc)
out[1] = nextAt
out[2] = queued
out[#out + 1] = rcall('EXISTS', base .. 'wo')
return out
