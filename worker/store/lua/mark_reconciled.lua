-- mark_reconciled.lua: beat's heartbeat (when the reconcile pass last ran, for its health
-- check) and a look at the store's era, in one step.
-- uses: era.lua
--
-- The era is raised by the first script that sees a promoted master (era.lua), and only
-- while that master still shows the lineage it came from: restarted, it shows a fresh
-- master_replid and no master_replid2, like any restart. Before this, the first script
-- came with the first new grant or POST, so a promoted master that restarted before any
-- (an idle night) forgot the promotion, and a job whose move into submitting it never
-- got would be POSTed again. The reconcile pass runs every CREDITQ_RECONCILE_INTERVAL_SECONDS
-- whatever the traffic, so that window is now one interval at most.
--
-- KEYS[1] reconciled_key  beat's heartbeat (epoch seconds)
-- ARGV[1] now             epoch seconds
-- ARGV[2] era_key         the store's era hash (era.lua)
-- Returns the store's era.

local reconciled_key = KEYS[1]
local now = ARGV[1]
local era_key = ARGV[2]

redis.call('SET', reconciled_key, now)
local era = store_era(era_key, now)
return era
