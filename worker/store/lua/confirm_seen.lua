-- confirm_seen.lua: confirm every job one listing read found, in one call. Each is still
-- its own move (move.lua: expected state and version, the ledger entry claimed), and
-- succeeds or fails alone. A compact argument list per job instead of a whole move's: a
-- read can confirm a hundred jobs, and sending a full move for each cost more than the
-- moves; the request for each is built here, by name.
-- uses: move.lua
--
-- KEYS[1] due_key           the due index
-- KEYS[2] counters_key      the counters of work done for nothing (confirm_again)
-- ARGV[1] now               epoch seconds
-- ARGV[2] now_iso           the same, ISO-8601
-- ARGV[3] ttl               the retention TTL of terminal jobs
-- ARGV[4] job_prefix        job hashes' prefix (the idempotency key follows)
-- ARGV[5] history_prefix    history lists' prefix
-- ARGV[6] confirmed_state   the state the jobs move to
-- ARGV[7] confirmed_at      when the read was made, kept on each job
-- ARGV[8..16] the key layout, as transition.lua's (MOVE_LAYOUT)
-- ARGV[17..] 8 per job:
--   key             the job's idempotency key
--   state           the state it was read in (the only source allowed)
--   version         the version it was read at
--   ref             the ledger entry, claimed for it
--   reason          for the history entry
--   provider_ref    the provider's reference for the credit
--   entry           the ledger entry, as JSON
--   visible_after   how long the credit took to show, in seconds
-- Returns two values per job: 1 (confirmed), 0 (refused: moved or changed since it was
-- read) or 2 (the entry is another job's); and the state the job was in ('' if none).

local due_key = KEYS[1]
local counters_key = KEYS[2]
local now = ARGV[1]
local now_iso = ARGV[2]
local ttl = ARGV[3]
local job_prefix = ARGV[4]
local history_prefix = ARGV[5]
local confirmed_state = ARGV[6]
local confirmed_at = ARGV[7]
local layout, jobs_at = named(MOVE_LAYOUT, ARGV, 8)
local jobs = rest(ARGV, jobs_at)
local PER_JOB = 8

local results = {}
for i = 1, #jobs, PER_JOB do
  local key, state, version, ref, reason, provider_ref, entry, visible_after =
    unpack(jobs, i, i + PER_JOB - 1)
  local request = {key = key, target = confirmed_state, sources = state, now = now,
    now_iso = now_iso, reason = reason, attempts = 'keep', ttl = ttl, due = '', claim = '1',
    claim_ref = ref, dlq_reason = '', version = version, flag_key = '', flag_ttl = 0,
    flag_value = '', detail = '', post = '',
    fields = {'provider_ref', provider_ref, 'provider_entry', entry,
      'confirmed_at', confirmed_at, 'in_flight_until', '', 'outcome_unknown', '',
      'visible_after_seconds', visible_after}}
  local r = move(job_prefix .. key, history_prefix .. key, due_key, layout, request)
  local code = 0
  if r[1] == 1 then code = 1 elseif r[3] == 'claimed' then code = 2
  elseif r[2] == confirmed_state then redis.call('HINCRBY', counters_key, 'confirm_again', 1) end
  results[#results + 1] = code
  results[#results + 1] = r[2]
end
return results
