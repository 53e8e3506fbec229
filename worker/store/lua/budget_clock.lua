-- budget_clock.lua: the budget's clock and what hangs off it: the minute buckets that count
-- calls, and the fleet-wide pause. A helper, composed into the budget's scripts.
--
-- Times are microseconds. The clock is the server's TIME, so every worker reads one clock;
-- unit tests pass their own (`clock`, '' for the server's).

-- Now, in microseconds: `clock` if given, else the server's TIME.
local function clock_now(clock)
  if clock ~= '' then return tonumber(clock) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- The minute (epoch seconds // 60) `at` falls in.
local function minute_of(at)
  return math.floor(at / 60000000)
end

-- The counter hash of one minute: the minute prefix, then the minute's number.
local function bucket_of(minute_prefix, minute)
  return minute_prefix .. string.format('%d', minute)
end

-- Microseconds left of the pause in force at `now`, 0 when none is.
local function paused_for(pause_key, now)
  local until_us = tonumber(redis.call('GET', pause_key) or '0')
  if until_us > now then return until_us - now end
  return 0
end
