--[[
  retryfailed: replays failed runs of one queue (of one task, or all), like `retry`, scanning at
  most `limit` entries of the failed index from `offset` (entries of other tasks are skipped and
  stay in place: the next call starts past them). Runs recorded from elsewhere (field O, see
  record.lua) are skipped too. A replayed step of a workflow brings back the steps its failure
  cancelled, as `retry` does (wfRewait).

  KEYS[1] failed ZSET

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] task ('' for every task)
  ARGV[3] offset in the failed index
  ARGV[4] limit of entries scanned
  ARGV[5] events channel (watched runs)
  ARGV[6] run id prefix `<queue>.`
  ARGV[7] now (the runs are due from then)

  Returns { replayed, skipped, scanned, relay } (relay 1 when this queue's relay outbox holds
  entries: see wfRelayOut in workflow.lua).
]]
--!keys 1
--!include common.lua: rcall, wake
--!include runs.lua: replay
--!include workflow.lua: wfRewait
local base, task = ARGV[1], ARGV[2]
local offset, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local chan, qp = ARGV[5], ARGV[6]
local rids = rcall('ZRANGE', KEYS[1], offset, offset + limit - 1)
local replayed, skipped = 0, 0
for _, rid in ipairs(rids) do
  local k = base .. 'r:' .. rid
  local v = redis.pcall('HMGET', k, 's', 'p', 'W', 'o', 'h', 'a', 'w', 'b', 'f', 'E', 't', 'O', 'G')
  local s, prio, watched, open, hist, att, holder, started, finished, err = v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10]
  local runTask, origin, wf = v[11], v[12], v[13]
  if v['err'] or s ~= 'f' then
    -- A stale entry (the run expired or is unreadable): left for prune.
    skipped = skipped + 1
  elseif origin or (task ~= '' and runTask ~= task) then
    -- A run recorded from elsewhere (see record.lua), or one of another task.
    skipped = skipped + 1
  else
    replay(base, k, rid, qp .. rid, chan, ARGV[7], 'failed', prio, watched, open, hist, att, holder, started, finished, err)
    if wf then
      -- Retry from a step (docs/workflows.md): what its failure cancelled waits again.
      wfRewait(base, qp, rid, ARGV[7])
    end
    replayed = replayed + 1
  end
end
if replayed > 0 then
  wake(base)
end
return { replayed, skipped, #rids, rcall('EXISTS', base .. 'wo') }
