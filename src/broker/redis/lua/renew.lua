--[[
  renew: extends the leases of a batch of runs of one queue held by the worker.

  KEYS[1] active ZSET

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] worker id
  ARGV[3] new lease expiry (now + leaseMs)
  then 2 per lease: rid, attempt

  Returns the rids whose lease is not held (cancelled, recovered, settled or gone).

  Runs when Redis is out of memory (maxmemory, noeviction), since it only moves the scores of
  members that exist: a script's first write of a command that may need memory (ZADD) is refused
  then, and the writes after its first one are not (Redis would not stop a script half-way), so a
  ZREM of a member that cannot exist (an empty rid) comes first. Without it, a worker could not
  keep its leases while Redis is full, and every run it holds would run again once memory is freed.
]]
--!keys 1
local base, worker, expiry = ARGV[1], ARGV[2], ARGV[3]
local lost = {}
redis.call('ZREM', KEYS[1], '')
for j = 4, #ARGV, 2 do
  local rid = ARGV[j]
  local v = redis.pcall('HMGET', base .. 'r:' .. rid, 's', 'w', 'a')
  local state, holder, att = v[1], v[2], v[3]
  if v['err'] or state ~= 'a' or holder ~= worker or att ~= ARGV[j + 1] then
    lost[#lost + 1] = rid
  else
    redis.call('ZADD', KEYS[1], 'XX', expiry, rid)
  end
end
return lost
