-- budget_acquire.lua: take a call slot of a provider's budget now, or say how long to wait.
-- uses: budget_slot.lua
--
-- KEYS[1] minute_prefix  the minute buckets' prefix
-- KEYS[2] pause_key      the fleet-wide pause
-- KEYS[3] tat_key        when the next slot opens
-- ARGV[1] clock          the caller's clock in microseconds ('' for the server's TIME)
-- ARGV[2] interval       microseconds between slots
-- ARGV[3] bucket_ttl     seconds a minute bucket lives
-- Returns {0 (slot taken) or the microseconds to wait, the time of the decision}.

local minute_prefix = KEYS[1]
local pause_key = KEYS[2]
local tat_key = KEYS[3]
local clock = ARGV[1]
local interval = ARGV[2]
local bucket_ttl = ARGV[3]

return take_slot(minute_prefix, pause_key, tat_key, clock, interval, bucket_ttl)
