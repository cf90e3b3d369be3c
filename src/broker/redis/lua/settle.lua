--[[
  settle: records the outcome of a batch of leased runs of one queue. Each item is applied only
  if the run is active with the same worker and attempt; otherwise it is `lost` and nothing is
  written.
    succeeded: result stored (none when null), finished (see `finish` in runs.lua);
    failed:    error stored, finished;
    retry:     error stored, the attempt appended to the history, scheduled at runAt (queued at
               once when runAt <= now);
    spawned:   runs created and the run waiting for some of them (wfSpawn in spawn.lua).
    backoff:   the attempt appended to the history as `backoff` and not counted; the run queued at
               the head of its key, its key (or group) waiting until the time given; a run
               without flow control scheduled at that time (docs/flow-control.md).
  A succeeded or failed attempt stays the run's open attempt (see `o` in runs.lua): no history
  is written on this, the hot path. The work is done by `settleItems` (outcomes.lua), which reserve
  also applies to the outcomes a worker sends along with its next reservation.
  Counts, for this minute's stats, each outcome and the run time of each attempt.
  Leaves a wake-up token when a run was queued, or scheduled before every other scheduled run.

  KEYS[1] active ZSET
  KEYS[2] sched  ZSET

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] worker id
  ARGV[3] now
  ARGV[4] events channel (watched runs)
  ARGV[5] run id prefix `<queue>.`
  then 5 per item: rid, attempt, outcome (s succeeded, f failed, r retry, w spawned, b backoff),
    payload (result JSON, '' for null; or error JSON; or the spawn, see wfSpawn; for b the scope:
    k key, g group), retentionMs (s, f, w) or runAt (r) or until (b)

  Returns one integer per item: 1 applied, 0 lost; then 1 when this queue's relay outbox holds
  entries (a workflow over several queues: the caller drains it, see wfRelayOut in workflow.lua), else 0.
]]
--!keys 2
--!include common.lua: rcall, wake
--!include stats.lua: statFlush
--!include outcomes.lua: settleItems
local nowS = ARGV[3]
local now = tonumber(nowS)
local out = {}
local acc = {} -- this minute's counters
local wakeUp = settleItems(ARGV[1], ARGV[2], now, nowS, ARGV[4], ARGV[5], KEYS[1], KEYS[2], 6, #ARGV, out, acc)
statFlush(ARGV[1], now, acc)
if wakeUp then
  wake(ARGV[1])
end
out[#out + 1] = rcall('EXISTS', ARGV[1] .. 'wo')
return out
