--[[
  list: the ids of a page of one queue's runs, newest first (by run id), in the states and of the
  task asked, all below a cursor. Read from the structures each state lives in: the finished
  indexes are in run id order; active and scheduled runs are sorted here (at most `cap` of each);
  each priority level of queued runs is in enqueue order (a run put back or retried sits out of
  order, which this reads around by starting a little past the cursor's place).

  KEYS[1] prios, KEYS[2] sched, KEYS[3] active, KEYS[4] succeeded, KEYS[5] failed,
  KEYS[6] cancelled

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] states: the codes of the states to list (some of w q s a d f c)
  ARGV[3] cursor: only rids below this one ('' for no bound)
  ARGV[4] want: at most this many rids
  ARGV[5] task ('' for any)
  ARGV[6] cap: entries examined per structure

  Returns { boundary, rids... }: the rids newest first. When a structure was not read to its end
  (more than `cap` entries examined), `boundary` is the lowest rid it examined and only rids at or
  above it are returned (below it, the page would not be exact): the caller continues from there.
  Otherwise `boundary` is ''. (Active and scheduled runs beyond the first `cap` by time are not
  seen: their structures are ordered by time, not by id.)
]]
--!keys 6
--!include common.lua: rcall, ACTIVE_PIN, ridTime
local base, states, cursor, task = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local want, cap = tonumber(ARGV[4]), tonumber(ARGV[6])
local found = {}
local boundary = ''

-- A structure examined down to `low` (not to its end): only rids >= low are certain.
local function truncated(low)
  if low and low > boundary then
    boundary = low
  end
end

local function below(rid)
  return cursor == '' or rid < cursor
end

-- Whether a run is (still) in the state `code` and of the task asked.
local function keep(rid, code)
  local v = redis.pcall('HMGET', base .. 'r:' .. rid, 's', 't')
  local state, runTask = v[1], v[2]
  if v['err'] or state ~= code then
    return false
  end
  return task == '' or runTask == task
end

local function wanted(code)
  return string.find(states, code, 1, true) ~= nil
end

-- Finished states: indexes ordered by the time in the rid, then by rid.
-- Waiting runs (workflows) live in an index of the same kind, under the same key base.
local finished = { { 'w', base .. 'waiting' }, { 'd', KEYS[4] }, { 'f', KEYS[5] }, { 'c', KEYS[6] } }
for _, pair in ipairs(finished) do
  local code, key = pair[1], pair[2]
  if wanted(code) then
    local max = '+inf'
    if cursor ~= '' then
      max = ridTime(cursor)
    end
    local offset, n, last = 0, 0, nil
    while n < want do
      if offset >= cap then
        truncated(last)
        break
      end
      local chunk = rcall('ZREVRANGEBYSCORE', key, max, '-inf', 'LIMIT', offset, 200)
      for _, rid in ipairs(chunk) do
        last = rid
        if below(rid) and keep(rid, code) then
          found[#found + 1] = rid
          n = n + 1
          if n >= want then
            break
          end
        end
      end
      offset = offset + #chunk
      if #chunk < 200 then
        break
      end
    end
  end
end

-- Active and scheduled runs: sorted here.
local unsorted = { { 'a', KEYS[3] }, { 's', KEYS[2] } }
for _, pair in ipairs(unsorted) do
  local code, key = pair[1], pair[2]
  if wanted(code) then
    local all = rcall('ZRANGE', key, 0, cap - 1)
    local c = {}
    for _, rid in ipairs(all) do
      if rid ~= ACTIVE_PIN and below(rid) then
        c[#c + 1] = rid
      end
    end
    table.sort(c, function(x, y)
      return x > y
    end)
    local n = 0
    for _, rid in ipairs(c) do
      if keep(rid, code) then
        found[#found + 1] = rid
        n = n + 1
        if n >= want then
          break
        end
      end
    end
  end
end

-- Queued runs: each level from the cursor's place (found by bisection) towards the head.
if wanted('q') then
  -- The lists of the priority levels, and those of the keys of runs under flow control.
  local lists = {}
  for _, p in ipairs(rcall('ZRANGE', KEYS[1], 0, -1)) do
    lists[#lists + 1] = base .. 'w:' .. p
  end
  for _, g in ipairs(rcall('SMEMBERS', base .. 'fY')) do
    for _, y in ipairs(rcall('HKEYS', base .. 'fy|' .. g)) do
      lists[#lists + 1] = base .. 'fq|' .. g .. '|' .. y
    end
  end
  for _, wk in ipairs(lists) do
    local len = rcall('LLEN', wk)
    local pos = len - 1
    if cursor ~= '' then
      local lo, hi = 0, len - 1
      pos = -1
      while lo <= hi do
        local mid = math.floor((lo + hi) / 2)
        local x = rcall('LINDEX', wk, mid)
        if x and x < cursor then
          pos = mid
          lo = mid + 1
        else
          hi = mid - 1
        end
      end
      pos = math.min(len - 1, pos + 64)
    end
    local n, scanned, low = 0, 0, nil
    local c = {}
    while pos >= 0 and n < want + 64 do
      if scanned >= cap then
        truncated(low)
        break
      end
      local from = math.max(0, pos - 199)
      local chunk = rcall('LRANGE', wk, from, pos)
      for i = #chunk, 1, -1 do
        local rid = chunk[i]
        scanned = scanned + 1
        if below(rid) then
          if low == nil or rid < low then
            low = rid
          end
          if keep(rid, 'q') then
            c[#c + 1] = rid
            n = n + 1
          end
        end
      end
      pos = from - 1
    end
    for _, rid in ipairs(c) do
      found[#found + 1] = rid
    end
  end
end

table.sort(found, function(x, y)
  return x > y
end)
local out = { boundary }
for i = 1, math.min(want, #found) do
  if found[i] < boundary then
    break
  end
  out[#out + 1] = found[i]
end
return out
