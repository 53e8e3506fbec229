"""The job store's Lua scripts: each move of a job is one of these, run atomically by Redis.

Kept apart from ``store.py`` so the Python that builds their arguments reads on its own;
the argument lists are documented above each script and built in ``JobStore``.
"""

from __future__ import annotations

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
# 12 DLQ prefix, 13 DLQ reason class ('' not in the DLQ).
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
  'provider', ARGV[5], 'customer_id', ARGV[6])
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

# KEYS: job, history, due index. ARGV: 1 idempotency key, 2 target state, 3 allowed
# sources (space separated), 4 now, 5 now iso, 6 reason, 7 attempts: keep|incr|decr|reset,
# 8 ttl (0: not terminal), 9 index prefix, 10 history limit, 11 pending prefix,
# 12 due ('' leaves it), 13 claimed-entries prefix ('' no claim), 14 entry ref to claim,
# 15 DLQ prefix, 16 DLQ reason class (entering the DLQ) or '', 17 expected version ('' any),
# 18 flag key to set if absent ('' none), 19 its ttl in ms, 20.. field/value pairs
# ('' deletes). Returns {1, previous state, flag set 0|1}, {0, current state or ''},
# or {0, state, 'claimed'}.
TRANSITION = (
    DLQ_ADD
    + """
local job = redis.call('HMGET', KEYS[1], 'state', 'version', 'provider', 'customer_id',
  'dlq_reason', 'attempts')
local state = job[1]
if not state then return {0, ''} end
local allowed = false
for s in string.gmatch(ARGV[3], '%S+') do
  if s == state then allowed = true end
end
if not allowed then return {0, state} end
if ARGV[17] ~= '' and job[2] ~= ARGV[17] then return {0, state} end
local provider = job[3]
local scope = provider .. ':' .. job[4]
local left_dlq = job[5]
local claimed = ARGV[13] .. scope
if ARGV[13] ~= '' and redis.call('SISMEMBER', claimed, ARGV[14]) == 1 then
  return {0, state, 'claimed'}
end
local attempts = tonumber(job[6] or '0')
if ARGV[7] == 'incr' then attempts = attempts + 1
elseif ARGV[7] == 'decr' then attempts = math.max(attempts - 1, 0)
elseif ARGV[7] == 'reset' then attempts = 0 end
local set = {'state', ARGV[2], 'attempts', attempts, 'updated_at', ARGV[4],
  'state_at', ARGV[4], 'version', tonumber(job[2] or '0') + 1}
local unset = {}
for i = 20, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    table.insert(unset, ARGV[i])
  else
    table.insert(set, ARGV[i])
    table.insert(set, ARGV[i + 1])
  end
end
redis.call('HSET', KEYS[1], unpack(set))
if #unset > 0 then redis.call('HDEL', KEYS[1], unpack(unset)) end
redis.call('RPUSH', KEYS[2], cjson.encode({at=ARGV[5], from=state, to=ARGV[2],
  reason=ARGV[6], attempt=attempts}))
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[10]), -1)
if state ~= ARGV[2] then
  redis.call('ZREM', ARGV[9] .. state, ARGV[1])
  redis.call('ZADD', ARGV[9] .. ARGV[2], ARGV[4], ARGV[1])
end
local was_pending = state == 'submitting' or state == 'submitted'
local is_pending = ARGV[2] == 'submitting' or ARGV[2] == 'submitted'
if was_pending ~= is_pending then
  for _, pending in ipairs({ARGV[11] .. scope, ARGV[11] .. provider}) do
    if is_pending then
      redis.call('ZADD', pending, 'NX', ARGV[4], ARGV[1])
    else
      redis.call('ZREM', pending, ARGV[1])
    end
  end
end
local ttl = tonumber(ARGV[8])
if left_dlq then
  for _, set in ipairs({ARGV[15] .. 'all', ARGV[15] .. 'provider:' .. provider,
                        ARGV[15] .. 'reason:' .. left_dlq}) do
    redis.call('ZREM', set, ARGV[1])
  end
  redis.call('HDEL', KEYS[1], 'dlq_reason')
end
if ARGV[16] ~= '' then
  redis.call('HSET', KEYS[1], 'dlq_reason', ARGV[16])
  dlq_add(ARGV[15], ARGV[1], provider, ARGV[16], ARGV[4], ttl)
end
if ARGV[13] ~= '' then
  redis.call('SADD', claimed, ARGV[14])
  redis.call('EXPIRE', claimed, math.max(ttl, 86400))
end
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('ZREMRANGEBYSCORE', ARGV[9] .. ARGV[2], '-inf', tonumber(ARGV[4]) - ttl)
  redis.call('ZREM', KEYS[3], ARGV[1])
else
  if left_dlq then  -- leaving the DLQ (replay): the job is live again, keep it
    redis.call('PERSIST', KEYS[1])
    redis.call('PERSIST', KEYS[2])
  end
  if ARGV[12] ~= '' then redis.call('ZADD', KEYS[3], ARGV[12], ARGV[1]) end
end
local flagged = 0
if ARGV[18] ~= '' and redis.call('SET', ARGV[18], '1', 'NX', 'PX', ARGV[19]) then flagged = 1 end
return {1, state, flagged}
"""
)
