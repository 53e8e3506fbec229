-- move.lua: move(), one move of a job: the compare-and-set every change of state is. A
-- helper, composed into transition.lua, begin_post.lua and confirm_seen.lua; with named(),
-- rest() and read_move(), which read a move's arguments by name.
-- uses: words.lua, scope.lua, dlq.lua, schedule.lua, era.lua
--
-- move(job_key, history_key, due_key, layout, request)
--   job_key      the job hash
--   history_key  the job's history list
--   due_key      the due index (when each unfinished job is next worked on)
--   layout       the key layout, the same for every move: a table of MOVE_LAYOUT's names
--   request      this move: a table of MOVE_REQUEST's names, plus `fields`, a list of
--                field/value pairs to set on the job ('' deletes the field)
-- Returns {1, previous state, 1 if it set the flag else 0, 'era' if the move was turned
-- into the listing check below else ''}; {0, current state or ''} when refused;
-- {0, state, 'claimed'} when another job already claimed the ledger entry.
--
-- A move that starts a POST (`post`) of a job stamped with an older era than the store's
-- (era.lua: the store's master was promoted since) is not made as asked: the job moves into
-- submitting with its outcome unknown instead, its lease kept, so no POST leaves before the
-- listing says whether one left on the old master whose record the promotion lost.

-- The key layout, in the order JobStore passes it (moves.py's MOVE_LAYOUT; a unit test
-- keeps the two lists equal):
--   index_prefix     the per-state index sets' prefix (the state follows)
--   history_limit    how many history entries are kept
--   pending_prefix   the pending sets' prefix (scope.lua)
--   pending_states   the states of a pending job, space separated
--   claimed_prefix   the claimed-entries sets' prefix (scope.lua)
--   dlq_all          the DLQ sets (dlq.lua)
--   dlq_by_provider
--   dlq_by_reason
--   waiting_prefix   the per-provider and lane sets of unfinished jobs (scope.lua)
--   era_key          the store's era hash (era.lua)
local MOVE_LAYOUT = {'index_prefix', 'history_limit', 'pending_prefix', 'pending_states',
  'claimed_prefix', 'dlq_all', 'dlq_by_provider', 'dlq_by_reason', 'waiting_prefix', 'era_key'}

-- One move, in the order JobStore passes it (moves.py's MOVE_REQUEST):
--   key          the job's idempotency key
--   target       the state to move to
--   sources      the states it may move from, space separated
--   now          epoch seconds
--   now_iso      the same time in ISO-8601, for the history entry
--   reason       why, for the history entry
--   attempts     keep | incr | decr | reset
--   ttl          the retention TTL in seconds when the target is terminal, else 0
--   due          when the job is next due ('' leaves the due index as it is)
--   claim        '1': claim ledger entry claim_ref for this job; '': claim nothing
--   claim_ref    the entry to claim
--   dlq_reason   the reason class when the move enters the DLQ, else ''
--   version      the version the job must be at ('' any)
--   flag_key     a sweep marker to set with the move ('' none; schedule.lua)
--   flag_ttl     its ttl in ms
--   flag_value   its value
--   detail       a JSON object the history entry keeps as `detail` ('' none)
--   post         for a move that starts a POST, its lease in seconds; '' otherwise
local MOVE_REQUEST = {'key', 'target', 'sources', 'now', 'now_iso', 'reason', 'attempts',
  'ttl', 'due', 'claim', 'claim_ref', 'dlq_reason', 'version', 'flag_key', 'flag_ttl',
  'flag_value', 'detail', 'post'}

-- argv[first], argv[first + 1]... under `names`: a table, and the index after them.
local function named(names, argv, first)
  local args = {}
  for i, name in ipairs(names) do args[name] = argv[first + i - 1] end
  return args, first + #names
end

-- argv[first..] as a list (a move's field/value pairs).
local function rest(argv, first)
  local list = {}
  for i = first, #argv do list[#list + 1] = argv[i] end
  return list
end

-- A whole move from argv[first..] (transition.lua's ARGV): the layout, and the request
-- with its field/value pairs.
local function read_move(argv, first)
  local layout, request_at = named(MOVE_LAYOUT, argv, first)
  local request, fields_at = named(MOVE_REQUEST, argv, request_at)
  request.fields = rest(argv, fields_at)
  return layout, request
end

-- The store's era and when it was raised, if a job stamped with `job_era` may have lost a
-- move into submitting to a promotion since; nil otherwise.
local function era_passed(job_era, layout, now)
  local era, since = store_era(layout.era_key, now)
  if tonumber(job_era or '0') < era then return era, since end
  return nil
end

-- The move a POST's move becomes when era_passed: into its target (submitting), its outcome
-- unknown until the lease of a POST sent on the old master before the promotion would have
-- ended (`since` + the lease), reading the listing back to the job's first POST or, if none
-- is recorded, its last recorded move.
local function check_first(request, era, since, first_post_at, state_at)
  local lease_end = string.format('%.6f', since + tonumber(request.post))
  -- the confirm deadline runs from now, when the outcome is found unknown, even for a job
  -- first started long after the promotion (a retry due hours later, a bulk backlog)
  local unknown_since = string.format('%.6f', math.max(tonumber(lease_end), tonumber(request.now)))
  local check = {}
  for name, value in pairs(request) do check[name] = value end
  check.attempts = 'keep'
  check.reason = "the store's master was promoted since this job's last move: a POST may " ..
    'have left without its record, so the listing is read before any POST'
  check.claim = ''
  check.dlq_reason = ''
  check.flag_key = ''
  check.detail = ''
  check.due = lease_end
  check.fields = {'outcome_unknown', '1', 'unknown_at', lease_end,
    'unknown_since', unknown_since, 'in_flight_until', lease_end,
    'first_post_at', first_post_at or state_at or request.now, 'listing_checked_at', '',
    'era', tostring(era)}
  return check
end

local function move(job_key, history_key, due_key, layout, request)
  local job = redis.call('HMGET', job_key, 'state', 'version', 'provider', 'customer_id',
    'dlq_reason', 'attempts', 'priority', 'era', 'first_post_at', 'state_at')
  local state = job[1]
  if not state then return {0, ''} end
  if not listed(request.sources, state) then return {0, state} end
  if request.version ~= '' and job[2] ~= request.version then return {0, state} end
  local checked = ''
  if request.post ~= '' then
    local era, since = era_passed(job[8], layout, request.now)
    if era then
      request = check_first(request, era, since, job[9], job[10])
      checked = 'era'
    end
  end
  local provider, customer_id, left_dlq = job[3], job[4], job[5]
  local waiting = customer_scope(layout.waiting_prefix, provider, job[7] or 'interactive')
  local claimed = customer_scope(layout.claimed_prefix, provider, customer_id)
  if request.claim ~= '' and redis.call('SISMEMBER', claimed, request.claim_ref) == 1 then
    return {0, state, 'claimed'}
  end
  local attempts = tonumber(job[6] or '0')
  if request.attempts == 'incr' then attempts = attempts + 1
  elseif request.attempts == 'decr' then attempts = math.max(attempts - 1, 0)
  elseif request.attempts == 'reset' then attempts = 0 end
  local set = {'state', request.target, 'attempts', attempts, 'updated_at', request.now,
    'state_at', request.now, 'version', tonumber(job[2] or '0') + 1}
  local unset = {}
  local fields = request.fields
  for i = 1, #fields, 2 do
    if fields[i + 1] == '' then
      table.insert(unset, fields[i])
    else
      table.insert(set, fields[i])
      table.insert(set, fields[i + 1])
    end
  end
  redis.call('HSET', job_key, unpack(set))
  if #unset > 0 then redis.call('HDEL', job_key, unpack(unset)) end
  local entry = cjson.encode({at=request.now_iso, from=state, to=request.target,
    reason=request.reason, attempt=attempts})
  if request.detail ~= '' then  -- spliced in as sent: no decode and encode to round numbers
    entry = string.sub(entry, 1, -2) .. ',"detail":' .. request.detail .. '}'
  end
  redis.call('RPUSH', history_key, entry)
  redis.call('LTRIM', history_key, -tonumber(layout.history_limit), -1)
  if state ~= request.target then
    redis.call('ZREM', layout.index_prefix .. state, request.key)
    redis.call('ZADD', layout.index_prefix .. request.target, request.now, request.key)
    redis.call('ZREM', state_scope(layout.index_prefix, state, provider), request.key)
    redis.call('ZADD', state_scope(layout.index_prefix, request.target, provider), request.now,
      request.key)
  end
  local was_pending = listed(layout.pending_states, state)
  local is_pending = listed(layout.pending_states, request.target)
  if was_pending ~= is_pending then
    for _, pending in ipairs({customer_scope(layout.pending_prefix, provider, customer_id),
                              provider_scope(layout.pending_prefix, provider)}) do
      if is_pending then
        redis.call('ZADD', pending, 'NX', request.now, request.key)
      else
        redis.call('ZREM', pending, request.key)
      end
    end
  end
  local ttl = tonumber(request.ttl)
  if left_dlq then
    dlq_remove(layout, request.key, provider, left_dlq)
    redis.call('HDEL', job_key, 'dlq_reason')
  end
  if request.dlq_reason ~= '' then
    redis.call('HSET', job_key, 'dlq_reason', request.dlq_reason)
    dlq_add(layout, request.key, provider, request.dlq_reason, request.now, ttl)
  end
  if request.claim ~= '' then
    redis.call('SADD', claimed, request.claim_ref)
    redis.call('EXPIRE', claimed, math.max(ttl, 86400))
  end
  if ttl > 0 then
    redis.call('ZREM', waiting, request.key)
    redis.call('EXPIRE', job_key, ttl)
    redis.call('EXPIRE', history_key, ttl)
    local expired = tonumber(request.now) - ttl  -- entries whose jobs the TTL removed
    redis.call('ZREMRANGEBYSCORE', layout.index_prefix .. request.target, '-inf', expired)
    redis.call('ZREMRANGEBYSCORE', state_scope(layout.index_prefix, request.target, provider),
      '-inf', expired)
    redis.call('ZREM', due_key, request.key)
  else
    if left_dlq then  -- leaving the DLQ (replay): the job is live again, keep it
      redis.call('PERSIST', job_key)
      redis.call('PERSIST', history_key)
      redis.call('ZADD', waiting, request.now, request.key)
    end
    if request.due ~= '' then redis.call('ZADD', due_key, request.due, request.key) end
  end
  local flagged = 0
  if request.flag_key ~= '' then
    flagged = schedule_sweep(request.flag_key, request.flag_value, request.flag_ttl, '0')
  end
  return {1, state, flagged, checked}
end
