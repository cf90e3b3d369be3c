--[[
  prune: deletes the finished runs of one queue whose expiresAt <= now. Each finished index is
  ordered by the time in the run ids, which is nearly the order of expiry (runs of one state
  mostly share a retention): the scan starts at the oldest entries and stops after `slack`
  entries in a row that have not expired yet, or after `limit` entries. An entry whose hash is
  already gone (it expired by itself) is removed and counted too.

  KEYS[1] succeeded ZSET
  KEYS[2] failed    ZSET
  KEYS[3] cancelled ZSET

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] now
  ARGV[3] limit of entries scanned per state
  ARGV[4] slack: unexpired entries in a row after which a state's scan stops
  ARGV[5] events channel (watched runs)
  ARGV[6] run id prefix `<queue>.`

  Returns { removed, more (1 when a scan reached its limit: call again) }.
]]
local base, now, limit, slack = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local chan, qp = ARGV[5], ARGV[6]
local codes = { 'd', 'f', 'c' }
local removed, more = 0, 0
for z = 1, 3 do
  local rids = redis.call('ZRANGE', KEYS[z], 0, limit - 1)
  local stale = {} -- index entries to remove
  local kept = 0
  for _, rid in ipairs(rids) do
    local k = base .. 'r:' .. rid
    local v = redis.pcall('HMGET', k, 's', 'x', 'W')
    if v['err'] or v[1] ~= codes[z] then
      -- Gone (expired by itself: counted), or no longer in this state: a stale index entry.
      stale[#stale + 1] = rid
      if not v['err'] and not v[1] then
        removed = removed + 1
      end
    elseif (tonumber(v[2]) or 0) <= now then
      redis.call('DEL', k)
      stale[#stale + 1] = rid
      removed = removed + 1
      if v[3] then
        redis.call('PUBLISH', chan, qp .. rid)
      end
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
  for i = 1, #stale, 1000 do
    redis.call('ZREM', KEYS[z], unpack(stale, i, math.min(i + 999, #stale)))
  end
end
return { removed, more }
