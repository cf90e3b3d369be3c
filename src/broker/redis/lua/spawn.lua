--[[
  spawn.lua: creating the runs of a workflow (wfAddRun: wfcreate.lua, and a spawn's runs) and
  dynamic fan-out (wfSpawn). It owns no keys of its own: see workflow.lua and runs.lua (and
  common.lua for how libraries are included).
]]
--[[
  Creates run r (read by newRun) of workflow `wfId` (wfcreate.lua, and the runs a spawn creates):
  queued, or scheduled when its runAt is later than now, or waiting when it has dependencies (deps:
  lines as D): in `waiting`, its dependencies in wd:<rid>, itself in the we: edge index of each of
  them. Its fields are written as enqueue writes them (runWrite: C, its retention once cancelled,
  always given for a workflow's run), then a workflow's own: G its workflow, M how its input is
  built (mode: '', v, l, o), D its dependencies, and for a held run its runAt in r. An idempotency
  key names it (the caller checked it is free). `held`: a root of a workflow over several queues,
  created waiting for '!' (its release, wfRelease). A dependency in another queue (named by its
  full run id) is in wd: and D only: its edge index is in its own slot.
  Returns whether idle workers must be woken.
]]
local function wfAddRun(base, wfId, now, r, mode, deps, held)
  local rid, runAtS = r.rid, r.runAt
  local more = { 'G', wfId }
  if held and tonumber(runAtS) > now then
    more[#more + 1] = 'r'
    more[#more + 1] = runAtS
  end
  if mode ~= '' then
    more[#more + 1] = 'M'
    more[#more + 1] = mode
  end
  if deps ~= '' then
    more[#more + 1] = 'D'
    more[#more + 1] = deps
  end
  if r.ik ~= '' then
    rcall('SET', base .. 'ik:' .. r.task .. ':' .. r.ik, rid, 'PX', r.ittl)
  end
  if deps == '' and not held then
    -- Queued or scheduled, as any new run; a scheduled run due before every other wakes workers.
    local first = tonumber(runAtS) > now and rcall('ZRANGE', base .. 'sched', 0, 0, 'WITHSCORES')
    if runCreate(base, r, now, more) == 'q' then
      return true
    end
    return not first[2] or tonumber(runAtS) < tonumber(first[2])
  end
  runWrite(r, 'w', more)
  rcall('ZADD', base .. 'waiting', ridTime(rid), rid)
  if held then
    rcall('SADD', base .. 'wd:' .. rid, '!')
  end
  local wait = {}
  for line in string.gmatch(deps, '[^\n]+') do
    local dep, pol = string.match(line, '^([^\t]*)\t([^\t]*)\t')
    wait[#wait + 1] = dep
    if #dep == 26 then
      rcall('HSET', base .. 'we:' .. dep, rid, pol)
    end
  end
  -- One SADD per thousand (a fan-in step of a large workflow waits for thousands).
  bulk('SADD', base .. 'wd:' .. rid, wait, 1000)
  return false
end

--[[
  Dynamic fan-out (docs/workflows.md): the held run `rid` (hash k) ends its attempt (the history
  gets it, outcome `spawned`) by creating the runs of `payload` (see spawnPayload in workflows.ts)
  and waiting, in `waiting`, for those it awaits: wd:/we: as for a dependency, and field A (a head
  line `<mode> TAB <retention ms>`, then one line per awaited run as in D), which wfResolve reads to
  finish it with their values. The runs join its workflow (G), or one named by its own id. Nothing
  is written when a run id is taken: returns false and that id. Else returns whether idle workers
  must be woken.
]]
local function wfSpawn(base, qp, now, nowS, rid, k, payload, retS, worker, att, started, acc)
  local sp = cjson.decode(payload)
  for _, r in ipairs(sp.r) do
    if rcall('EXISTS', base .. 'r:' .. r[1]) == 1 then
      return false, r[1]
    end
  end
  local wf = rcall('HGET', k, 'G')
  if not wf then
    wf = qp .. rid
    rcall('HSET', k, 'G', wf)
  end
  local wk = base .. 'wf:' .. string.sub(wf, -26)
  local listed = rcall('HGET', wk, 'r')
  local rids = {}
  if not listed then
    rids[1] = rid
    rcall('HSET', wk, 't', nowS, 'n', 1)
  end
  local wakeUp = false
  local run = {}
  for _, a in ipairs(sp.r) do
    rids[#rids + 1] = a[1]
    if wfAddRun(base, wf, now, newRun(base, 1, run, a), a[15], a[16], false) then
      wakeUp = true
    end
  end
  if listed then
    rcall('HSET', wk, 'r', listed .. ',' .. table.concat(rids, ','))
  else
    rcall('HSET', wk, 'r', table.concat(rids, ','))
  end
  rcall('HINCRBY', wk, 'n', #sp.r)
  statAdd(acc, 'e', #sp.r)
  -- What an earlier spawn of this run (replayed since) awaited is forgotten.
  local old = rcall('HGET', k, 'A')
  if old then
    for line in string.gmatch(old, '[^\n]+') do
      local dep = string.match(line, '^([^\t]*)\t[^\t]*\t')
      if dep then
        rcall('HDEL', base .. 'we:' .. dep, rid)
      end
    end
  end
  rcall('DEL', base .. 'wd:' .. rid, base .. 'wv:' .. rid)
  for line in string.gmatch(sp.d, '[^\n]+') do
    local dep, pol = string.match(line, '^([^\t]*)\t([^\t]*)\t')
    rcall('SADD', base .. 'wd:' .. rid, dep)
    rcall('HSET', base .. 'we:' .. dep, rid, pol)
  end
  local h = appendHistory(rcall('HGET', k, 'h'), att, worker, started, nowS, 'spawned')
  rcall('HSET', k, 's', 'w', 'A', sp.m .. '\t' .. retS .. '\n' .. sp.d, 'h', h, 'r', nowS)
  rcall('HDEL', k, 'o')
  rcall('ZADD', base .. 'waiting', ridTime(rid), rid)
  return wakeUp
end

