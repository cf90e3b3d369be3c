--[[
  watch: flags a run as watched, so that its transitions PUBLISH its id on the events channel.
  Nothing is created when the run does not exist.

  KEYS[1] the run HASH

  Returns 1 when flagged, 0 when there is no such run (or it is unreadable).
]]
--!keys 1
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local ok = redis.pcall('HSET', KEYS[1], 'W', '1')
if type(ok) == 'table' and ok['err'] then
  return 0
end
return 1
