--[[
  schedupsert: creates or updates a schedule definition (see upsertSchedule in broker/types.ts).

  The stored definition is replaced only by a greater version, or an equal version with a greater
  hash (byte order; a version above 2^53-1, stored before versions were checked, counts below all): every order of concurrent upserts ends on the same definition, and an older
  deploy never overwrites a newer one. On replace the next fire time is kept when the spec text is
  the same, else taken from ARGV; paused, counters and the last fire are kept.

  KEYS[1] the schedule's hash `<base>S:<id>`
  KEYS[2] the queue's schedule ids SET `<base>Sids`
  KEYS[3] the queue's due ZSET `<base>Sdue` (id -> next fire time, unpaused schedules only)

  ARGV[1] id, ARGV[2] task, ARGV[3] spec, ARGV[4] input, ARGV[5] options, ARGV[6] hash,
  ARGV[7] version, ARGV[8] next fire time ('' for none), ARGV[9] now

  Returns { outcome ('created', 'updated', 'unchanged', 'older'), then the stored hash's fields
  and values (HGETALL) }.
]]
--!keys 3
local id, task, spec, input, options, hash, version, nextS, now =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local outcome
local stored = redis.call('HMGET', KEYS[1], 'v', 'h', 's', 'n', 'p')
local sVersion, sHash, sSpec, sNext, sPaused = stored[1], stored[2], stored[3], stored[4], stored[5]
if not sVersion then
  redis.call('HSET', KEYS[1], 't', task, 's', spec, 'i', input, 'o', options, 'h', hash, 'v', version,
    'n', nextS, 'p', '0', 'f', '0', 'm', '0', 'c', now, 'u', now)
  redis.call('SADD', KEYS[2], id)
  if nextS ~= '' then
    redis.call('ZADD', KEYS[3], nextS, id)
  end
  outcome = 'created'
else
  local sv, sh = tonumber(sVersion) or 0, sHash or ''
  local v = tonumber(version)
  -- A version above 2^53-1 (stored before versions were checked: a typo such as 1e300) counts
  -- below every version, so that it can still be replaced (newerDefinition does the same).
  if sv > 9007199254740991 then
    sv = -math.huge
  end
  if v > 9007199254740991 then
    v = -math.huge
  end
  local order
  if v ~= sv then
    order = (v > sv) and 1 or -1
  elseif hash == sh then
    order = 0
  else
    order = (hash > sh) and 1 or -1
  end
  if order == 0 then
    outcome = 'unchanged'
  elseif order < 0 then
    outcome = 'older'
  else
    local n = nextS
    if sSpec == spec then
      n = sNext or ''
    end
    redis.call('HSET', KEYS[1], 't', task, 's', spec, 'i', input, 'o', options, 'h', hash, 'v', version, 'n', n, 'u', now)
    redis.call('SADD', KEYS[2], id)
    if n ~= '' and sPaused ~= '1' then
      redis.call('ZADD', KEYS[3], n, id)
    else
      redis.call('ZREM', KEYS[3], id)
    end
    outcome = 'updated'
  end
end
local out = { outcome }
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all do
  out[#out + 1] = all[i]
end
return out
