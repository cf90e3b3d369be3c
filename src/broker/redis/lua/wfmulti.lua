--[[
  wfmulti: the steps, on the queue of its id, that frame the creation of a workflow in several
  calls: one over several queues, or one too large for one call (docs/workflows.md, "Redis
  Cluster" and "Limits"; workflows.ts makes the calls):
    b (begin)  before any run is created: writes the workflow HASH as pending (P), with the other
               queues (q) and every run id (a), its runs of this queue (r) and their count (n)
               empty (each wfcreate call adds its own), and lists it in `wp` (pending workflows by
               begin time), so that a crash part way leaves a record that a resent createWorkflow
               completes, cancelWorkflow finds, and the prune sweep completes or undoes;
    g (release) once every queue's runs exist (wfcreate.lua, mode m, each root waiting for '!'):
               releases some of the roots as c does, P left set (a large workflow's roots are
               released in several calls, c last: a crash between them leaves it pending, every
               run made, and a root released again is released once);
    c (commit) clears P (and its `wp` entry) and releases the roots given: those of this queue at
               once (wfRelease), those of other queues by relay entries (op g) in this queue's
               outbox, in the same script, so that no root runs before its workflow is complete
               and none is left held.

  KEYS[1] the workflow HASH (base..'wf:'..<ulid of the workflow id>)

  ARGV[1] key base `<prefix>:{<queue>}:`
  ARGV[2] now
  ARGV[3] op: b or c
  b: ARGV[4] the other queues (comma-separated), ARGV[5] every run id (comma-separated, in order)
  g, c: ARGV[4] events channel (watched runs), ARGV[5] run id prefix `<queue>.`, ARGV[6...] the
     roots: a rid of this queue, or the run id of a root in another queue

  Returns, b: { 0 } begun, { 1 } pending already (a creation to resume), { 2 } complete already;
  g: { 1, relay }; c: { committed (1 now, 0 already), relay } (relay: 1 when this queue's relay
  outbox holds entries).
]]
--!keys 1
--!include common.lua: rcall, wake
--!include workflow.lua: wfRelayOut, wfRelease
local base, nowS, op = ARGV[1], ARGV[2], ARGV[3]
local now = tonumber(nowS)
if op == 'b' then
  if rcall('HEXISTS', KEYS[1], 'P') == 1 then
    return { 1 }
  end
  if rcall('EXISTS', KEYS[1]) == 1 then
    return { 2 }
  end
  rcall('HSET', KEYS[1], 't', nowS, 'r', '', 'n', 0, 'q', ARGV[4], 'a', ARGV[5], 'P', '1')
  rcall('ZADD', base .. 'wp', nowS, string.sub(KEYS[1], #base + 4))
  return { 0 }
end
if op == 'c' then
  rcall('ZREM', base .. 'wp', string.sub(KEYS[1], #base + 4))
  if rcall('HDEL', KEYS[1], 'P') == 0 then
    return { 0, rcall('EXISTS', base .. 'wo') }
  end
end
local chan, qp = ARGV[4], ARGV[5]
local woke = false
for j = 6, #ARGV do
  local root = ARGV[j]
  if #root == 26 then
    if wfRelease(base, qp, chan, root, now, nowS) then
      woke = true
    end
  else
    wfRelayOut(base, root, '!', 'g', '', '', nowS)
  end
end
if woke then
  wake(base)
end
return { 1, rcall('EXISTS', base .. 'wo') }
