-- start_sweep.lua: the start of a provider's confirmation sweep.
--
-- The sweep marker names the one scheduled sweep ("token@due", see schedule.lua); the sweep
-- it names deletes it, so that a job submitted from then on schedules the next one. A sweep
-- the marker does not name stands down (superseded); with no marker at all (it expired, or
-- a message came twice) it runs. Sweeps of one provider never overlap: a running one holds
-- the lease (its token, renewed per page read); another finds it busy and leaves word (the
-- wanted key) for the running one, which schedules the next sweep at once when it ends: no
-- countdown, no gap. In case the running one died, the busy one also comes back when the
-- lease runs out (superseded by then if the running one ended and scheduled the next).
-- Only the jobs due are returned: a sweep loads what it reads for, not every job waiting.
--
-- KEYS[1] marker_key    the provider's sweep marker
-- KEYS[2] pending_key   the provider's pending set
-- KEYS[3] due_key       the due index
-- KEYS[4] lease_key     the sweep lease
-- KEYS[5] wanted_key    the sweep-wanted key
-- ARGV[1] token         this sweep's token
-- ARGV[2] due_by        epoch seconds: the jobs due by then are returned
-- ARGV[3] lease_ms      the lease, in ms
-- Returns {the marker's token ('' when none), the pending keys due by due_by (oldest
-- pending first), when the earliest of the others is due ('' when none; when busy, the
-- lease's time left in ms), 1 busy | 0}.

local marker_key = KEYS[1]
local pending_key = KEYS[2]
local due_key = KEYS[3]
local lease_key = KEYS[4]
local wanted_key = KEYS[5]
local token = ARGV[1]
local due_by = tonumber(ARGV[2])
local lease_ms = ARGV[3]

local marker = redis.call('GET', marker_key)
local name = marker and string.match(marker, '^([^@]*)') or ''
if name ~= '' and name ~= token then return {name, {}, '', 0} end
local holder = redis.call('GET', lease_key)
if holder and holder ~= token then
  redis.call('SET', wanted_key, token, 'PX', lease_ms)
  return {name, {}, tostring(redis.call('PTTL', lease_key)), 1}
end
if name == token then redis.call('DEL', marker_key) end
redis.call('SET', lease_key, token, 'PX', lease_ms)
local due, later = {}, nil
for _, key in ipairs(redis.call('ZRANGE', pending_key, 0, -1)) do
  local at = tonumber(redis.call('ZSCORE', due_key, key) or '0')
  if at <= due_by then
    due[#due + 1] = key
  elseif later == nil or at < later then
    later = at
  end
end
return {name, due, later and string.format('%.6f', later) or '', 0}
