-- schedule.lua: schedule_sweep, setting a provider's sweep marker. A helper, composed into
-- schedule_sweep.lua and (for a move's flag) move.lua.
--
-- The marker names the one scheduled confirmation sweep and when it is due: "token@due"
-- (epoch seconds). A sweep wanted earlier than the scheduled one replaces it (the later
-- message then finds another token and stands down), so a credit that shows at the learned
-- lag is never left waiting for a sweep an older job's grown poll interval pushed out; one
-- wanted later is already served. `force` ('1') replaces it in any case.
--
-- schedule_sweep(key, value "token@due", ttl in ms, force '1' | '0')
-- Returns 1 when this call set the marker (its caller sends the sweep's message), else 0.

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
