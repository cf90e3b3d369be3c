--[[
  record: records runs of one queue that ran elsewhere (a Celery task served by an Errand worker)
  as finished, so that listings, counts, stats and the dashboard show them.

  A run whose hash exists already, or whose idempotency key (same task) names a run that exists,
  is not recorded and the stored run is left unchanged. A recorded run is written as a run that
  was leased and settled on its last attempt would be (fields a, w, b and `o`: the open attempt,
  see runs.lua), indexed in its finished set and listed for prune in the minute its retention
  ends (`finish`). Retention 0 or less: nothing is stored, the stats still count it.
  Counts, in this minute's stats: enqueued, succeeded or failed, the wait (startedAt minus the
  time in the run id) and the run time (now minus startedAt).

  KEYS[1] exps ZSET (the queue's expiry minutes: names the queue's slot)

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] now (epoch ms)
  then 12 per run:
    rid, task, input, outcome (d succeeded, f failed), payload (result JSON, '' for null; or
    error JSON), attempts, worker, startedAt, retentionMs, idempotency key ('' for none),
    idempotency ttl ms, origin (field O: `retry` and `retryfailed` leave such a run)

  Returns one integer per run: 1 recorded, 0 not (id or key held).
]]
--!keys 1
--!include common.lua: rcall, ridTime
--!include stats.lua: statAdd, statLatency, statFlush
--!include runs.lua: finish, newBatch, flushFinished
local base = ARGV[1]
local nowS = ARGV[2]
local now = tonumber(nowS)
local out = {}
local acc = {}
local batch = newBatch()

for j = 3, #ARGV, 12 do
  local rid, task, input, code, payload = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4]
  local att, worker, startedS, retS, ik, ittl = ARGV[j + 5], ARGV[j + 6], ARGV[j + 7], ARGV[j + 8], ARGV[j + 9], ARGV[j + 10]
  local origin = ARGV[j + 11]
  local k = base .. 'r:' .. rid
  local held = rcall('EXISTS', k) == 1
  local ikk
  if not held and ik ~= '' then
    ikk = base .. 'ik:' .. task .. ':' .. ik
    local other = rcall('GET', ikk)
    -- A key never stands for a run that no longer exists (see enqueue.lua).
    held = other and rcall('EXISTS', base .. 'r:' .. other) == 1
  end
  if held then
    out[#out + 1] = 0
  else
    local started = tonumber(startedS)
    local ret = tonumber(retS)
    statAdd(acc, 'e', 1)
    statAdd(acc, code, 1)
    statLatency(acc, 'w', started - ridTime(rid))
    statLatency(acc, 'u', now - started)
    if ret > 0 then
      rcall('HSET', k, 't', task, 'i', input, 'a', att, 'w', worker, 'b', startedS, 'o', '1', 'O', origin)
      if ikk then
        rcall('SET', ikk, rid, 'PX', ittl)
        rcall('HSET', k, 'k', ik)
      end
      if code == 'd' then
        if payload ~= '' then
          finish(base, k, rid, 'd', 'succeeded', now, nowS, ret, batch, 'R', payload)
        else
          finish(base, k, rid, 'd', 'succeeded', now, nowS, ret, batch)
        end
      else
        finish(base, k, rid, 'f', 'failed', now, nowS, ret, batch, 'E', payload)
      end
    end
    out[#out + 1] = 1
  end
end
flushFinished(base, batch)
statFlush(base, now, acc)
return out
