"""The job store's Lua scripts: each move of a job is one of these, run atomically by Redis.

Kept apart from ``store.py`` so the Python that builds their arguments reads on its own;
the argument lists are documented above each script and built in ``JobStore``.
"""

from __future__ import annotations

from worker.budget import SLOT_FN

# Index a job into the DLQ sets (all, by provider, by reason); spelled once, used by both
# scripts. The key names follow Keys.dlq.
DLQ_ADD = """
local function dlq_add(prefix, key, provider, reason, now, ttl)
  for _, set in ipairs({prefix .. 'all', prefix .. 'provider:' .. provider,
                        prefix .. 'reason:' .. reason}) do
    redis.call('ZADD', set, now, key)
    if ttl > 0 then redis.call('ZREMRANGEBYSCORE', set, '-inf', tonumber(now) - ttl) end
  end
end
"""

# KEYS: job, history, index of the initial state, due index. ARGV: 1 fingerprint,
# 2 grant json, 3 now, 4 now iso, 5 provider, 6 customer id, 7 idempotency key,
# 8 initial state, 9 reason, 10 ttl (0: keep), 11 last_error json ('' none),
# 12 DLQ prefix, 13 DLQ reason class ('' not in the DLQ), 14 the job's incarnation (its
# marker's salt, models.marker_for).
# Returns 1 created, 0 duplicate, -1 conflict.
CREATE = (
    DLQ_ADD
    + """
local fp = redis.call('HGET', KEYS[1], 'fingerprint')
if fp then
  if fp == ARGV[1] then return 0 end
  return -1
end
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'grant', ARGV[2], 'state', ARGV[8],
  'attempts', 0, 'version', 0, 'created_at', ARGV[3], 'updated_at', ARGV[3], 'state_at', ARGV[3],
  'provider', ARGV[5], 'customer_id', ARGV[6], 'incarnation', ARGV[14])
if ARGV[11] ~= '' then redis.call('HSET', KEYS[1], 'last_error', ARGV[11]) end
if ARGV[13] ~= '' then
  redis.call('HSET', KEYS[1], 'dlq_reason', ARGV[13])
  dlq_add(ARGV[12], ARGV[7], ARGV[5], ARGV[13], ARGV[3], tonumber(ARGV[10]))
end
redis.call('RPUSH', KEYS[2], cjson.encode({at=ARGV[4], to=ARGV[8], reason=ARGV[9], attempt=0}))
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[7])
local ttl = tonumber(ARGV[10])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
else
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[7])
end
return 1
"""
)

# A provider's sweep marker names the one scheduled confirmation sweep and when it is due:
# "token@due" (epoch seconds). A sweep wanted earlier than the scheduled one replaces it (the
# later message then finds another token and stands down), so a credit that shows at the
# learned lag is never left waiting for a sweep an older job's grown poll interval pushed
# out; one wanted later is already served. ``force`` replaces in any case.
# Returns 1 when this call set the marker (its caller sends the sweep's message), else 0.
SCHEDULE_FN = """
local function schedule_sweep(key, value, ttl, force)
  if force ~= '1' then
    local current = redis.call('GET', key)
    if current then
      local at = tonumber(string.match(current, '@([^@]+)$') or '')
      local wanted = tonumber(string.match(value, '@([^@]+)$') or '')
      if at == nil or wanted == nil or wanted >= at then return 0 end
    end
  end
  redis.call('SET', key, value, 'PX', ttl)
  return 1
end
"""

# KEYS: the sweep marker. ARGV: 1 "token@due", 2 ttl in ms, 3 force ('1') or not ('0').
SCHEDULE_SWEEP = (
    SCHEDULE_FN
    + """
return schedule_sweep(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
"""
)

# One move of a job, as a Lua function so that TRANSITION and BEGIN_POST share it.
# K: job, history, due index. A: 1 idempotency key, 2 target state, 3 allowed
# sources (space separated), 4 now, 5 now iso, 6 reason, 7 attempts: keep|incr|decr|reset,
# 8 ttl (0: not terminal), 9 index prefix, 10 history limit, 11 pending prefix,
# 12 due ('' leaves it), 13 claimed-entries prefix ('' no claim), 14 entry ref to claim,
# 15 DLQ prefix, 16 DLQ reason class (entering the DLQ) or '', 17 expected version ('' any),
# 18 sweep marker to set ('' none; see SCHEDULE_FN), 19 its ttl in ms, 20 its value,
# 21.. field/value pairs ('' deletes). Returns {1, previous state, flag set 0|1},
# {0, current state or ''}, or {0, state, 'claimed'}.
MOVE_FN = (
    SCHEDULE_FN
    + """
local function move(K, A)
  local job = redis.call('HMGET', K[1], 'state', 'version', 'provider', 'customer_id',
    'dlq_reason', 'attempts')
  local state = job[1]
  if not state then return {0, ''} end
  local allowed = false
  for s in string.gmatch(A[3], '%S+') do
    if s == state then allowed = true end
  end
  if not allowed then return {0, state} end
  if A[17] ~= '' and job[2] ~= A[17] then return {0, state} end
  local provider = job[3]
  local scope = provider .. ':' .. job[4]
  local left_dlq = job[5]
  local claimed = A[13] .. scope
  if A[13] ~= '' and redis.call('SISMEMBER', claimed, A[14]) == 1 then
    return {0, state, 'claimed'}
  end
  local attempts = tonumber(job[6] or '0')
  if A[7] == 'incr' then attempts = attempts + 1
  elseif A[7] == 'decr' then attempts = math.max(attempts - 1, 0)
  elseif A[7] == 'reset' then attempts = 0 end
  local set = {'state', A[2], 'attempts', attempts, 'updated_at', A[4],
    'state_at', A[4], 'version', tonumber(job[2] or '0') + 1}
  local unset = {}
  for i = 21, #A, 2 do
    if A[i + 1] == '' then
      table.insert(unset, A[i])
    else
      table.insert(set, A[i])
      table.insert(set, A[i + 1])
    end
  end
  redis.call('HSET', K[1], unpack(set))
  if #unset > 0 then redis.call('HDEL', K[1], unpack(unset)) end
  redis.call('RPUSH', K[2], cjson.encode({at=A[5], from=state, to=A[2],
    reason=A[6], attempt=attempts}))
  redis.call('LTRIM', K[2], -tonumber(A[10]), -1)
  if state ~= A[2] then
    redis.call('ZREM', A[9] .. state, A[1])
    redis.call('ZADD', A[9] .. A[2], A[4], A[1])
  end
  local was_pending = state == 'submitting' or state == 'submitted'
  local is_pending = A[2] == 'submitting' or A[2] == 'submitted'
  if was_pending ~= is_pending then
    for _, pending in ipairs({A[11] .. scope, A[11] .. provider}) do
      if is_pending then
        redis.call('ZADD', pending, 'NX', A[4], A[1])
      else
        redis.call('ZREM', pending, A[1])
      end
    end
  end
  local ttl = tonumber(A[8])
  if left_dlq then
    for _, set in ipairs({A[15] .. 'all', A[15] .. 'provider:' .. provider,
                          A[15] .. 'reason:' .. left_dlq}) do
      redis.call('ZREM', set, A[1])
    end
    redis.call('HDEL', K[1], 'dlq_reason')
  end
  if A[16] ~= '' then
    redis.call('HSET', K[1], 'dlq_reason', A[16])
    dlq_add(A[15], A[1], provider, A[16], A[4], ttl)
  end
  if A[13] ~= '' then
    redis.call('SADD', claimed, A[14])
    redis.call('EXPIRE', claimed, math.max(ttl, 86400))
  end
  if ttl > 0 then
    redis.call('EXPIRE', K[1], ttl)
    redis.call('EXPIRE', K[2], ttl)
    redis.call('ZREMRANGEBYSCORE', A[9] .. A[2], '-inf', tonumber(A[4]) - ttl)
    redis.call('ZREM', K[3], A[1])
  else
    if left_dlq then  -- leaving the DLQ (replay): the job is live again, keep it
      redis.call('PERSIST', K[1])
      redis.call('PERSIST', K[2])
    end
    if A[12] ~= '' then redis.call('ZADD', K[3], A[12], A[1]) end
  end
  local flagged = 0
  if A[18] ~= '' then flagged = schedule_sweep(A[18], A[20], A[19], '0') end
  return {1, state, flagged}
end
"""
)

# KEYS and ARGV as MOVE_FN's K and A.
TRANSITION = DLQ_ADD + MOVE_FN + "return move(KEYS, ARGV)\n"


# The issue path's first step, one round trip instead of three (load the job, take a budget
# slot, move it into ``submitting``): the job is loaded, and only if it is ``queued``, holds
# exactly the grant the worker is about to send, has attempts left and no replay note is a
# slot taken and the move made. Anything else comes back untouched for the full path.
# KEYS: job, history, due index. ARGV: 1 the grant payload the job must hold, 2 max attempts,
# 3 the POST's time (first_post_at if the job has none), 4..9 SLOT_FN's arguments (4 ''
# when the provider has no budget), 10.. MOVE_FN's A for the move into submitting (its
# reason gets the attempt number appended).
# Returns {'started', job fields after the move}, {'wait', microseconds, job fields},
# {'other', job fields} or {'missing'}.
BEGIN_POST = (
    DLQ_ADD
    + MOVE_FN
    + SLOT_FN
    + """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return {'missing'} end
local job = {}
for i = 1, #fields, 2 do job[fields[i]] = fields[i + 1] end
local attempts = tonumber(job['attempts'] or '0')
if job['state'] ~= 'queued' or job['grant'] ~= ARGV[1] or job['reconcile_first']
    or attempts >= tonumber(ARGV[2]) then
  return {'other', fields}
end
if ARGV[4] ~= '' then
  local slot = take_slot(ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
  if slot[1] > 0 then return {'wait', slot[1], fields} end
end
local a = {}
for i = 10, #ARGV do a[#a + 1] = ARGV[i] end
a[6] = a[6] .. ' ' .. (attempts + 1)
if not job['first_post_at'] then
  a[#a + 1] = 'first_post_at'
  a[#a + 1] = ARGV[3]
end
if move(KEYS, a)[1] ~= 1 then return {'other', fields} end
return {'started', redis.call('HGETALL', KEYS[1])}
"""
)

# The start of a provider's confirmation sweep. The sweep marker names the one scheduled
# sweep ("token@due", see SCHEDULE_FN); the sweep it names deletes it, so that a job
# submitted from then on schedules the next one. A sweep the marker does not name stands
# down (superseded); with no marker at all (it expired, or a message came twice) it runs.
# Sweeps of one provider never overlap: a running one holds the lease (its token, renewed
# per page read); another finds it busy and leaves word (the wanted key) for the running one,
# which schedules the next sweep at once when it ends: no countdown, no gap. In case the
# running one died, the busy one also comes back when the lease runs out (superseded by
# then if the running one ended and scheduled the next).
# Only the jobs due are returned: a sweep loads what it reads for, not every job waiting.
# KEYS: the sweep marker, the provider's pending set, the due index, the sweep lease, the
# sweep wanted key.
# ARGV: 1 the sweep's token, 2 due up to (epoch seconds), 3 the lease in ms.
# Returns {the marker's token ('' when none), the pending keys due by ARGV[2] (oldest pending
# first), when the earliest of the others is due ('' when none; when busy, the lease's
# time left in ms), 1 busy | 0}.
START_SWEEP = """
local marker = redis.call('GET', KEYS[1])
local name = marker and string.match(marker, '^([^@]*)') or ''
if name ~= '' and name ~= ARGV[1] then return {name, {}, '', 0} end
local holder = redis.call('GET', KEYS[4])
if holder and holder ~= ARGV[1] then
  redis.call('SET', KEYS[5], ARGV[1], 'PX', ARGV[3])
  return {name, {}, tostring(redis.call('PTTL', KEYS[4])), 1}
end
if name == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[3])
local limit = tonumber(ARGV[2])
local due, later = {}, nil
for _, key in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local at = tonumber(redis.call('ZSCORE', KEYS[3], key) or '0')
  if at <= limit then
    due[#due + 1] = key
  elseif later == nil or at < later then
    later = at
  end
end
return {name, due, later and string.format('%.6f', later) or '', 0}
"""

# The sweep lease, renewed (ARGV 2: ttl in ms) or released (ARGV 2: '0') by the sweep that
# holds it. KEYS: the lease, the sweep wanted key. ARGV: 1 the sweep's token.
# Returns 0 if the lease was not this sweep's, 2 if released while another sweep was wanted
# (the caller schedules one at once), else 1.
HOLD_SWEEP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
redis.call('DEL', KEYS[1])
if redis.call('DEL', KEYS[2]) == 1 then return 2 end
return 1
"""

# Confirm every job one listing read found, in one call: each is still its own MOVE_FN
# compare-and-set (expected state and version, the entry claimed), and succeeds or fails
# alone. A compact argument list per job instead of a whole move's: a read can confirm a
# hundred jobs, and building and sending a full move for each cost more than the moves.
# The script builds MOVE_FN's A itself, in the layout documented above MOVE_FN (and built by
# JobStore._move_args): a change to that layout changes this script too.
# KEYS: due index, counters. ARGV: 1 now, 2 now iso, 3 ttl of terminal jobs, 4 job key prefix,
# 5 history key prefix, 6 index prefix, 7 history limit, 8 pending prefix, 9 claimed prefix,
# 10 DLQ prefix, 11 confirmed_at, then 8 per job: key, expected state, version, entry ref,
# reason, provider_ref, provider_entry json, visible_after_seconds.
# Returns per job two values: 1 (confirmed), 0 (refused: moved or changed since it was
# read) or 2 (the entry is another job's); and the state the job was in ('' if none).
CONFIRM_SEEN = (
    DLQ_ADD
    + MOVE_FN
    + """
local results = {}
for i = 12, #ARGV, 8 do
  local key = ARGV[i]
  local job = ARGV[4] .. key
  local a = {key, 'confirmed', ARGV[i + 1], ARGV[1], ARGV[2], ARGV[i + 4], 'keep', ARGV[3],
    ARGV[6], ARGV[7], ARGV[8], '', ARGV[9], ARGV[i + 3], ARGV[10], '', ARGV[i + 2], '', 0, '',
    'provider_ref', ARGV[i + 5], 'provider_entry', ARGV[i + 6], 'confirmed_at', ARGV[11],
    'in_flight_until', '', 'outcome_unknown', '', 'visible_after_seconds', ARGV[i + 7]}
  local r = move({job, ARGV[5] .. key, KEYS[1]}, a)
  local code = 0
  if r[1] == 1 then code = 1 elseif r[3] == 'claimed' then code = 2
  elseif r[2] == 'confirmed' then redis.call('HINCRBY', KEYS[2], 'confirm_again', 1) end
  results[#results + 1] = code
  results[#results + 1] = r[2]
end
return results
"""
)

# What a provider's listing has shown lately, kept as maxima so that concurrent sweeps can
# only raise them: ``witness_at``, when the newest credit seen in a listing was accepted;
# and the longest time any credit took to show, per hour (``lag:<hour>``, this hour and the
# last kept).
# KEYS: the provider's visibility hash. ARGV: 1 accepted-at of the newest credit seen,
# 2 the longest it took one of them to show (seconds), 3 now (epoch seconds).
RECORD_VISIBILITY = """
local function raise(field, value)
  local old = tonumber(redis.call('HGET', KEYS[1], field) or '-1')
  if tonumber(value) > old then redis.call('HSET', KEYS[1], field, value) end
end
raise('witness_at', ARGV[1])
local hour = math.floor(tonumber(ARGV[3]) / 3600)
raise('lag:' .. hour, ARGV[2])
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  local h = tonumber(string.match(field, '^lag:(%d+)$') or '')
  if h and h < hour - 1 then redis.call('HDEL', KEYS[1], field) end
end
redis.call('EXPIRE', KEYS[1], 7 * 86400)
return 1
"""

# An alarm on a job (a duplicate credit, a copied marker): recorded on the job and in the
# alarm index, only if the job still exists (a half-written hash would be no job at all).
# KEYS: the job, the alarm index. ARGV: 1 idempotency key, 2 the alarm as JSON, 3 now.
# Returns 1 raised, 0 no such job.
RAISE_ALARM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'alarm', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""
