-- EXPERIMENT (bench/tools/wfq-proto.ts): runs under flow control by start-time fair queuing
-- (wfq.lua). Per group, its keys' states read with one HMGET and written with one HSET; each run
-- admitted into fA with tag max(V, F) + 1/weight while its key takes it at once (not waiting,
-- nothing listed before it, a + n below its limit), else appended to the key's fq| list; the
-- admitted runs of the group added with one ZADD.
if flowQueued then
  local V = tonumber(rcall('HGET', base .. 'fM', 'v'))
  if not V then
    V = 0
    rcall('HSET', base .. 'fM', 'v', '0')
  end
  local groups, groupOrder = {}, {}
  for _, gy in ipairs(flowOrder) do
    local e = flowKeys[gy]
    local ge = groups[e.g]
    if not ge then
      ge = { ys = {}, es = {} }
      groups[e.g] = ge
      groupOrder[#groupOrder + 1] = e.g
    end
    ge.ys[#ge.ys + 1] = e.y
    ge.es[#ge.es + 1] = e
    ge.last = e
  end
  for _, g in ipairs(groupOrder) do
    local ge = groups[g]
    local ksh = base .. 'fy|' .. g
    local packed = flowKeyMany(ksh, ge.ys)
    local writes, adds = {}, {}
    local fresh = false
    for i, e in ipairs(ge.es) do
      local st = wfqUnpack(packed[i])
      if not st then
        st = wfqNew()
        fresh = true
      end
      st.c, st.r, st.e = tonumber(e.n) or 0, e.u, tonumber(e.w) or 1
      local tail = '|' .. g .. '|' .. e.y
      local listed = {}
      local F, step = st.F, 1 / st.e
      for _, rid in ipairs(e.rids) do
        if st.w == '' and st.q == st.n and (st.c <= 0 or st.a + st.n < st.c) then
          if F < V then
            F = V
          end
          F = F + step
          adds[#adds + 1] = wfqNum(F)
          adds[#adds + 1] = rid .. tail
          if WFQ_CREDIT then
            st.a = st.a + 1
          else
            st.n = st.n + 1
            st.q = st.q + 1
          end
        else
          listed[#listed + 1] = rid
          st.q = st.q + 1
        end
      end
      st.F = F
      for j = 1, #listed, 1000 do
        rcall('RPUSH', base .. 'fq|' .. g .. '|' .. e.y, unpack(listed, j, math.min(j + 999, #listed)))
      end
      writes[#writes + 1] = e.y
      writes[#writes + 1] = wfqPack(st)
    end
    bulk('HSET', ksh, writes, 2000)
    bulk('ZADD', base .. 'fA', adds, 2000)
    if fresh then
      rcall('SADD', base .. 'fY', g)
    end
    local e = ge.last -- the group's limits: those of its latest run
    local gh = base .. 'fG|' .. g
    rcall('HSET', gh, 'c', e.m)
    if e.v ~= '' then
      rcall('HSET', gh, 'r', e.v)
    else
      rcall('HDEL', gh, 'r')
    end
  end
end

