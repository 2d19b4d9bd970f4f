-- wrk script for cache-MISS load: every request fills `__N__` in a path template with the next
-- number of a stride walk over [lo, lo + n), so no number repeats within n requests of a thread.
--
--   wrk ... -s bench/wrk/stride.lua URL -- TEMPLATE LO N STEP START
--
-- TEMPLATE is the path and query, e.g. "/odata/v4/Sales(__N__)". STEP must be coprime with N
-- (bench/odata_bench.py picks it) so the walk visits every number once before it repeats; START
-- differs per run so one run does not replay another's numbers. Headers come from wrk's -H.

local threads = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local template, lo, n, step, pos

function init(args)
  template = args[1]
  lo = tonumber(args[2])
  n = tonumber(args[3])
  step = tonumber(args[4])
  -- Threads start a third of the range apart (tid is nil without setup, e.g. in wrk -t1 tests).
  pos = (tonumber(args[5]) + (tid or 0) * math.floor(n / 3)) % n
end

function request()
  pos = (pos + step) % n
  local path = template:gsub("__N__", tostring(lo + pos))
  return wrk.format(nil, path)
end
