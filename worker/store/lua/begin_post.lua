-- begin_post.lua: the issue path's first step, one round trip instead of three (load the
-- job, take a budget slot, move it into the submitting state). Only a job in ready_state
-- that holds exactly the grant the worker is about to send, has attempts left and no replay
-- note gets a slot and the move; anything else comes back untouched for the full path.
-- uses: move.lua, budget_slot.lua
--
-- KEYS[1] job_key        the job hash
-- KEYS[2] history_key    the job's history list
-- KEYS[3] due_key        the due index
-- ARGV[1] grant          the grant payload the job must hold
-- ARGV[2] max_attempts   the job must have made fewer attempts than this
-- ARGV[3] post_time      the POST's time, kept as first_post_at if the job has none
-- ARGV[4] ready_state    the state the job must be in
-- ARGV[5] minute_prefix  take_slot's arguments (budget_slot.lua); '' when the provider
-- ARGV[6] pause_key        has no budget
-- ARGV[7] tat_key
-- ARGV[8] clock
-- ARGV[9] interval
-- ARGV[10] bucket_ttl
-- ARGV[11..] the move into submitting, as transition.lua's ARGV (its reason gets the
--            attempt number appended)
-- Returns {'started', job fields after the move}, {'wait', microseconds, job fields},
-- {'other', job fields} or {'missing'}.

local job_key = KEYS[1]
local history_key = KEYS[2]
local due_key = KEYS[3]
local grant = ARGV[1]
local max_attempts = tonumber(ARGV[2])
local post_time = ARGV[3]
local ready_state = ARGV[4]
local minute_prefix = ARGV[5]
local pause_key = ARGV[6]
local tat_key = ARGV[7]
local clock = ARGV[8]
local interval = ARGV[9]
local bucket_ttl = ARGV[10]
local layout, request = read_move(ARGV, 11)

local fields = redis.call('HGETALL', job_key)
if #fields == 0 then return {'missing'} end
local job = {}
for i = 1, #fields, 2 do job[fields[i]] = fields[i + 1] end
local attempts = tonumber(job['attempts'] or '0')
if job['state'] ~= ready_state or job['grant'] ~= grant or job['reconcile_first']
    or attempts >= max_attempts then
  return {'other', fields}
end
if minute_prefix ~= '' then
  local slot = take_slot(minute_prefix, pause_key, tat_key, clock, interval, bucket_ttl)
  if slot[1] > 0 then return {'wait', slot[1], fields} end
end
request.reason = request.reason .. ' ' .. (attempts + 1)
if not job['first_post_at'] then
  table.insert(request.fields, 'first_post_at')
  table.insert(request.fields, post_time)
end
if move(job_key, history_key, due_key, layout, request)[1] ~= 1 then
  return {'other', fields}
end
return {'started', redis.call('HGETALL', job_key)}
