-- hold_sweep.lua: the sweep lease, renewed or released by the sweep that holds it.
--
-- KEYS[1] lease_key    the sweep lease
-- KEYS[2] wanted_key   the sweep-wanted key (another sweep came while this one ran)
-- ARGV[1] token        the sweep's token
-- ARGV[2] ttl          the renewed lease in ms; '0' releases it
-- Returns 0 if the lease was not this sweep's, 2 if released while another sweep was
-- wanted (the caller schedules one at once), else 1.

local lease_key = KEYS[1]
local wanted_key = KEYS[2]
local token = ARGV[1]
local ttl = ARGV[2]

if redis.call('GET', lease_key) ~= token then return 0 end
if ttl ~= '0' then
  redis.call('PEXPIRE', lease_key, ttl)
  return 1
end
redis.call('DEL', lease_key)
if redis.call('DEL', wanted_key) == 1 then return 2 end
return 1
