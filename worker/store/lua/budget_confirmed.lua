-- budget_confirmed.lua: count grants confirmed, for calls per confirmed grant.
-- uses: budget_clock.lua
--
-- KEYS[1] minute_prefix  the minute buckets' prefix
-- ARGV[1] clock          the caller's clock in microseconds ('' for the server's TIME)
-- ARGV[2] bucket_ttl     seconds a minute bucket lives
-- ARGV[3] confirmed      how many were confirmed
-- Returns 0.

local minute_prefix = KEYS[1]
local now = clock_now(ARGV[1])
local bucket_ttl = ARGV[2]
local confirmed = ARGV[3]

local bucket = bucket_of(minute_prefix, minute_of(now))
redis.call('HINCRBY', bucket, 'confirmed', confirmed)
redis.call('EXPIRE', bucket, bucket_ttl)
return 0
