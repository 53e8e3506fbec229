-- scope.lua: the names of the per-provider and per-customer sets (pending jobs, claimed
-- ledger entries, a provider's jobs in one state), from the prefix Python passes and the
-- provider and customer read from the job. A helper; worker/store/keys.py spells the same names (Keys.pending,
-- Keys.claimed, Keys.index), and tests/unit/test_lua.py checks that the two agree.

-- One customer's set: prefix, provider, ':', customer id.
local function customer_scope(prefix, provider, customer_id)
  return prefix .. provider .. ':' .. customer_id
end

-- The whole provider's set: prefix, provider.
local function provider_scope(prefix, provider)
  return prefix .. provider
end

-- The provider's jobs in one state: the index prefix, the state, ':', the provider.
local function state_scope(prefix, state, provider)
  return prefix .. state .. ':' .. provider
end
