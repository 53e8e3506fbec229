-- record_visibility.lua: what a provider's listing has shown lately, kept as maxima so that
-- concurrent sweeps can only raise them: `witness_at`, when the newest credit seen in a
-- listing was accepted; and the longest time any credit took to show, per hour
-- (`lag:<hour>`, this hour and the last kept). The hash is the provider's, not a job's.
--
-- KEYS[1] visibility_key   the provider's visibility hash
-- ARGV[1] accepted_at      when the newest credit seen was accepted (epoch seconds)
-- ARGV[2] took             the longest one of them took to show (seconds)
-- ARGV[3] now              epoch seconds
-- Returns 1.

local visibility_key = KEYS[1]
local accepted_at = ARGV[1]
local took = ARGV[2]
local now = tonumber(ARGV[3])

local function raise(field, value)
  local old = tonumber(redis.call('HGET', visibility_key, field) or '-1')
  if tonumber(value) > old then redis.call('HSET', visibility_key, field, value) end
end
raise('witness_at', accepted_at)
local hour = math.floor(now / 3600)
raise('lag:' .. hour, took)
for _, field in ipairs(redis.call('HKEYS', visibility_key)) do
  local h = tonumber(string.match(field, '^lag:(%d+)$') or '')
  if h and h < hour - 1 then redis.call('HDEL', visibility_key, field) end
end
redis.call('EXPIRE', visibility_key, 7 * 86400)
return 1
