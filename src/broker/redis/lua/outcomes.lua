--[[
  outcomes.lua: the outcomes of leased runs (settleItems: settle.lua, and reserve.lua before it
  leases) and the failure of an unreadable run (failCorrupt). It owns no keys of its own: see
  runs.lua, flow.lua, workflow.lua (and common.lua for how libraries are included).
]]
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
          -- No attempt counted now: a deadline to start holds again (see 'startby' in runs.lua).
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
