-- transition.lua: move a job to another state, if it is in one the move allows: the
-- compare-and-set of JobStore.transition (move.lua does the work).
-- uses: move.lua
--
-- KEYS[1] job_key       the job hash
-- KEYS[2] history_key   the job's history list
-- KEYS[3] due_key       the due index
-- ARGV, in this order (move.lua reads them by these names and says what each holds):
--   index_prefix      the key layout (MOVE_LAYOUT), the same for every move
--   history_limit
--   pending_prefix
--   pending_states
--   claimed_prefix
--   dlq_all
--   dlq_by_provider
--   dlq_by_reason
--   waiting_prefix
--   era_key
--   key               the move (MOVE_REQUEST)
--   target
--   sources
--   now
--   now_iso
--   reason
--   attempts
--   ttl
--   due
--   claim
--   claim_ref
--   dlq_reason
--   version
--   flag_key
--   flag_ttl
--   flag_value
--   detail
--   post
--   field, value...   pairs to set on the job ('' deletes the field), to the end
-- Returns {1, previous state, 1 if the move set the flag else 0, 'era' if a POST's move
-- became a listing check else '', the job's hash as it now stands (HGETALL)},
-- {0, current state or ''}
-- when refused, or {0, state, 'claimed'} when another job claimed the ledger entry.

local job_key = KEYS[1]
local history_key = KEYS[2]
local due_key = KEYS[3]
local layout, request = read_move(ARGV, 1)

local result = move(job_key, history_key, due_key, layout, request)
if result[1] == 1 then
  -- the job as this move left it: the caller goes on from it, not from a copy of its own
  result[#result + 1] = redis.call('HGETALL', job_key)
end
return result
