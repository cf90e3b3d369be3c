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
--!keys 1
local v = redis.pcall('HMGET', KEYS[1], 's', 'w', 'a', 'W')
local state, holder, att, watched = v[1], v[2], v[3], v[4]
if v['err'] or state ~= 'a' or holder ~= ARGV[1] or att ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'P', ARGV[3])
if watched then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return 1
