--[[
  renew: extends the leases of a batch of runs of one queue held by the worker.

  KEYS[1] active ZSET

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] worker id
  ARGV[3] new lease expiry (now + leaseMs)
  then 2 per lease: rid, attempt

  Returns the rids whose lease is not held (cancelled, recovered, settled or gone).
]]
local base, worker, expiry = ARGV[1], ARGV[2], ARGV[3]
local lost = {}
for j = 4, #ARGV, 2 do
  local rid = ARGV[j]
  local v = redis.pcall('HMGET', base .. 'r:' .. rid, 's', 'w', 'a')
  if v['err'] or v[1] ~= 'a' or v[2] ~= worker or v[3] ~= ARGV[j + 1] then
    lost[#lost + 1] = rid
  else
    redis.call('ZADD', KEYS[1], 'XX', expiry, rid)
  end
end
return lost
