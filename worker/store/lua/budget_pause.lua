-- budget_pause.lua: pause a provider for the whole fleet (a longer pause in force is kept),
-- or count a 429 and pause with a backoff that doubles for each further 429 in a row.
-- uses: budget_clock.lua
--
-- KEYS[1] minute_prefix  the minute buckets' prefix
-- KEYS[2] pause_key      the fleet-wide pause
-- KEYS[3] strikes_key    429s in a row
-- KEYS[4] total_key      429s ever
-- ARGV[1] clock          the caller's clock in microseconds ('' for the server's TIME)
-- ARGV[2] bucket_ttl     seconds a minute bucket lives
-- ARGV[3] mode           'set': pause `length`; '429': count it and pause
-- ARGV[4] length         microseconds ('429': the Retry-After, or '' for the backoff)
-- ARGV[5] default_us     the first backoff pause, microseconds
-- ARGV[6] max_us         the longest backoff pause, microseconds
-- ARGV[7] grace          seconds after the pause before a 429 starts a new streak
-- Returns {the pause applied, the pause remaining}, microseconds.

local minute_prefix = KEYS[1]
local pause_key = KEYS[2]
local strikes_key = KEYS[3]
local total_key = KEYS[4]
local now = clock_now(ARGV[1])
local bucket_ttl = ARGV[2]
local rate_limited = ARGV[3] == '429'
local length = ARGV[4]
local default_us = tonumber(ARGV[5])
local max_us = tonumber(ARGV[6])
local grace = tonumber(ARGV[7])

local bucket = bucket_of(minute_prefix, minute_of(now))
if rate_limited then
  local strikes = redis.call('INCR', strikes_key)
  redis.call('INCR', total_key)
  redis.call('HINCRBY', bucket, 'rate_limited', 1)
  redis.call('EXPIRE', bucket, bucket_ttl)
  if length ~= '' then length = tonumber(length) else
    length = math.min(default_us * 2 ^ math.min(strikes - 1, 32), max_us) end
else
  length = tonumber(length)
end
length = math.max(0, math.floor(length))
local remaining = paused_for(pause_key, now)
if length > remaining then
  redis.call('SET', pause_key, string.format('%d', now + length),
    'PX', math.ceil(length / 1000) + 1000)
  remaining = length
end
if rate_limited then
  redis.call('EXPIRE', strikes_key, math.ceil(remaining / 1000000) + grace)
end
return {length, remaining}
