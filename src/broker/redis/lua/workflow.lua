--[[
  workflow.lua: workflows (see common.lua for how libraries are included): fan-in and failure
  propagation (wfResolve, wfCascade, wfEdge), a run made ready (wfReady), retry from a step
  (wfRewait, wfRewaitFrom), the release of a held root (wfRelease), the relay between slots
  (wfRelayOut).

  Run hash fields (see runs.lua for the others):
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
--[[
  Workflows (docs/workflows.md). wfJoin: the JSON text joined from the results in wv: of run `rid`,
  in the order of `deps` (lines as D; a line that does not read as one is skipped), as `mode` says
  (v value, l list, o object). A waiting run `rid` whose last dependency is resolved becomes
  queued (wfReady): its input so built, due now, its wait keys gone; a step under flow control
  (field g) joins its key's list (pushQueued, flowPush), and counts there from then on.
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
  local v = rcall('HMGET', k, 'M', 'D', 'p', 'g')
  local mode, deps, prio, g = v[1], v[2], v[3], v[4]
  if mode then
    rcall('HSET', k, 'i', wfJoin(base, rid, mode, deps))
  end
  rcall('HSET', k, 's', 'q', 'r', nowS)
  rcall('ZREM', base .. 'waiting', rid)
  rcall('DEL', base .. 'wd:' .. rid, base .. 'wv:' .. rid)
  -- A step under flow control (g, its group) goes to its key's list, as an enqueued run does.
  pushQueued(base, rid, prio or '0', false, g or nil)
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

