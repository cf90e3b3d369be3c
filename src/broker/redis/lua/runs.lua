--[[
  runs.lua: a run's hash and where it waits: creation (newRun, runExisting, runWrite, runCreate),
  placing (pushQueued, unplace), finishing and expiry (finish, cancelActive, cancelRun, newBatch,
  flushFinished, pushExpiry, dropRun, debForget), replay (see common.lua for how libraries are
  included).

  Keys of one queue share the hash tag `{<queue>}`; `base` is `<prefix>:{<queue>}:`.
    base..'r:'..rid    HASH  one run (rid: the 26-character ULID part of the run id `<queue>.<rid>`)
    base..'w:'..p      LIST  queued rids of priority p, FIFO
    base..'prios'      ZSET  priority levels with queued runs, score -p (highest first)
    base..'sched'      ZSET  scheduled rids by runAt
    base..'active'     ZSET  active rids by lease expiry, plus ACTIVE_PIN (common.lua)
    base..'succeeded', base..'failed', base..'cancelled'
                       ZSET  finished rids by the time in their id (listing newest first, prune,
                             counts); ties are ordered by rid, so the order is the run id order
    base..'exp:'..m    LIST  rids of finished runs whose expiresAt falls in minute m (epoch ms of
                             its start), in the order they finished: prune deletes them
    base..'exps'       ZSET  the minutes that have such a list, by m
    base..'startby'    ZSET  rids with a deadline to start (field X) that may still expire, by X:
                             written with the run, removed when it is leased, cancelled or
                             deleted (dropRun: purge, prune, retention 0), put back when it is
                             queued again with no attempt counted (promotion, release, back-off);
                             reserve sweeps those past (entries of runs no longer queued are
                             dropped then)
    base..'ik:'..task..':'..key  STRING  idempotency key -> rid, with PX ttl
    base..'db:'..task..':'..key  HASH  a debounce key: r its burst's rid, m the bound of its due time;
                             no TTL: kept while that run is scheduled and never started, however
                             long (a paused queue), and deleted when it stops being so (debForget:
                             promotion, cancel, deletion); a hash naming a run that is no longer
                             scheduled is replaced by the key's next enqueue (enqueue.lua)

  Run hash fields (short names to save memory; absent means the default):
    s state: q queued, s scheduled, a active, d succeeded, f failed, c cancelled
    t task, i input (JSON text), p priority (0), e enqueuedAt (the time in the run id),
    r runAt, a attempts (0), l leaseLosses (0), w worker, b startedAt of the latest attempt,
    f finishedAt, x expiresAt, k idempotency key, c traceparent, R result, E error, P progress,
    C retention once cancelled, ms (absent: the broker's default),
    O origin: where a run recorded finished from elsewhere ran (record.lua); absent for the broker's own,
    h history: one JSON array per recorded attempt, '\n'-separated:
      [attempt,"worker",startedAt,endedAt,"outcome"(,"error")]
    o open attempt: set when a run is leased. While set, the latest attempt is not in `h` but
      described by the run itself: a, w, b, and for a succeeded or failed run f and E. Settling
      as succeeded or failed thus writes no history (the hot path, and a small run keeps the
      compact listpack encoding). Every other end of an attempt (retry, lost, released,
      cancelled) appends it to `h` and clears `o`.
    W watched: set by watch(); transitions of a watched run PUBLISH its id on the events channel.
    X deadline to start (NewRun.startBy, epoch ms): reserve fails a never-started queued run past
      it (expired), found through base..'startby' or when reached; cleared by a replay
    B debounce key (NewRun.debounce's key; absent: none): names the hash base..'db:'..t..':'..B,
      deleted with the run's burst (debForget)
    g y n m u v K: flow control (flow.lua); G M D A: workflows (workflow.lua).
]]
-- Appends (or, at the head, prepends) a run to the list of its priority level; a run under flow
-- control (g, the field of its hash, given) to the list of its key instead.
local function pushQueued(base, rid, p, front, g)
  if g then
    local k = base .. 'r:' .. rid
    local v = rcall('HMGET', k, 'y', 'L')
    local y, limits = v[1], v[2]
    local n, m, u, rv, kw
    if limits then
      n, m, u, rv, kw = string.match(limits, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
    else
      -- A run written before layout 4: its limits in fields of their own.
      local o = rcall('HMGET', k, 'n', 'm', 'u', 'v', 'K')
      n, m, u, rv, kw = o[1], o[2], o[3], o[4], o[5]
    end
    flowPush(base, rid, g, y or '', n, m, u, rv, front, kw)
    return
  end
  local wk = base .. 'w:' .. p
  local n
  if front then
    n = rcall('LPUSH', wk, rid)
  else
    n = rcall('RPUSH', wk, rid)
  end
  if n == 1 then
    rcall('ZADD', base .. 'prios', -tonumber(p), p)
  end
end

-- Takes run rid out of where it waits, by its state s: waiting (w: `waiting` and its wait keys
-- wd:, wv:), queued (q: the list of its priority level `p`, the level dropped once empty; a queued
-- run under flow control is in its key's list instead: the caller's) or scheduled (s: `sched`).
-- What becomes of the run (finish) is the caller's. Used by cancelRun.
local function unplace(base, rid, s, p)
  if s == 'w' then
    rcall('ZREM', base .. 'waiting', rid)
    rcall('DEL', base .. 'wd:' .. rid, base .. 'wv:' .. rid)
  elseif s == 'q' then
    p = p or '0'
    local wk = base .. 'w:' .. p
    rcall('LREM', wk, -1, rid)
    if rcall('LLEN', wk) == 0 then
      rcall('ZREM', base .. 'prios', p)
    end
  elseif s == 's' then
    rcall('ZREM', base .. 'sched', rid)
  end
end

-- A new run as the creating scripts (enqueue, schedfire, wfcreate, and wfSpawn for the runs a
-- spawn creates) take it, the one place its fields are read and written: 14 values from a[j] (`a`:
-- ARGV unless given, as a spawn's payload gives its runs; pushRunArgs in run-args.ts): rid, task,
-- input, priority, runAt, enqueuedAt ('' when it is the time in the run id), idempotency key (''
-- for none), its ttl ms, traceparent ('' for none), retention once cancelled ('' for the broker's
-- default: see cancel.lua; a workflow's runs always give it), flow spec ('' for none, else
-- '<group>|<key limit>|<group limit>|<key rate>|<group rate>|<key weight>|<key>': limits 0 none,
-- rates '<interval>,<burst>' or '', the key last as it may hold '|'), schedule mark ('' for none:
-- see ScheduleMark in core/run.ts), deadline to start ('' for none; stored as X), debounce (''
-- for none, else '<maxAt or empty>|<key>': enqueue.lua applies it). A workflow's run has 2 more
-- after them (pushWorkflowRunArgs): inputFrom and dependencies, read by its caller (wfAddRun).
-- Fills table `r` (a script's one table, reused for each run: no table made per run) and returns it;
-- r.k is the run's hash key in queue `base`. The flow fields y n m u v are set only when r.g ~= ''
-- (r.w, the key's weight, is '1' without one).
local function newRun(base, j, r, a)
  a = a or ARGV
  local rid = a[j]
  r.rid, r.k, r.task, r.input, r.p, r.runAt = rid, base .. 'r:' .. rid, a[j + 1], a[j + 2], a[j + 3], a[j + 4]
  r.e, r.ik, r.ittl, r.tp, r.cret = a[j + 5], a[j + 6], a[j + 7], a[j + 8], a[j + 9]
  r.g, r.w, r.mark, r.startBy, r.deb = '', '1', a[j + 11], a[j + 12], a[j + 13]
  local spec = a[j + 10]
  if spec ~= '' then
    local parts, from = {}, 1
    for _ = 1, 6 do
      local cut = string.find(spec, '|', from, true)
      parts[#parts + 1] = string.sub(spec, from, cut - 1)
      from = cut + 1
    end
    r.g, r.n, r.m, r.u, r.v, r.w = parts[1], parts[2], parts[3], parts[4], parts[5], parts[6]
    r.y = string.sub(spec, from)
    -- The limits as the run's field L stores them: '<n>|<m>|<u>|<v>|<w>'.
    r.L = string.sub(spec, #parts[1] + 2, from - 2)
  end
  return r
end

-- The run that stands for new run r, if one does: r's own id when it exists, else the run its
-- idempotency key names. Returns that rid and its state code; nil when r is to be created (its
-- key, if any, then names r). A key never stands for a run that no longer exists: one left naming
-- a deleted run (by a version that kept keys past their runs, or by hand) is taken by r.
local function runExisting(base, r)
  local existing
  if rcall('EXISTS', r.k) == 1 then
    existing = r.rid
  elseif r.ik ~= '' then
    local ikk = base .. 'ik:' .. r.task .. ':' .. r.ik
    existing = rcall('GET', ikk)
    if existing and rcall('EXISTS', base .. 'r:' .. existing) == 0 then
      existing = nil
    end
    if not existing then
      rcall('SET', ikk, r.rid, 'PX', r.ittl)
    end
  end
  if not existing then
    return nil
  end
  local s = redis.pcall('HGET', base .. 'r:' .. existing, 's')
  if type(s) ~= 'string' then
    s = 'q'
  end
  return existing, s
end

-- Writes the hash of new run r in state `state` (q, s, or w: waiting); `more`: further field,
-- value pairs to store (nil: none). Only the hash: placing it (a list, sched, a flow key) is the
-- caller's.
local function runWrite(r, state, more)
  local f = { 's', state, 't', r.task, 'i', r.input }
  if r.p ~= '0' then
    f[#f + 1] = 'p'
    f[#f + 1] = r.p
  end
  if r.e ~= '' then
    f[#f + 1] = 'e'
    f[#f + 1] = r.e
  end
  if state == 's' then
    f[#f + 1] = 'r'
    f[#f + 1] = r.runAt
  end
  if r.ik ~= '' then
    f[#f + 1] = 'k'
    f[#f + 1] = r.ik
  end
  if r.tp ~= '' then
    f[#f + 1] = 'c'
    f[#f + 1] = r.tp
  end
  if r.cret ~= '' then
    f[#f + 1] = 'C'
    f[#f + 1] = r.cret
  end
  if r.g ~= '' then
    f[#f + 1] = 'g'
    f[#f + 1] = r.g
    f[#f + 1] = 'y'
    f[#f + 1] = r.y
    f[#f + 1] = 'L'
    f[#f + 1] = r.L
  end
  if r.mark ~= '' then
    f[#f + 1] = 'S'
    f[#f + 1] = r.mark
  end
  if r.deb ~= '' then
    f[#f + 1] = 'B'
    f[#f + 1] = string.sub(r.deb, string.find(r.deb, '|', 1, true) + 1)
  end
  if r.startBy ~= '' then
    f[#f + 1] = 'X'
    f[#f + 1] = r.startBy
    -- Indexed by its deadline (reserve fails it then, wherever it is in its list): the base is
    -- r.k without 'r:' and the rid.
    rcall('ZADD', string.sub(r.k, 1, -(#r.rid + 3)) .. 'startby', r.startBy, r.rid)
  end
  if more then
    for i = 1, #more do
      f[#f + 1] = more[i]
    end
  end
  rcall('HSET', r.k, unpack(f))
end

-- Creates new run r (read by newRun) one at a time, as schedfire and wfAddRun do (enqueue places a
-- batch its own way): its hash written (runWrite, with `more` as there), then scheduled in
-- base..'sched' when its runAt is after `now`, else queued (pushQueued: under flow control, to its
-- key's list). Returns its state code, q or s.
local function runCreate(base, r, now, more)
  local state = 'q'
  if tonumber(r.runAt) > now then
    state = 's'
    rcall('ZADD', base .. 'sched', r.runAt, r.rid)
  end
  runWrite(r, state, more)
  if state == 'q' then
    pushQueued(base, r.rid, r.p, false, r.g ~= '' and r.g or nil)
  end
  return state
end

-- The debounce hash of run rid (its task, and its debounce key, field B: nil for none) is deleted
-- while it still names the run: the run is leaving `scheduled` (promoted, cancelled, deleted), so
-- its burst is over.
local function debForget(base, rid, task, key)
  if key and task then
    local dbk = base .. 'db:' .. task .. ':' .. key
    if rcall('HGET', dbk, 'r') == rid then
      rcall('DEL', dbk)
    end
  end
end

-- Deletes a run's hash `k` and what names it: its idempotency key (fields t and k) and its
-- debounce hash (B) while they still name it, so that neither stands for a run that no longer
-- exists, and its entry in the deadline index `startby` (X) (purge, prune, retention 0 alike).
local function dropRun(base, k, rid)
  local v = redis.pcall('HMGET', k, 't', 'k', 'G', 'X', 'B')
  local task, key, wf, startBy, deb = v[1], v[2], v[3], v[4], v[5]
  if v['err'] or startBy then
    rcall('ZREM', base .. 'startby', rid)
  end
  if not v['err'] and task and key then
    local ikk = base .. 'ik:' .. task .. ':' .. key
    if redis.pcall('GET', ikk) == rid then
      rcall('DEL', ikk)
    end
  end
  if not v['err'] then
    debForget(base, rid, task, deb)
  end
  if not v['err'] and wf then
    rcall('DEL', base .. 'wd:' .. rid, base .. 'wv:' .. rid, base .. 'we:' .. rid, base .. 'wr:' .. rid)
    -- The workflow's index goes with its last run (wf ids are `<queue>.<ulid>`: the ulid names it).
    local wk = base .. 'wf:' .. string.sub(wf, -26)
    if redis.pcall('HINCRBY', wk, 'n', -1) <= 0 then
      rcall('DEL', wk)
    end
  end
  rcall('DEL', k)
end

-- Expiry lists group finished runs by the minute their retention ends (see the layout above).
local EXPIRY_MINUTE = 60000

-- Appends rids to the expiry list of minute m, registering the minute when the list is new.
local function pushExpiry(base, m, rids)
  local mS = fmt('%d', m)
  local n = #rids
  for i = 1, n, 1000 do
    local j = i + 999
    if j > n then
      j = n
    end
    if rcall('RPUSH', base .. 'exp:' .. mS, unpack(rids, i, j)) == j - i + 1 then
      rcall('ZADD', base .. 'exps', mS, mS)
    end
  end
end

-- Moves a run to a finished state (code d, f or c; zset succeeded, failed or cancelled), with
-- the extra fields given. It is indexed by the time in its id (listing, prune, counts), and listed
-- for deletion by prune in the minute its retention ends (a list push, where a PEXPIRE per run
-- cost Redis about 10% of its time per run and grew the expiry table every key lookup consults).
-- Retention 0: the run is deleted at once (with its idempotency key) and nothing is recorded.
-- With `batch` (from newBatch), the index and expiry entries are collected for flushFinished, which
-- writes each with one command per call instead of one per run.
local function finish(base, k, rid, code, zset, now, nowS, ret, batch, ...)
  if ret <= 0 then
    dropRun(base, k, rid)
    return
  end
  local x = now + ret
  rcall('HSET', k, 's', code, 'f', nowS, 'x', fmt('%d', x), ...)
  local m = x - x % EXPIRY_MINUTE
  if batch then
    local list = batch.index[zset]
    if not list then
      list = {}
      batch.index[zset] = list
    end
    list[#list + 1] = fmt('%d', ridTime(rid))
    list[#list + 1] = rid
    local rids = batch.expiry[m]
    if not rids then
      rids = {}
      batch.expiry[m] = rids
    end
    rids[#rids + 1] = rid
  else
    rcall('ZADD', base .. zset, fmt('%d', ridTime(rid)), rid)
    pushExpiry(base, m, { rid })
  end
end

-- Cancels an active run (cancelRun; `hist`, `att`, `holder`, `started` its fields
-- h a w b as read by the caller): out of `active`, its open attempt appended to the history as
-- `cancelled`, finished as cancelled (kept `ret` ms), its id (`id`, the whole run id) published on
-- the `cancels` channel so that its worker stops it. The caller frees its flow slot first.
local function cancelActive(base, k, rid, id, cancels, now, nowS, ret, hist, att, holder, started)
  rcall('ZREM', base .. 'active', rid)
  local h = appendHistory(hist, att, holder, started, nowS, 'cancelled')
  rcall('HDEL', k, 'o')
  finish(base, k, rid, 'c', 'cancelled', now, nowS, ret, nil, 'h', h)
  rcall('PUBLISH', cancels, id)
end

-- Cancels run rid (hash k, whole run id `id`) in state s, waiting, queued, scheduled or active
-- (cancel.lua, wfcancel.lua; `prio`, `g`, `y`, `hist`, `att`, `holder`, `started` its fields
-- p g y h a w b as read by the caller): a queued run under flow control leaves its key's list
-- (flowUnqueue: the key may leave the rings), any other waiting, queued or scheduled run where it
-- waits (unplace); either is then finished as cancelled (kept `ret` ms). An active run under flow
-- control frees its slot (flowFree), then is cancelled as cancelActive does (its worker told on
-- the `cancels` channel). Returns whether that freed slot made a key or group ready: the caller
-- then wakes idle workers. Notifying watchers and resolving a workflow's edges are the caller's.
local function cancelRun(base, k, rid, id, cancels, s, prio, g, y, now, nowS, ret, hist, att, holder, started)
  if s == 'a' then
    local freed = g and flowFree(base, k, g) or false
    cancelActive(base, k, rid, id, cancels, now, nowS, ret, hist, att, holder, started)
    return freed
  end
  if s == 'q' and g then
    flowUnqueue(base, rid, g, y or '')
  else
    unplace(base, rid, s, prio)
  end
  finish(base, k, rid, 'c', 'cancelled', now, nowS, ret, nil)
  return false
end

local function newBatch()
  return { index = {}, expiry = {} }
end

local function flushFinished(base, batch)
  for zset, list in pairs(batch.index) do
    bulk('ZADD', base .. zset, list, 2000)
  end
  for m, rids in pairs(batch.expiry) do
    pushExpiry(base, m, rids)
  end
end

-- attempts and leaseLosses reset, no longer expiring (prune skips its entry in an expiry list: it
-- has no expiresAt), due from `nowS` (its wait is counted from the replay); the failed attempt,
-- when still open, is appended to the history first. The caller leaves the wake-up token.
local function replay(base, k, rid, id, chan, nowS, zset, prio, watched, open, hist, att, holder, started, finished, err)
  if open then
    rcall('HSET', k, 'h', appendHistory(hist, att, holder, started, finished or '0', 'failed', err or nil))
  end
  rcall('HSET', k, 's', 'q', 'a', 0, 'l', 0, 'r', nowS)
  rcall('HDEL', k, 'f', 'x', 'E', 'P', 'o', 'X')
  rcall('PERSIST', k) -- a run finished by a version that gave finished runs a TTL
  rcall('ZREM', base .. zset, rid)
  pushQueued(base, rid, prio or '0', false, rcall('HGET', k, 'g'))
  notify(chan, id, '', watched)
end

