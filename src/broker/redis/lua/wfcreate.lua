--[[
  wfcreate: creates a workflow's runs of one queue (docs/workflows.md): all of them and their
  edges, or nothing. A run without dependencies is queued (or scheduled, as enqueue does); a run with some
  is waiting: in `waiting`, its dependencies in wd:<rid>, and itself in the we: edge index of each
  of them. Every run stores its workflow id (g), its retention once cancelled (C, also used when a
  failed dependency skips it), how its input is built (m) and its dependencies (D).
  Counts the runs created in this minute's stats; leaves a wake-up token when a run was queued or
  a scheduled run is due first.
  A workflow over several queues (mode m) is created by one call per queue (workflows.ts): then a
  run without dependencies is created waiting for '!' (its runAt kept in r) until the workflow is
  complete (wfmulti.lua releases it); a dependency in another queue is named by its run id in D and
  wd:, and the edges from runs of this queue to dependents elsewhere are given at the end (the we:
  index of a run lives in its own queue). The call is skipped, returning { 0 }, when its first run
  exists as a run of this workflow (a creation resumed); the workflow HASH holds this queue's part.

  KEYS[1] the workflow HASH (base..'wf:'..<ulid of the workflow id>)

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] now
  ARGV[3] workflow id
  ARGV[4] mode: '' one queue, m one queue of a workflow over several
  ARGV[5] number of runs n
  then 10 per run: rid, task, input, priority, runAt, enqueuedAt ('' when it is the time in the
    run id), traceparent ('' for none), retention once cancelled (ms), inputFrom ('' given, v
    value, l list, o object), dependencies ('' for none; else one line each: rid TAB policy TAB
    name as JSON)
  then (mode m) 3 per edge from a run of this queue to a run of another: dependency rid, dependent
    run id, policy

  Returns { 1 } created, { 0 } when the workflow exists already (nothing written), { -1, rid }
  when a run id is taken (nothing written).
]]
--!keys 1
--!include common.lua: rcall, ridTime, statFlush, pushQueued, wake
local base, nowS, wfId, multi = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == 'm'
local now = tonumber(nowS)
local last = 5 + 10 * tonumber(ARGV[5])
if multi then
  if rcall('HGET', base .. 'r:' .. ARGV[6], 'G') == wfId then
    return { 0 }
  end
elseif rcall('EXISTS', KEYS[1]) == 1 then
  return { 0 }
end
for j = 6, last, 10 do
  if rcall('EXISTS', base .. 'r:' .. ARGV[j]) == 1 then
    return { -1, ARGV[j] }
  end
end
local rids = {}
local wakeUp = false
for j = 6, last, 10 do
  local rid, task, input, p, runAtS = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4]
  local e, tp, cret, mode, deps = ARGV[j + 5], ARGV[j + 6], ARGV[j + 7], ARGV[j + 8], ARGV[j + 9]
  local k = base .. 'r:' .. rid
  rids[#rids + 1] = rid
  local state
  local held = multi and deps == ''
  if deps ~= '' or held then
    state = 'w'
  elseif tonumber(runAtS) > now then
    state = 's'
  else
    state = 'q'
  end
  local f = { 's', state, 't', task, 'i', input, 'G', wfId, 'C', cret }
  if p ~= '0' then
    f[#f + 1] = 'p'
    f[#f + 1] = p
  end
  if e ~= '' then
    f[#f + 1] = 'e'
    f[#f + 1] = e
  end
  if state == 's' or (held and tonumber(runAtS) > now) then
    f[#f + 1] = 'r'
    f[#f + 1] = runAtS
  end
  if tp ~= '' then
    f[#f + 1] = 'c'
    f[#f + 1] = tp
  end
  if mode ~= '' then
    f[#f + 1] = 'M'
    f[#f + 1] = mode
  end
  if deps ~= '' then
    f[#f + 1] = 'D'
    f[#f + 1] = deps
  end
  rcall('HSET', k, unpack(f))
  if state == 'w' then
    rcall('ZADD', base .. 'waiting', ridTime(rid), rid)
    if held then
      rcall('SADD', base .. 'wd:' .. rid, '!')
    end
    for line in string.gmatch(deps, '[^\n]+') do
      local dep, pol = string.match(line, '^([^\t]*)\t([^\t]*)\t')
      rcall('SADD', base .. 'wd:' .. rid, dep)
      if #dep == 26 then
        rcall('HSET', base .. 'we:' .. dep, rid, pol)
      end
    end
  elseif state == 's' then
    local first = rcall('ZRANGE', base .. 'sched', 0, 0, 'WITHSCORES')
    if not first[2] or tonumber(runAtS) < tonumber(first[2]) then
      wakeUp = true
    end
    rcall('ZADD', base .. 'sched', runAtS, rid)
  else
    pushQueued(base, rid, p, false)
    wakeUp = true
  end
end
for j = last + 1, #ARGV, 3 do
  rcall('HSET', base .. 'we:' .. ARGV[j], ARGV[j + 1], ARGV[j + 2])
end
rcall('HSET', KEYS[1], 't', nowS, 'r', table.concat(rids, ','), 'n', #rids)
statFlush(base, now, { e = #rids })
if wakeUp then
  wake(base)
end
return { 1 }
