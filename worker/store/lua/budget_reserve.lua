-- budget_reserve.lua: reserve the next free slot, even if it is in the future: the slot is
-- this caller's, and nobody else's, at the time returned. Refused (nothing changed) when
-- the provider is paused or the slot is further away than the caller will wait.
-- uses: budget_clock.lua
--
-- KEYS[1] minute_prefix  the minute buckets' prefix
-- KEYS[2] pause_key      the fleet-wide pause
-- KEYS[3] tat_key        when the next slot opens
-- ARGV[1] clock          the caller's clock in microseconds ('' for the server's TIME)
-- ARGV[2] interval       microseconds between slots
-- ARGV[3] bucket_ttl     seconds a minute bucket lives
-- ARGV[4] longest_wait   the longest the caller will wait for its slot, microseconds
-- Returns {1 reserved or 0 refused, microseconds until the slot}.

local minute_prefix = KEYS[1]
local pause_key = KEYS[2]
local tat_key = KEYS[3]
local now = clock_now(ARGV[1])
local interval = tonumber(ARGV[2])
local bucket_ttl = ARGV[3]
local longest_wait = tonumber(ARGV[4])

local paused = paused_for(pause_key, now)
if paused > 0 then return {0, paused} end
local at = math.max(tonumber(redis.call('GET', tat_key) or '0'), now)
if at - now > longest_wait then return {0, at - now} end
redis.call('SET', tat_key, string.format('%d', at + interval),
  'PX', math.ceil((at + interval - now) / 1000) + 1000)
local bucket = bucket_of(minute_prefix, minute_of(at))
redis.call('HINCRBY', bucket, 'calls', 1)
redis.call('HINCRBY', bucket, 's' .. (math.floor(at / 1000000) % 60), 1)
redis.call('EXPIRE', bucket, bucket_ttl)
return {1, at - now}
