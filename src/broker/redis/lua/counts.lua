--[[
  counts: how many runs of one queue are in each state (one consistent snapshot). Finished runs
  are counted from their index until prune removes them.

  KEYS[1] prios, KEYS[2] sched, KEYS[3] active, KEYS[4] succeeded, KEYS[5] failed, KEYS[6] cancelled

  ARGV[1] key base `<prefix>:{<queue>}:`

  Returns { queued, scheduled, active, succeeded, failed, cancelled, waiting }; waiting (runs of a
  workflow waiting for their dependencies) is read from `waiting`, under the same key base.
]]
--!keys 6
--!include common.lua: ACTIVE_PIN_SCORE
local queued = 0
for _, p in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  queued = queued + redis.call('LLEN', ARGV[1] .. 'w:' .. p)
end
-- Runs under flow control, in the lists of their keys (see flow.lua).
queued = queued + (tonumber(redis.call('HGET', ARGV[1] .. 'fM', 'q')) or 0)
return {
  queued,
  redis.call('ZCARD', KEYS[2]),
  redis.call('ZCOUNT', KEYS[3], '-inf', '(' .. ACTIVE_PIN_SCORE), -- not the pin (common.lua)
  redis.call('ZCARD', KEYS[4]),
  redis.call('ZCARD', KEYS[5]),
  redis.call('ZCARD', KEYS[6]),
  redis.call('ZCARD', ARGV[1] .. 'waiting'),
}
