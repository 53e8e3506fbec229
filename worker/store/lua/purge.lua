-- purge.lua: delete a DLQ job for good: its hash, its history, and its entries in the
-- state, DLQ, pending and due indexes. One script, so a replay racing the purge either
-- wins (the job is queued again: kept) or loses. A live job is never purged: its record is
-- what makes a repeated enqueue of its key a duplicate.
-- uses: words.lua, scope.lua
--
-- KEYS[1] job_key          the job hash
-- KEYS[2] history_key      the job's history list
-- KEYS[3] due_key          the due index
-- ARGV[1] key              the idempotency key
-- ARGV[2] index_prefix     the per-state index sets' prefix
-- ARGV[3] pending_prefix   the pending sets' prefix (scope.lua)
-- ARGV[4] dlq_all          the DLQ sets (dlq.lua)
-- ARGV[5] dlq_by_provider
-- ARGV[6] dlq_by_reason
-- ARGV[7] dead_states      the dead-letter states, space separated
-- ARGV[8] providers        every provider, space separated
-- ARGV[9] reasons          every reason class, space separated
-- Returns 'purged', 'stale' (only index entries were left), '' (unknown) or the live
-- state the job is in.

local job_key = KEYS[1]
local history_key = KEYS[2]
local due_key = KEYS[3]
local key = ARGV[1]
local index_prefix = ARGV[2]
local pending_prefix = ARGV[3]
local layout = {dlq_all = ARGV[4], dlq_by_provider = ARGV[5], dlq_by_reason = ARGV[6]}
local dead_states = ARGV[7]
local providers = ARGV[8]
local reasons = ARGV[9]

local state = redis.call('HGET', job_key, 'state')
if state then
  if not listed(dead_states, state) then return state end
elseif not redis.call('ZSCORE', layout.dlq_all, key) then
  return ''
end
local sets = {layout.dlq_all, due_key}
for s in string.gmatch(dead_states, '%S+') do table.insert(sets, index_prefix .. s) end
for p in string.gmatch(providers, '%S+') do
  table.insert(sets, layout.dlq_by_provider .. p)
  for s in string.gmatch(dead_states, '%S+') do table.insert(sets, state_scope(index_prefix, s, p)) end
end
for r in string.gmatch(reasons, '%S+') do table.insert(sets, layout.dlq_by_reason .. r) end
if state then
  local job = redis.call('HMGET', job_key, 'provider', 'customer_id', 'dlq_reason')
  local provider, customer_id, reason = job[1], job[2], job[3]
  if provider then
    table.insert(sets, layout.dlq_by_provider .. provider)
    for s in string.gmatch(dead_states, '%S+') do
      table.insert(sets, state_scope(index_prefix, s, provider))
    end
    if customer_id then
      table.insert(sets, customer_scope(pending_prefix, provider, customer_id))
    end
  end
  if reason then table.insert(sets, layout.dlq_by_reason .. reason) end
end
for _, set in ipairs(sets) do redis.call('ZREM', set, key) end
redis.call('DEL', job_key, history_key)
if state then return 'purged' end
return 'stale'
