--[[
  prune: deletes the finished runs of one queue whose expiresAt <= now (the caller's clock), and
  their idempotency keys (see dropRun in runs.lua).

  1. The expiry lists (see runs.lua): the minutes that have begun are read oldest first; in
     each, runs are taken in the order they finished and deleted while expired, up to the first one
     that is not (only the current minute can hold one: the rest of it waits for a later call).
     An entry whose run is gone, no longer finished, or now expires in another minute (replayed,
     then finished again) is dropped.
  2. Once step 1 is done, the finished indexes, oldest first: each is ordered by the time in the
     run ids, which is nearly the order of expiry for runs of one retention. This removes index
     entries whose run is gone, and runs finished by versions that gave finished runs a TTL instead
     of an expiry list. The scan stops after `slack` entries in a row that have not expired yet, or
     after `limit`.

  KEYS[1] succeeded ZSET
  KEYS[2] failed    ZSET
  KEYS[3] cancelled ZSET
  KEYS[4] exps      ZSET  minutes with an expiry list

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] now
  ARGV[3] limit of entries examined per step and state
  ARGV[4] slack: unexpired entries in a row after which a state's scan stops
  ARGV[5] events channel (watched runs)
  ARGV[6] run id prefix `<queue>.`

  Returns { removed, more (1 when a step reached its limit: call again) }.
]]
--!keys 4
--!include common.lua: rcall, bulk, notify
--!include runs.lua: dropRun, EXPIRY_MINUTE
local base, now, limit, slack = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local chan, qp = ARGV[5], ARGV[6]
local zsets = { d = KEYS[1], f = KEYS[2], c = KEYS[3] }
local removed, more = 0, 0

-- 1. Expiry lists.
local stale = { d = {}, f = {}, c = {} } -- index entries of the runs deleted here
local budget = limit
local minutes = rcall('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, limit)
if #minutes == limit then
  more = 1
end
for _, mS in ipairs(minutes) do
  if budget <= 0 then
    more = 1
    break
  end
  local m = tonumber(mS)
  local lk = base .. 'exp:' .. mS
  local rids = rcall('LRANGE', lk, 0, budget - 1)
  local taken = 0
  for _, rid in ipairs(rids) do
    local k = base .. 'r:' .. rid
    local v = redis.pcall('HMGET', k, 's', 'x', 'W')
    local state, expires, watched = v[1], v[2], v[3]
    local x = not v['err'] and zsets[state or ''] and tonumber(expires)
    if x and x - x % EXPIRY_MINUTE == m then
      if x > now then
        break -- not yet: neither is the rest of this minute's list, mostly
      end
      dropRun(base, k, rid)
      local list = stale[state]
      list[#list + 1] = rid
      removed = removed + 1
      notify(chan, qp, rid, watched)
    end
    taken = taken + 1
  end
  budget = budget - taken
  if taken > 0 then
    rcall('LTRIM', lk, taken, -1)
  end
  if rcall('EXISTS', lk) == 0 then
    rcall('ZREM', KEYS[4], mS)
  elseif taken == #rids and budget <= 0 then
    more = 1
  end
end
for code, rids in pairs(stale) do
  bulk('ZREM', zsets[code], rids, 1000)
end

-- 2. Finished indexes, once the expiry lists are done (a call that stopped at its limit in step 1
-- is followed by another, which would scan the same unexpired head of each index again).
local codes = { 'd', 'f', 'c' }
for z = 1, more == 0 and 3 or 0 do
  local rids = rcall('ZRANGE', KEYS[z], 0, limit - 1)
  local gone = {} -- index entries to remove
  local kept = 0
  for _, rid in ipairs(rids) do
    local k = base .. 'r:' .. rid
    local v = redis.pcall('HMGET', k, 's', 'x', 'W')
    local state, expires, watched = v[1], v[2], v[3]
    if v['err'] or state ~= codes[z] then
      -- Gone (a TTL ran out: counted), or no longer in this state: a stale index entry.
      gone[#gone + 1] = rid
      if not v['err'] and not state then
        removed = removed + 1
      end
    elseif (tonumber(expires) or 0) <= now then
      dropRun(base, k, rid)
      gone[#gone + 1] = rid
      removed = removed + 1
      notify(chan, qp, rid, watched)
      kept = 0
    else
      kept = kept + 1
      if kept >= slack then
        break
      end
    end
  end
  if #rids == limit and kept < slack then
    more = 1
  end
  bulk('ZREM', KEYS[z], gone, 1000)
end
return { removed, more }
