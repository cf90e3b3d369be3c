-- wrk script: POST /users/ with a unique username and email per request, and a JSON summary line.
-- BENCH_PREFIX (env) makes usernames unique across rounds.
local prefix = os.getenv("BENCH_PREFIX") or "u"
local threads = {}
local counter = 0
local tid = 0

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  tid = wrk.thread:get("tid") or 1
end

request = function()
  counter = counter + 1
  local name = prefix .. "t" .. tid .. "n" .. counter
  return wrk.format("POST", "/users/", { ["Content-Type"] = "application/json" },
    '{"username":"' .. name .. '","email":"' .. name .. '@example.com"}')
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"status_errors":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
