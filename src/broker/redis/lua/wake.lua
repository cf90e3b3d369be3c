--[[
  wake: leaves a wake-up token for one idle worker, unless one is already waiting. Used to put
  back a token taken by a wake-up listener that nobody was waiting on any more.

  KEYS[1] wake LIST

  Returns the number of tokens now waiting.
]]
--!keys 1
if redis.call('LLEN', KEYS[1]) == 0 then
  return redis.call('RPUSH', KEYS[1], '1')
end
return redis.call('LLEN', KEYS[1])
