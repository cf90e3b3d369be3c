--[[
  prune: deletes the finished runs of one queue whose expiresAt <= now (at most `limit` per state
  per call). Their hashes may already be gone (they expire by themselves): each index entry
  counts as one run removed.

  KEYS[1] succeeded ZSET
  KEYS[2] failed    ZSET
  KEYS[3] cancelled ZSET

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] now
  ARGV[3] limit per state
  ARGV[4] events channel (watched runs)
  ARGV[5] run id prefix `<queue>.`

  Returns { removed, more (1 when a limit was reached: call again) }.
]]
local base, now, limit, chan, qp = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
local codes = { 'd', 'f', 'c' }
local removed, more = 0, 0
for z = 1, 3 do
  local rids = redis.call('ZRANGEBYSCORE', KEYS[z], '-inf', now, 'LIMIT', 0, limit)
  if #rids > 0 then
    if #rids == limit then
      more = 1
    end
    for _, rid in ipairs(rids) do
      local k = base .. 'r:' .. rid
      local v = redis.pcall('HMGET', k, 's', 'W')
      if v['err'] or v[1] == codes[z] then
        redis.call('DEL', k)
        if not v['err'] and v[2] then
          redis.call('PUBLISH', chan, qp .. rid)
        end
      end
    end
    redis.call('ZREMRANGEBYRANK', KEYS[z], 0, #rids - 1)
    removed = removed + #rids
  end
end
return { removed, more }
