--[[
  wfrelay: applies relay entries (docs/workflows.md, "Redis Cluster") to runs of this queue: each
  entry was written to the outbox of another queue by a script that ended a run of a workflow
  whose dependent is here (see wfRelayOut in workflow.lua for the entry). Applied as within a queue:
    d, f  the end of the dependency (succeeded with its result; failed or cancelled) applied to
          the waiting dependent (wfEdge: SREM, made ready by the removal that empties its set,
          cancelled or skipped per edge policy), and what that cancels or skips in turn (wfCascade,
          which writes entries to this queue's outbox for dependents in yet another queue);
    r     the dependency was retried: the dependent, if its failure cancelled it, waits again
          (wfRewaitFrom);
    g     the release of a root of a workflow over several queues (wfRelease).
  An entry is applied only if this dependent has not applied it yet (`wr:<rid>`, a SET of
  dependency '|' token): an entry applied twice changes nothing. An entry for a run that
  no longer exists is dropped. The caller then removes the entries from the outbox they came from.
  Leaves a wake-up token when a run was queued.

  KEYS[1] this queue's relay outbox LIST (entries for other queues are added to it)

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] now
  ARGV[3] events channel (watched runs)
  ARGV[4] run id prefix `<queue>.`
  ARGV[5...] the entries, as stored in the outbox they come from

  Returns { applied (entries applied now, not before), relay (1 when KEYS[1] holds entries) }.
]]
--!keys 1
--!include common.lua: rcall, wake
--!include workflow.lua: wfEdge, wfCascade, wfRewaitFrom, wfRelease
local base, nowS, chan, qp = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = tonumber(nowS)
local woke = false
local applied = 0
for j = 5, #ARGV do
  local token, dep, src, op, pol, res = string.match(ARGV[j], '^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$')
  local rid = dep and string.sub(dep, -26)
  if rid and string.sub(dep, 1, #dep - 26) == qp and rcall('EXISTS', base .. 'r:' .. rid) == 1 then
    if rcall('SADD', base .. 'wr:' .. rid, src .. '|' .. token) == 1 then
      applied = applied + 1
      if op == 'd' or op == 'f' then
        local todo, finished = {}, {}
        if wfEdge(base, qp, chan, now, nowS, rid, src, src, op == 'd', res, pol, todo, finished) then
          woke = true
        end
        -- Also finishes what wfEdge ended (once the cascade from it is done).
        if wfCascade(base, qp, chan, now, nowS, todo, finished) then
          woke = true
        end
      elseif op == 'r' then
        wfRewaitFrom(base, qp, rid, src, nowS)
      elseif op == 'g' then
        if wfRelease(base, qp, chan, rid, now, nowS) then
          woke = true
        end
      end
    end
  end
end
if woke then
  wake(base)
end
return { applied, rcall('EXISTS', KEYS[1]) }
