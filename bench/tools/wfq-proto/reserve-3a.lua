-- 3a. EXPERIMENT (bench/tools/wfq-proto.ts): runs under flow control by start-time fair queuing
-- (wfq.lua), in place of the product's rings. The admitted runs with the lowest tags are popped
-- (ZPOPMIN, as many as the call has slots), their keys' states read with one HMGET per group (a
-- key met again in the call is read once), each run checked against its key's limit and rate:
-- leased, or parked at the tail of its key's fp| list (rate: the key waits in fW, and its runs
-- popped later are parked too until the wait ends). States written with one HSET per group, the
-- group's active count with one HINCRBY, V with one HSET of fM. Keys that waited for their rate
-- and may start now are woken first (wfqWake).
local flowRing = base .. 'fA'
-- The tool's ablation `wfq-order` sets this: runs leased in tag order with no key state read or
-- written (no limits checked: the cost of the fair order alone, not a correct flow control).
local WFQ_ORDER_ONLY = false
local fm = rcall('HMGET', base .. 'fM', 'v', 'w')
local vS, flowWS = fm[1], fm[2]
local flowOn = vS ~= false or flowWS ~= false
local waitAt = tonumber(flowWS) -- nil: nothing waits
local waitAt0 = waitAt
local V = tonumber(vS) or 0
local V0 = V
if waitAt and waitAt <= now then
  local full
  full, waitAt = wfqWake(base, now, limit, V)
  if full then
    more = true
  end
end
local function waits(at)
  if not waitAt or at < waitAt then
    waitAt = at
  end
end
local flowBack = false
if max > 0 and flowOn then
  -- Keys met in this call, by slot: their group, key and state fields (a q c n as numbers).
  local slot = {}
  local G, Y, A, Q, C, T, R, W, E, Z, F, N = {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}
  local startedBy = {} -- group -> runs leased
  local passes = 0
  while n < max and passes < 4 do
    passes = passes + 1
    local got = rcall('ZPOPMIN', flowRing, max - n)
    if #got == 0 then
      break
    end
    if WFQ_ORDER_ONLY then
      for i = 1, #got, 2 do
        V = tonumber(got[i + 1])
        lease(string.sub(got[i], 1, 26), nil)
      end
      got = {}
    end
    local first = #G
    for i = 1, #got, 2 do
      local gy = string.sub(got[i], 28)
      if not slot[gy] then
        local j = #G + 1
        local cut = string.find(gy, '|', 1, true)
        slot[gy] = j
        G[j], Y[j] = string.sub(gy, 1, cut - 1), string.sub(gy, cut + 1)
      end
    end
    local byG, gOrder = {}, {}
    for j = first + 1, #G do
      local l = byG[G[j]]
      if not l then
        l = {}
        byG[G[j]] = l
        gOrder[#gOrder + 1] = G[j]
      end
      l[#l + 1] = j
    end
    for _, g in ipairs(gOrder) do
      local js = byG[g]
      local ys = {}
      for i, j in ipairs(js) do
        ys[i] = Y[j]
      end
      local packed = flowKeyMany(base .. 'fy|' .. g, ys)
      for i, j in ipairs(js) do
        local s = packed[i]
        local a, q, c0, t, r, w, e, z, f, nn
        if s then
          a, q, c0, t, r, w, e, z, f, nn = string.match(s, WFQ_STATE)
        end
        if not a then
          -- A run admitted without a state (lost, or written by hand): served as unlimited.
          a, q, c0, t, r, w, e, z, f, nn = '0', '1', '0', '', '', '', '', '', '0', '1'
          rcall('SADD', base .. 'fY', g)
        end
        A[j], Q[j], C[j], T[j], R[j], W[j], E[j], Z[j], F[j], N[j] =
          tonumber(a) or 0, tonumber(q) or 0, tonumber(c0) or 0, t, r, w, e, z, f, tonumber(nn) or 0
      end
    end
    for i = 1, #got, 2 do
      local m = got[i]
      local rid = string.sub(m, 1, 26)
      local j = slot[string.sub(m, 28)]
      V = tonumber(got[i + 1])
      N[j] = N[j] - 1
      local park = W[j] ~= '' or (C[j] > 0 and A[j] >= C[j])
      local kval = nil
      if not park and R[j] ~= '' then
        local tat = tonumber(T[j])
        if not tat then
          tat = tonumber(rcall('GET', base .. 'ft|' .. G[j] .. '|' .. Y[j]))
        end
        local ok, v = flowGcra(R[j], tat, now)
        if ok then
          kval = v
        else
          park, W[j] = true, '1'
          rcall('ZADD', base .. 'fW', v, G[j] .. '|' .. Y[j])
          waits(v)
        end
      end
      if park then
        rcall('RPUSH', base .. 'fp|' .. G[j] .. '|' .. Y[j], rid)
      else
        Q[j] = Q[j] - 1
        if lease(rid, nil) then
          A[j] = A[j] + 1
          startedBy[G[j]] = (startedBy[G[j]] or 0) + 1
          if kval then
            T[j] = fmt('%.17g', kval)
          end
        end
      end
    end
  end
  -- States written: one HSET (and HDEL) per group.
  local wr, dl, gOrder = {}, {}, {}
  for j = 1, #G do
    local g = G[j]
    local w = wr[g]
    if not w then
      w = {}
      wr[g], dl[g] = w, {}
      gOrder[#gOrder + 1] = g
    end
    if Q[j] <= 0 and A[j] <= 0 then
      local d = dl[g]
      d[#d + 1] = Y[j]
      flowKeepTat(base, g, Y[j], tonumber(T[j]))
    else
      w[#w + 1] = Y[j]
      w[#w + 1] = fmt('%d;%d;%d;', A[j], Q[j], C[j]) .. T[j] .. ';' .. R[j] .. ';' .. W[j] .. ';' .. E[j] .. ';' .. Z[j] .. ';'
        .. F[j] .. ';' .. fmt('%d', N[j])
    end
  end
  for _, g in ipairs(gOrder) do
    bulk('HSET', base .. 'fy|' .. g, wr[g], 2000)
    bulk('HDEL', base .. 'fy|' .. g, dl[g], 1000)
  end
  for g, cnt in pairs(startedBy) do
    rcall('HINCRBY', base .. 'fG|' .. g, 'a', fmt('%d', cnt))
  end
end
-- fM written once, and only when something changed.
if V ~= V0 or waitAt ~= waitAt0 then
  local f = {}
  if V ~= V0 then
    f[#f + 1] = 'v'
    f[#f + 1] = wfqNum(V)
  end
  if waitAt ~= waitAt0 then
    f[#f + 1] = 'w'
    f[#f + 1] = waitAt and fmt('%.17g', waitAt) or ''
  end
  rcall('HSET', base .. 'fM', unpack(f))
end

