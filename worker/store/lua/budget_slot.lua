-- budget_slot.lua: take_slot(), taking one call slot of a provider's budget (a GCRA with
-- no burst: slots `interval` apart). A helper, composed into budget_acquire.lua and into
-- begin_post.lua, which takes the slot and starts the job's POST in the same step.
-- uses: budget_clock.lua
--
-- take_slot(minute_prefix, pause_key, tat_key, clock, interval, bucket_ttl)
--   minute_prefix  the minute buckets' prefix (budget_clock.lua)
--   pause_key      the fleet-wide pause
--   tat_key        when the next slot opens (the theoretical arrival time)
--   clock          the caller's clock ('' for the server's TIME)
--   interval       microseconds between slots
--   bucket_ttl     seconds a minute bucket lives
-- Returns {0 (slot taken) or the microseconds to wait, the time of the decision}.

local function take_slot(minute_prefix, pause_key, tat_key, clock, interval, bucket_ttl)
  local now = clock_now(clock)
  local paused = paused_for(pause_key, now)
  if paused > 0 then return {paused, now} end
  local tat = tonumber(redis.call('GET', tat_key) or '0')
  if tat > now then return {tat - now, now} end
  interval = tonumber(interval)
  redis.call('SET', tat_key, string.format('%d', now + interval),
    'PX', math.ceil(interval / 1000) + 1000)
  local bucket = bucket_of(minute_prefix, minute_of(now))
  redis.call('HINCRBY', bucket, 'calls', 1)
  redis.call('HINCRBY', bucket, 's' .. (math.floor(now / 1000000) % 60), 1)
  redis.call('EXPIRE', bucket, bucket_ttl)
  return {0, now}
end
