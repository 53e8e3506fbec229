-- raise_alarm.lua: an alarm on a job (a duplicate credit, a copied marker), recorded on the
-- job and in the alarm index, only if the job still exists (a half-written hash would be no
-- job at all).
--
-- KEYS[1] job_key     the job hash
-- KEYS[2] alarms_key  the alarm index
-- ARGV[1] key         the idempotency key
-- ARGV[2] alarm       the alarm, as JSON
-- ARGV[3] now         epoch seconds
-- Returns 1 raised, 0 no such job.

local job_key = KEYS[1]
local alarms_key = KEYS[2]
local key = ARGV[1]
local alarm = ARGV[2]
local now = ARGV[3]

if redis.call('EXISTS', job_key) == 0 then return 0 end
redis.call('HSET', job_key, 'alarm', alarm)
redis.call('ZADD', alarms_key, now, key)
return 1
