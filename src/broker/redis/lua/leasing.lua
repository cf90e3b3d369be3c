--[[
  leasing.lua: the steps of reserve.lua that read best on their own (see common.lua for how
  libraries are included). It owns no keys of its own: see runs.lua, flow.lua and workflow.lua.
  `c` is reserve's context, one table per call: base, worker, now (a number), nowS (as given),
  leaseUntil (as given), failedRet (retention of runs failed here), limit (runs per step), chan,
  qp (the run id prefix), acc (this minute's counters), leases (score, rid pairs for `active`),
  out (the reply).
]]
-- Never-started queued runs past their deadline to start (field X, indexed in `startby`): failed
-- with reason `expired`, as reserveLease does for one it reaches, wherever they are in their lists.
-- A run under flow control leaves its key's list (flowUnqueue, as cancel); another leaves its
-- level's list (`prios` the queue's levels) when it is among the first entries (LPOS bounds the
-- search), else its entry there is left stale and skipped when reached. Entries of runs that
-- cannot expire now are dropped (a scheduled one is indexed again when promoted). Returns whether
-- `limit` entries were read (more may be pending), and whether a run became queued. The index's
-- first entry, read once, is kept in c.x1 for nextAt (reserveFirstDeadline) until the index moves:
-- a queue whose runs have no deadline, or none due, pays one read per call.
local function reserveSweep(c, prios)
  local base, now, nowS, chan, qp = c.base, c.now, c.nowS, c.chan, c.qp
  local startby = base .. 'startby'
  local full, woke = false, false
  local first = rcall('ZRANGE', startby, 0, 0, 'WITHSCORES')
  c.x1 = first
  if not first[2] or tonumber(first[2]) >= now then
    return full, woke
  end
  c.x1 = nil -- the sweep moves the index: read again for nextAt
  local rids = rcall('ZRANGEBYSCORE', startby, '-inf', '(' .. nowS, 'LIMIT', 0, c.limit)
  if #rids == c.limit then
    full = true
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
            rcall('ZREM', prios, prio or '0')
          end
        end
      end
      if wf and wfResolve(base, qp, chan, now, nowS, rid, false, '') then
        woke = true
      end
      finish(base, k, rid, 'f', 'failed', now, nowS, c.failedRet, nil, 'E', expiredError(startBy))
      statAdd(c.acc, 'f', 1)
      notify(chan, qp, rid, watched)
    end
  end
  bulk('ZREM', startby, rids, 1000)
  return full, woke
end

-- When the first run indexed in `startby` expires (nil: none): a run exactly at its deadline may
-- still start, so a millisecond after it. The entry reserveSweep read (c.x1) while the index has
-- not moved since.
local function reserveFirstDeadline(c)
  local first = c.x1 or rcall('ZRANGE', c.base .. 'startby', 0, 0, 'WITHSCORES')
  return first[2] and tonumber(first[2]) + 1 or nil
end

-- When reserve's caller should come back, nothing more being pending: the first of the earliest
-- scheduled run and lease expiry (s1, a1 as read before step 1; read again from `sched`,
-- `active` when `schedMoved`, `leasesMoved`), the first deadline to start, and when the first
-- rate-limited or backed-off key or group may start again (waitAt, nil: none). -1: none of them.
local function reserveNextAt(c, sched, active, s1, a1, schedMoved, leasesMoved, waitAt)
  if schedMoved then
    s1 = rcall('ZRANGE', sched, 0, 0, 'WITHSCORES')
  end
  if leasesMoved then
    a1 = earliestLease(active)
  end
  local nextAt = -1
  if s1[2] then
    nextAt = tonumber(s1[2])
  end
  if a1[2] then
    local t = tonumber(a1[2])
    if nextAt < 0 or t < nextAt then
      nextAt = t
    end
  end
  local x1 = reserveFirstDeadline(c)
  if x1 and (nextAt < 0 or x1 < nextAt) then
    nextAt = x1
  end
  if waitAt and (nextAt < 0 or waitAt < nextAt) then
    nextAt = waitAt
  end
  return nextAt
end

-- Step 1: the due scheduled runs `due` (rids read from `sched`) become queued, each at the tail
-- of its priority level; they leave `sched` (and a debounced one its key's hash: debForget). Returns whether a run became queued for idle workers
-- to see besides (a corrupt run failed, reaching a workflow's dependents).
local function reservePromote(c, sched, due)
  local base, chan, qp = c.base, c.chan, c.qp
  local woke = false
  for _, rid in ipairs(due) do
    local k = base .. 'r:' .. rid
    local v = redis.pcall('HMGET', k, 's', 'p', 'W', 'g', 'X', 'B', 't')
    local state, prio, watched, g, startBy, deb, task = v[1], v[2], v[3], v[4], v[5], v[6], v[7]
    if v['err'] then
      if failCorrupt(base, k, rid, qp .. rid, c.now, c.nowS, c.failedRet, 'not a hash', c.acc, chan) then
        woke = true
      end
    elseif state == 's' then
      rcall('HSET', k, 's', 'q')
      pushQueued(base, rid, prio or '0', false, g)
      if startBy then
        rcall('ZADD', base .. 'startby', startBy, rid) -- again, if a sweep dropped it while scheduled
      end
      if deb then
        debForget(base, rid, task, deb) -- queued: its burst is over
      end
      notify(chan, qp, rid, watched)
    end
  end
  rcall('ZREMRANGEBYRANK', sched, 0, #due - 1)
  return woke
end

-- Step 2: the expired leases `expired` (rids read from `active`, in lease order) are recorded as
-- `lost`: back to the head of their level (so taken in reverse), or failed with reason
-- `lease_lost` once leaseLosses reaches maxLosses; they leave `active`. Returns whether a run
-- became queued for idle workers to see besides.
local function reserveRecover(c, active, expired, maxLosses)
  local base, now, nowS, chan, qp = c.base, c.now, c.nowS, c.chan, c.qp
  local woke = false
  for j = #expired, 1, -1 do
    local rid = expired[j]
    local k = base .. 'r:' .. rid
    local v = redis.pcall('HMGET', k, 's', 'p', 'W', 'a', 'w', 'b', 'l', 'h', 'g', 'G')
    local state, prio, watched, att, holder, started, lost, hist, g, wf = v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10]
    if v['err'] then
      if failCorrupt(base, k, rid, qp .. rid, now, nowS, c.failedRet, 'not a hash', c.acc, chan) then
        woke = true
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
          woke = true
        end
        finish(base, k, rid, 'f', 'failed', now, nowS, c.failedRet, nil, 'l', losses, 'h', h, 'E', leaseLostError)
        statAdd(c.acc, 'f', 1)
      else
        rcall('HSET', k, 's', 'q', 'l', losses, 'h', h)
        pushQueued(base, rid, prio or '0', true, g)
      end
      notify(chan, qp, rid, watched)
    end
  end
  rcall('ZREMRANGEBYRANK', active, 0, #expired - 1)
  return woke
end

-- Leases queued run rid (its priority level p, or nil: the one stored) if it is still queued: the
-- run is active, its lease in c.leases, its 8 values in c.out. A corrupt run is failed, one past
-- its deadline to start too; a stale entry (gone, no longer queued) skipped. Returns whether it
-- was leased, and whether a run became queued (a workflow's dependents reached).
local function reserveLease(c, rid, p)
  local base, now, nowS, chan, qp, acc = c.base, c.now, c.nowS, c.chan, c.qp, c.acc
  local woke = false
  local k = base .. 'r:' .. rid
  local v = redis.pcall('HMGET', k, 's', 't', 'i', 'a', 'e', 'c', 'W', 'r', 'p', 'S', 'X', 'G', 'l')
  local state, task, input, attempts, enq, tp, watched, runAt, prio, mark = v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10]
  local startBy, wf, losses = v[11], v[12], v[13]
  if startBy and state == 'q' then
    rcall('ZREM', base .. 'startby', rid) -- leased or failed here: no longer in the index
    c.x1 = nil
  end
  if v['err'] then
    if failCorrupt(base, k, rid, qp .. rid, now, nowS, c.failedRet, 'not a hash', acc, chan) then
      woke = true
    end
  elseif state == 'q' and startBy and now > (tonumber(startBy) or now) and (tonumber(attempts) or 0) == 0 then
    -- Past its deadline to start (expiry): failed, never started, no attempt counted; a
    -- workflow's dependents are told first (finish may delete the run).
    if wf and wfResolve(base, qp, chan, now, nowS, rid, false, '') then
      woke = true
    end
    finish(base, k, rid, 'f', 'failed', now, nowS, c.failedRet, nil, 'E', expiredError(startBy))
    statAdd(acc, 'f', 1)
    notify(chan, qp, rid, watched)
  elseif state == 'q' and task and input then
    local a = (tonumber(attempts) or 0) + 1
    rcall('HSET', k, 's', 'a', 'a', fmt('%d', a), 'w', c.worker, 'b', nowS, 'o', '1')
    local leases, out = c.leases, c.out
    leases[#leases + 1] = c.leaseUntil
    leases[#leases + 1] = rid
    out[#out + 1] = rid
    out[#out + 1] = task
    out[#out + 1] = input
    out[#out + 1] = a
    out[#out + 1] = p or prio or '0'
    out[#out + 1] = enq or ''
    out[#out + 1] = tp or ''
    out[#out + 1] = mark or ''
    out[#out + 1] = losses or '0'
    notify(chan, qp, rid, watched)
    -- Wait: from enqueue, or from the due time of a scheduled run, to this start.
    local since = tonumber(enq) or ridTime(rid)
    local due = tonumber(runAt)
    if due and due > since then
      since = due
    end
    statLatency(acc, 'w', now - since)
    return true, woke
  elseif state == 'q' or (not state and (task or input)) then
    if failCorrupt(base, k, rid, qp .. rid, now, nowS, c.failedRet, 'its task, input or state is missing', acc, chan) then
      woke = true
    end
  end
  -- Otherwise the run is gone or no longer queued (a stale entry): skipped.
  return false, woke
end

-- The keys and groups of the waiting sets (fW, fWg) whose wait is over (at most `limit` of each)
-- go back to their rings. Returns whether `limit` of either were read (more may be pending), when
-- the first still waiting may start (flowWaitFirst) and the turn counter (fM t) as they are now.
local function reserveFlowWake(c)
  local base, now = c.base, c.now
  local flowWaitK, flowWaitG = base .. 'fW', base .. 'fWg'
  local dueK = rcall('ZRANGEBYSCORE', flowWaitK, '-inf', now, 'LIMIT', 0, c.limit)
  for _, gy in ipairs(dueK) do
    local cut = string.find(gy, '|', 1, true)
    rcall('ZREM', flowWaitK, gy)
    flowReady(base, string.sub(gy, 1, cut - 1), string.sub(gy, cut + 1), true)
  end
  local dueG = rcall('ZRANGEBYSCORE', flowWaitG, '-inf', now, 'LIMIT', 0, c.limit)
  for _, g in ipairs(dueG) do
    rcall('ZREM', flowWaitG, g)
    rcall('HDEL', base .. 'fG|' .. g, 'w')
    flowGroupReady(base, g)
  end
  return #dueK == c.limit or #dueG == c.limit, tonumber(flowWaitFirst(base)), rcall('HGET', base .. 'fM', 't')
end

-- The GCRA times of a key (rate of interval kri and burst krb, kri 0: none) and its group (grate,
-- text; nil: none) after each of `take` (more than one) starts planned in a row, the first admitted
-- already (at kval, gnext). Returns how many may start (fewer when a rate stops the plan), the times
-- after each, and when the key, or the group, whose rate stopped it may start again (nil: none).
-- (A single start needs no plan: reserve calls this only for more.)
local function reserveFlowPlan(take, kri, krb, kval, grate, gnext, now)
  local kts, gts = { kval }, { gnext } -- the GCRA times after each start
  local kHeld, gHeld = nil, nil
  for st = 2, take do
    if kri > 0 then
      local ok, v = flowGcraN(kri, krb, kts[st - 1], now)
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
  return take, kts, gts, kHeld, gHeld
end

-- fM written once, and only when something changed (turnS, q: its t and q to write, or nil;
-- waitAt its w, waitAt0 as read): a reserve that served no flow key writes nothing.
local function reserveFlowMeta(base, turnS, q, waitAt, waitAt0)
  if turnS or q or waitAt ~= waitAt0 then
    local f = {}
    if turnS then
      f[#f + 1] = 't'
      f[#f + 1] = turnS
    end
    if q then
      f[#f + 1] = 'q'
      f[#f + 1] = fmt('%d', q)
    end
    if waitAt ~= waitAt0 then
      f[#f + 1] = 'w'
      f[#f + 1] = waitAt and fmt('%.17g', waitAt) or ''
    end
    rcall('HSET', base .. 'fM', unpack(f))
  end
end
