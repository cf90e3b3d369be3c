--[[
  schedadmin: pauses, resumes or deletes a schedule, keeping its due entry in step.

  KEYS[1] the schedule's hash `<base>S:<id>`
  KEYS[2] the queue's schedule ids SET `<base>Sids`
  KEYS[3] the queue's due ZSET `<base>Sdue`

  ARGV[1] id, ARGV[2] operation ('pause', 'resume' or 'delete'), ARGV[3] now

  Returns 1 when the schedule existed, 0 otherwise.
]]
--!keys 3
local id, op, now = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if op == 'delete' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  return 1
end
local paused = op == 'pause'
redis.call('HSET', KEYS[1], 'p', paused and '1' or '0', 'u', now)
local n = redis.call('HGET', KEYS[1], 'n')
if paused or not n or n == '' then
  redis.call('ZREM', KEYS[3], id)
else
  redis.call('ZADD', KEYS[3], n, id)
end
return 1
