--[[
  layout: raises the layout record of a prefix to a version (never lowers it), once every queue
  has been migrated to it (see layout.ts).

  KEYS[1] the layout record `<prefix>:layout` HASH: version, compatible, at

  ARGV[1] version
  ARGV[2] compatible: the oldest layout version whose code may run on this one
  ARGV[3] now (epoch ms): when the record changed

  Returns { version, compatible } as stored after the call.
]]
--!keys 1

local cur = tonumber(redis.call('HGET', KEYS[1], 'version'))
if not cur or cur < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'version', ARGV[1], 'compatible', ARGV[2], 'at', ARGV[3])
end
return redis.call('HMGET', KEYS[1], 'version', 'compatible')
