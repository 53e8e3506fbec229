-- budget_turn.lua: take_turn(), a call slot of a provider's budget taken in turn. A helper,
-- composed into budget_acquire.lua and into begin_post.lua, which takes the turn and starts
-- the job's POST in the same step; with read_turn(), which reads its arguments by name.
-- uses: budget_clock.lua
--
-- Slots are a GCRA with no burst: `interval` apart, the next one at the time in tat_key.
-- Callers who find no slot do not race for the next one: each holds a ticket in the
-- provider's queue (a sorted set), in its class, in the order it came:
--   0 interactive listing reads, 1 interactive POSTs, 2 bulk reads, 3 bulk POSTs.
-- A caller near enough the front for a slot within `horizon` reserves it (the next free
-- one) and waits for it in its thread, so a slot is used on time and none is lost to a
-- countdown that fires late; any other caller is told when its turn should come, less half
-- the horizon, and comes back then with the same ticket: a thousand waiting grants make a
-- thousand calls over the drain, not a thousand per slot. An owner more than `grace` past
-- the time it was told keeps its place but no longer holds up the ones behind it; one gone
-- FORGET_US is forgotten. The fleet-wide pause holds for every class. While bulk tickets
-- wait, every `share`-th slot goes to the oldest of them, so no bulk grant starves however
-- many interactive ones come.
--
-- The arguments, by name (TURN, in the order budget.py's TURN_ARGS passes them; a unit test
-- keeps the two lists equal):
--   minute_prefix  the minute buckets' prefix (budget_clock.lua)
--   pause_key      the fleet-wide pause
--   tat_key        when the next slot opens (the theoretical arrival time)
--   queue_key      the tickets waiting, by class and arrival
--   promised_key   per ticket, when its owner said it would come back
--   lanes_key      a hash: `seq`, the ticket counter, and `owed`, interactive slots in a row
--                  while bulk tickets waited
--   clock          the caller's clock ('' for the server's TIME)
--   interval       microseconds between slots
--   bucket_ttl     seconds a minute bucket lives
--   horizon        microseconds ahead a slot may be reserved and waited for
--   grace          microseconds an owner may be late before the others go past it
--   max_wait       the longest wait handed out, microseconds
--   share          after this many interactive slots in a row, one goes to a bulk ticket
--   ticket         the caller's ticket ('' for a caller that holds none: a slot only if it
--                  is free now and nobody waits)
--   class          the ticket's class (0 to 3)
-- take_turn returns {1, microseconds until the reserved slot, now} or {0, microseconds to
-- wait before asking again, now}.

local TURN = {'minute_prefix', 'pause_key', 'tat_key', 'queue_key', 'promised_key',
  'lanes_key', 'clock', 'interval', 'bucket_ttl', 'horizon', 'grace', 'max_wait', 'share',
  'ticket', 'class'}

local CLASS_SPAN = 1099511627776  -- 2^40: a ticket's score is class * CLASS_SPAN + arrival
local FIRST_BULK = 2  -- classes 2 and 3 are bulk
local FRONT = 64  -- tickets read from the queue at a time
local SCAN_CHUNKS = 16  -- at most this many chunks are read looking for present owners
local FORGET_US = 600000000  -- an owner this late is gone: its ticket is dropped
local SHORTEST_WAIT_US = 10000
local IDLE_TTL = 1800  -- seconds the queue keys outlive the last caller

-- argv[first], argv[first + 1]... as a table under TURN's names.
local function read_turn(argv, first)
  local t = {}
  for i, name in ipairs(TURN) do t[name] = argv[first + i - 1] end
  return t
end

local function count_call(t, at)
  local bucket = bucket_of(t.minute_prefix, minute_of(at))
  redis.call('HINCRBY', bucket, 'calls', 1)
  redis.call('HINCRBY', bucket, 's' .. (math.floor(at / 1000000) % 60), 1)
  redis.call('EXPIRE', bucket, t.bucket_ttl)
end

-- The queue's keys live IDLE_TTL past the last caller that holds a ticket.
local function keep_alive(t)
  for _, key in ipairs({t.queue_key, t.promised_key, t.lanes_key}) do
    redis.call('EXPIRE', key, IDLE_TTL)
  end
end

-- The caller's ticket in the queue, in its class, keeping its place if it has one.
local function place(t, ticket, class)
  local score = redis.call('ZSCORE', t.queue_key, ticket)
  if score then
    score = tonumber(score)
    if math.floor(score / CLASS_SPAN) == class then return end
    redis.call('ZADD', t.queue_key, class * CLASS_SPAN + score % CLASS_SPAN, ticket)
    return
  end
  local arrival = redis.call('HINCRBY', t.lanes_key, 'seq', 1)
  redis.call('ZADD', t.queue_key, class * CLASS_SPAN + arrival, ticket)
end

-- The tickets in the order they take slots, as far as the first `need` present ones: the
-- queue from its front, less the owners late past grace (the caller is never late), with
-- the oldest bulk ticket first when it is owed a slot. The queue is read a chunk at a time,
-- so owners gone in numbers at its front cannot hide the ones behind them. Also returns
-- whether a bulk ticket waits, and the slots interactive tickets took in a row.
local function in_turn(t, ticket, now, grace, need)
  local order, first_bulk = {}, nil
  local from = 0
  while #order <= need and from < FRONT * SCAN_CHUNKS do
    local front = redis.call('ZRANGE', t.queue_key, from, from + FRONT - 1, 'WITHSCORES')
    if #front == 0 then break end
    from = from + FRONT
    local names = {}
    for i = 1, #front, 2 do names[#names + 1] = front[i] end
    local promised = redis.call('HMGET', t.promised_key, unpack(names))
    for i, name in ipairs(names) do
      local back_by = tonumber(promised[i] or '')
      if back_by and now > back_by + FORGET_US then
        redis.call('ZREM', t.queue_key, name)
        redis.call('HDEL', t.promised_key, name)
        from = from - 1
      elseif name == ticket or not back_by or now <= back_by + grace then
        order[#order + 1] = name
        if not first_bulk and tonumber(front[2 * i]) >= FIRST_BULK * CLASS_SPAN then
          first_bulk = #order
        end
      end
    end
  end
  local bulk_waits = first_bulk ~= nil
  if not bulk_waits then  -- further back, if anywhere
    local deeper = redis.call('ZRANGEBYSCORE', t.queue_key, FIRST_BULK * CLASS_SPAN, '+inf',
      'LIMIT', 0, 1)
    if #deeper > 0 then
      bulk_waits = true
      order[#order + 1] = deeper[1]
      first_bulk = #order
    end
  end
  local owed = tonumber(redis.call('HGET', t.lanes_key, 'owed') or '0')
  if first_bulk and first_bulk > 1 and owed >= tonumber(t.share) then
    table.insert(order, 1, table.remove(order, first_bulk))
  end
  return order, bulk_waits, owed
end

local function take_turn(t)
  local now = clock_now(t.clock)
  local interval, horizon = tonumber(t.interval), tonumber(t.horizon)
  local grace, max_wait = tonumber(t.grace), tonumber(t.max_wait)
  local ticket, class = t.ticket, tonumber(t.class)
  local paused = paused_for(t.pause_key, now)
  local next_at = math.max(tonumber(redis.call('GET', t.tat_key) or '0'), now)
  if paused == 0 and next_at <= now and redis.call('ZCARD', t.queue_key) == 0 then
    -- the common case under the budget: a free slot and nobody waiting, no ticket needed
    redis.call('SET', t.tat_key, string.format('%d', now + interval),
      'PX', math.ceil(interval / 1000) + 1000)
    count_call(t, now)
    return {1, 0, now}
  end
  if ticket ~= '' then place(t, ticket, class) end
  if paused > 0 then next_at = math.max(next_at, now + paused) end
  local slots = 0  -- how many slots open within the horizon
  if next_at <= now + horizon then slots = math.floor((now + horizon - next_at) / interval) + 1 end
  local order, bulk_waits, owed = in_turn(t, ticket, now, grace, slots)
  local rank = nil
  for i, name in ipairs(order) do
    if name == ticket then rank = i - 1; break end
  end
  local mine
  if ticket == '' then
    mine = #order == 0 and next_at <= now
  else
    mine = paused == 0 and rank ~= nil and rank < slots
  end
  if mine then
    redis.call('SET', t.tat_key, string.format('%d', next_at + interval),
      'PX', math.ceil((next_at + interval - now) / 1000) + 1000)
    count_call(t, next_at)
    if ticket ~= '' then
      redis.call('ZREM', t.queue_key, ticket)
      redis.call('HDEL', t.promised_key, ticket)
      if class >= FIRST_BULK then owed = 0 elseif bulk_waits then owed = owed + 1 end
      redis.call('HSET', t.lanes_key, 'owed', owed)
      keep_alive(t)
    end
    return {1, next_at - now, now}
  end
  local ahead = rank
  if ahead == nil then
    if ticket == '' then ahead = #order else ahead = redis.call('ZRANK', t.queue_key, ticket) end
  end
  if ticket ~= '' and class >= FIRST_BULK then
    -- the interactive tickets ahead take all but one slot in share + 1 from the bulk ones
    local share = tonumber(t.share)
    local interactive = redis.call('ZCOUNT', t.queue_key, 0, FIRST_BULK * CLASS_SPAN - 1)
    local bulk_ahead = math.max(ahead - interactive, 0)
    ahead = bulk_ahead + math.min(interactive, math.max(share - owed, 0) + bulk_ahead * share)
  end
  local wait = next_at - now + ahead * interval
  if ticket ~= '' then wait = wait - horizon / 2 end  -- back early enough to reserve its slot
  wait = math.min(math.max(wait, SHORTEST_WAIT_US), max_wait)
  if paused > 0 then wait = math.max(wait, paused) end
  if ticket ~= '' then
    redis.call('HSET', t.promised_key, ticket, string.format('%d', now + wait))
    keep_alive(t)
  end
  return {0, wait, now}
end
