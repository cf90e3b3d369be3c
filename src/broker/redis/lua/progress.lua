--[[
  progress: stores a progress value (JSON text) on an active run held by the worker.

  KEYS[1] the run HASH

  ARGV[1] worker id
  ARGV[2] attempt
  ARGV[3] progress (JSON text)
  ARGV[4] events channel (watched runs)
  ARGV[5] run id

  Returns 1 when stored, 0 when the lease is not held.
]]
local v = redis.pcall('HMGET', KEYS[1], 's', 'w', 'a', 'W')
if v['err'] or v[1] ~= 'a' or v[2] ~= ARGV[1] or v[3] ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'P', ARGV[3])
if v[4] then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return 1
