--[[
  flowkeys: one page of a queue's flow-control keys (BrokerInspector.flowKeys), sorted here so
  that only the page leaves the server. Every key of the queue is read (its group's hash of key
  states): O(keys) per page, in one script.

  KEYS[1] fY  SET  the groups that have key states (see flow.lua)

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] sort: 'queued' or 'active' (most first), or 'key'; then by group and key; or 'held':
          no page, the queued runs held back by a limit (FlowCounts.heldRuns)
  ARGV[3] offset
  ARGV[4] limit

  Returns { total, then 7 per key: group, key, queued, active, concurrency ('0': none),
            rate ('' : none), waitUntil ('': not held by its rate) }; for 'held':
          { group_rate, group_concurrency, key_rate, key_concurrency } (runs), then the number of keys
]]
--!keys 1
--!include flow.lua: flowKeyUnpack
local base, sort = ARGV[1], ARGV[2]
local offset, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local rows = {}
for _, g in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local all = redis.call('HGETALL', base .. 'fy|' .. g)
  for i = 1, #all, 2 do
    local st = flowKeyUnpack(all[i + 1])
    if st then
      local waiting = st.w ~= '' or nil
      local rate = ''
      if st.ri > 0 then
        -- '%.17g': read back exactly (parseRate in TypeScript).
        rate = string.format('%.17g,%.17g', st.ri, st.rb)
      end
      rows[#rows + 1] = { g .. '|' .. all[i], st.q, st.a, string.format('%d', st.c), rate, waiting }
    end
  end
end
if sort == 'held' then
  -- By the first limit that holds a key's queued runs, in reserve's order (as flowWaiting in TypeScript).
  local held, groups = { 0, 0, 0, 0 }, {}
  for _, r in ipairs(rows) do
    if r[2] > 0 then
      local g = string.sub(r[1], 1, string.find(r[1], '|', 1, true) - 1)
      local gs = groups[g]
      if not gs then
        local v = redis.call('HMGET', base .. 'fG|' .. g, 'a', 'c', 'w')
        local gaS, gcS, gWaiting = v[1], v[2], v[3]
        local ga, gc = tonumber(gaS) or 0, tonumber(gcS) or 0
        gs = 0
        if gWaiting then
          gs = 1
        elseif gc > 0 and ga >= gc then
          gs = 2
        end
        groups[g] = gs
      end
      local kc = tonumber(r[4]) or 0
      if gs > 0 then
        held[gs] = held[gs] + r[2]
      elseif r[6] then
        held[3] = held[3] + r[2]
      elseif kc > 0 and r[3] >= kc then
        held[4] = held[4] + r[2]
      end
    end
  end
  held[5] = #rows
  return held
end
local col = 0
if sort == 'queued' then
  col = 2
elseif sort == 'active' then
  col = 3
end
table.sort(rows, function(x, y)
  if col > 0 and x[col] ~= y[col] then
    return x[col] > y[col]
  end
  return x[1] < y[1]
end)
local out = { #rows }
for i = offset + 1, math.min(offset + limit, #rows) do
  local r = rows[i]
  local cut = string.find(r[1], '|', 1, true)
  local wait = ''
  if r[6] then
    wait = redis.call('ZSCORE', base .. 'fW', r[1]) or ''
  end
  out[#out + 1] = string.sub(r[1], 1, cut - 1)
  out[#out + 1] = string.sub(r[1], cut + 1)
  out[#out + 1] = r[2]
  out[#out + 1] = r[3]
  out[#out + 1] = r[4]
  out[#out + 1] = r[5]
  out[#out + 1] = wait
end
return out
