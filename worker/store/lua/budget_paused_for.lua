-- budget_paused_for.lua: how long the fleet-wide pause of a provider has left.
-- uses: budget_clock.lua
--
-- KEYS[1] pause_key  the fleet-wide pause
-- ARGV[1] clock      the caller's clock in microseconds ('' for the server's TIME)
-- Returns the pause remaining in microseconds (0: none).

local pause_key = KEYS[1]
local now = clock_now(ARGV[1])

return paused_for(pause_key, now)
