-- budget_acquire.lua: take a call slot of a provider's budget in turn, or say how long to
-- wait (take_turn in budget_turn.lua, which says what each argument holds).
-- uses: budget_turn.lua
--
-- KEYS[1] minute_prefix  the minute buckets' prefix
-- KEYS[2] pause_key      the fleet-wide pause
-- KEYS[3] tat_key        when the next slot opens
-- KEYS[4] queue_key      the tickets waiting
-- KEYS[5] promised_key   when each ticket's owner comes back
-- KEYS[6] lanes_key      the ticket counter and the slots owed to bulk
-- ARGV[1] clock          the caller's clock in microseconds ('' for the server's TIME)
-- ARGV[2] interval       microseconds between slots
-- ARGV[3] bucket_ttl     seconds a minute bucket lives
-- ARGV[4] horizon        microseconds ahead a slot may be reserved
-- ARGV[5] grace          microseconds an owner may be late
-- ARGV[6] max_wait       the longest wait handed out
-- ARGV[7] share          every how many interactive slots one goes to bulk
-- ARGV[8] ticket         the caller's ticket ('' none)
-- ARGV[9] class          its class
-- Returns {1, microseconds until the reserved slot, the time of the decision} or {0,
-- microseconds to wait before asking again, the time of the decision}.

local keys = {KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]}
local values = {ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]}

for _, value in ipairs(values) do keys[#keys + 1] = value end
return take_turn(read_turn(keys, 1))
