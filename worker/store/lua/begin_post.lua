-- begin_post.lua: the issue path's first step, one round trip instead of three (load the
-- job, take its turn for a budget slot, move it into the submitting state). Only a job in
-- ready_state that holds exactly the grant the worker is about to send, has attempts left
-- and no replay note gets a slot and the move; anything else comes back untouched for the
-- full path.
-- uses: move.lua, budget_turn.lua
--
-- KEYS[1] job_key        the job hash
-- KEYS[2] history_key    the job's history list
-- KEYS[3] due_key        the due index
-- ARGV[1] grant          the grant payload the job must hold
-- ARGV[2] max_attempts   the job must have made fewer attempts than this
-- ARGV[3] post_time      the POST's time, kept as first_post_at if the job has none
-- ARGV[4] ready_state    the state the job must be in
-- ARGV[5..19] the turn (budget_turn.lua's TURN, by name: the keys, then clock, interval,
--            bucket_ttl, horizon, grace, max_wait, share, ticket, class); all '' when the
--            provider has no budget
-- ARGV[20..] the move into submitting, as transition.lua's ARGV (its reason gets the
--            attempt number appended); its fields carry post_token, this call's own token,
--            by which a run sent again after a lost reply knows the move as its own
-- Returns {'started', job fields after the move, microseconds until its slot},
-- {'wait', microseconds, job fields}, {'checked', job fields after the move} when the
-- store's master was promoted since the job's last move (move.lua: the job waits for the
-- listing instead, and takes no slot), {'other', job fields} or {'missing'}.

local job_key = KEYS[1]
local history_key = KEYS[2]
local due_key = KEYS[3]
local grant = ARGV[1]
local max_attempts = tonumber(ARGV[2])
local post_time = ARGV[3]
local ready_state = ARGV[4]
local turn = read_turn(ARGV, 5)
local layout, request = read_move(ARGV, 5 + #TURN)

local fields = redis.call('HGETALL', job_key)
if #fields == 0 then return {'missing'} end
local job = {}
for i = 1, #fields, 2 do job[fields[i]] = fields[i + 1] end
local attempts = tonumber(job['attempts'] or '0')
-- This very call, sent again: its first run made the move and the reply was lost (a cut
-- connection, a failover). Its POST has not left, since its caller is still here waiting.
local token = ''
for i = 1, #request.fields, 2 do
  if request.fields[i] == 'post_token' then token = request.fields[i + 1] end
end
if token ~= '' and job['post_token'] == token and job['state'] == request.target then
  return {'started', fields, 0}
end
if job['state'] ~= ready_state or job['grant'] ~= grant or job['reconcile_first']
    or attempts >= max_attempts then
  return {'other', fields}
end
if era_passed(job['era'], layout, request.now) then
  if move(job_key, history_key, due_key, layout, request)[1] ~= 1 then
    return {'other', fields}
  end
  return {'checked', redis.call('HGETALL', job_key)}
end
request.post = ''  -- checked just above, in this same script
local slot_in = 0
if turn.minute_prefix ~= '' then
  local taken = take_turn(turn)
  if taken[1] == 0 then return {'wait', taken[2], fields} end
  slot_in = taken[2]
end
request.reason = request.reason .. ' ' .. (attempts + 1)
if not job['first_post_at'] then
  table.insert(request.fields, 'first_post_at')
  table.insert(request.fields, post_time)
end
if move(job_key, history_key, due_key, layout, request)[1] ~= 1 then
  return {'other', fields}
end
return {'started', redis.call('HGETALL', job_key), slot_in}
