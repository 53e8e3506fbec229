-- dlq.lua: a job's entries in the dead-letter sets (every DLQ job, by provider, by reason
-- class; score: when it entered). A helper, composed into the scripts that name it.
--
-- Every function takes `layout`, a table holding the three set names Python passes
-- (worker/store/keys.py, Keys.dlq_layout):
--   layout.dlq_all          the set of every DLQ job
--   layout.dlq_by_provider  the per-provider sets' prefix (the provider follows)
--   layout.dlq_by_reason    the per-reason sets' prefix (the reason class follows)

-- The three sets a job of `provider` in the DLQ for `reason` is filed in.
local function dlq_sets(layout, provider, reason)
  return {layout.dlq_all, layout.dlq_by_provider .. provider, layout.dlq_by_reason .. reason}
end

-- File `key` in the sets at `now`; with a retention `ttl` (> 0), forget entries past it.
local function dlq_add(layout, key, provider, reason, now, ttl)
  for _, set in ipairs(dlq_sets(layout, provider, reason)) do
    redis.call('ZADD', set, now, key)
    if ttl > 0 then redis.call('ZREMRANGEBYSCORE', set, '-inf', tonumber(now) - ttl) end
  end
end

-- Take `key` out of the sets it was filed in.
local function dlq_remove(layout, key, provider, reason)
  for _, set in ipairs(dlq_sets(layout, provider, reason)) do
    redis.call('ZREM', set, key)
  end
end
