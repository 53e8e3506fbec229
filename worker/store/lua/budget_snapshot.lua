-- budget_snapshot.lua: the figures `creditq stats` shows for a provider, in one call.
-- uses: budget_clock.lua
--
-- KEYS[1] minute_prefix  the minute buckets' prefix
-- KEYS[2] pause_key      the fleet-wide pause
-- KEYS[3] total_key      429s ever
-- ARGV[1] clock          the caller's clock in microseconds ('' for the server's TIME)
-- ARGV[2] minutes        minutes in the hour summed (the buckets' span)
-- Returns {calls last 60 s, calls last hour, confirmed last hour, 429s last hour,
-- 429s total, pause remaining in microseconds}.

local minute_prefix = KEYS[1]
local pause_key = KEYS[2]
local total_key = KEYS[3]
local now = clock_now(ARGV[1])
local minutes = tonumber(ARGV[2])

local minute = minute_of(now)
local bucket = bucket_of(minute_prefix, minute)
local second = math.floor(now / 1000000) % 60
local last_minute = 0
for s = 0, 59 do
  local key = bucket
  if s > second then key = bucket_of(minute_prefix, minute - 1) end
  last_minute = last_minute + tonumber(redis.call('HGET', key, 's' .. s) or '0')
end
local calls, confirmed, limited = 0, 0, 0
for m = minute - minutes + 1, minute do
  local v = redis.call('HMGET', bucket_of(minute_prefix, m), 'calls', 'confirmed', 'rate_limited')
  calls = calls + tonumber(v[1] or '0')
  confirmed = confirmed + tonumber(v[2] or '0')
  limited = limited + tonumber(v[3] or '0')
end
local total = tonumber(redis.call('GET', total_key) or '0')
return {last_minute, calls, confirmed, limited, total, paused_for(pause_key, now)}
