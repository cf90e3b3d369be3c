--[[
  purge: deletes queued and scheduled runs of one queue (at most `limit` of each per call), and
  their idempotency keys (see dropRun in runs.lua). Active runs are left to finish. A purged
  step of a workflow counts as cancelled for the runs waiting for it (wfResolve): they are
  cancelled, skipped or run anyway as their edges say, rather than left waiting.

  KEYS[1] prios ZSET
  KEYS[2] sched ZSET

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] limit per call
  ARGV[3] events channel (watched runs)
  ARGV[4] run id prefix `<queue>.`
  ARGV[5] now

  Returns { deleted, more (1 when a limit was reached: call again), relay (1 when this queue's relay
  outbox holds entries: see wfRelayOut in workflow.lua) }.
]]
--!keys 2
--!include common.lua: wake
--!include flow.lua: flowReady
--!include runs.lua: dropRun
--!include workflow.lua: wfResolve
local base, limit, chan, qp, nowS = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local now = tonumber(nowS)
local deleted, more = 0, 0
local woke = false
-- Steps of workflows: deleted last, after what waits for them is resolved (so that a step made
-- ready by this purge is not purged by it).
local steps = {}

local function drop(rid, code)
  local k = base .. 'r:' .. rid
  local v = redis.pcall('HMGET', k, 's', 'W', 'G')
  local state, watched, wf = v[1], v[2], v[3]
  if v['err'] or state == code then
    deleted = deleted + 1
    if not v['err'] and wf then
      steps[#steps + 1] = rid
    else
      dropRun(base, k, rid)
    end
    if not v['err'] and watched then
      redis.call('PUBLISH', chan, qp .. rid)
    end
  end
end

local left = limit
for _, p in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if left <= 0 then
    more = 1
    break
  end
  local wk = base .. 'w:' .. p
  local rids = redis.call('LPOP', wk, left)
  if rids then
    for _, rid in ipairs(rids) do
      drop(rid, 'q')
    end
    left = left - #rids
  end
  if redis.call('LLEN', wk) == 0 then
    redis.call('ZREM', KEYS[1], p)
  else
    more = 1
  end
end

-- Runs under flow control: each key's list (see flow.lua), then the key's place in the rings.
if left > 0 then
  for _, g in ipairs(redis.call('SMEMBERS', base .. 'fY')) do
    for _, y in ipairs(redis.call('HKEYS', base .. 'fy|' .. g)) do
      if left <= 0 then
        more = 1
        break
      end
      local q = base .. 'fq|' .. g .. '|' .. y
      local rids = redis.call('LPOP', q, left)
      if rids then
        for _, rid in ipairs(rids) do
          drop(rid, 'q')
        end
        left = left - #rids
        redis.call('HINCRBY', base .. 'fM', 'q', -#rids)
      end
      if redis.call('LLEN', q) > 0 then
        more = 1
      end
      flowReady(base, g, y)
    end
  end
end

local due = redis.call('ZRANGE', KEYS[2], 0, limit - 1)
for _, rid in ipairs(due) do
  drop(rid, 's')
end
if #due > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, #due - 1)
end
if #due == limit then
  more = 1
end
for _, rid in ipairs(steps) do
  if wfResolve(base, qp, chan, now, nowS, rid, false, '') then
    woke = true
  end
  dropRun(base, base .. 'r:' .. rid, rid)
end
if woke then
  wake(base)
end
return { deleted, more, redis.call('EXISTS', base .. 'wo') }
