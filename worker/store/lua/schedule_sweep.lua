-- schedule_sweep.lua: name a sweep in a provider's sweep marker, unless one is scheduled no
-- later (schedule.lua says how).
-- uses: schedule.lua
--
-- KEYS[1] marker_key   the provider's sweep marker
-- ARGV[1] value        "token@due" (epoch seconds)
-- ARGV[2] ttl          the marker's ttl in ms
-- ARGV[3] force        '1': replace the marker in any case; '0': only with an earlier one
-- Returns 1 when this call set the marker (its caller sends the sweep's message), else 0.

local marker_key = KEYS[1]
local value = ARGV[1]
local ttl = ARGV[2]
local force = ARGV[3]

return schedule_sweep(marker_key, value, ttl, force)
