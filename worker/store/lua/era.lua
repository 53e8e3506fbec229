-- era.lua: store_era(), the store's era: a number raised each time the store is found on a
-- master promoted from a replica (a failover). Replication is asynchronous, so a promoted
-- replica may lack the last moves its old master acknowledged, a move into submitting
-- among them: its POST left, and the job reads as if it never did. A job stamped with an
-- era older than the store's (field `era`, set by create.lua and by the check move.lua
-- makes) may have lost such a move, so it is not POSTed before the listing has spoken.
--
-- The master is told by INFO's master_replid, which changes on a promotion and on a
-- restart; only a promotion leaves master_replid2 set (the lineage it came from), and only
-- a promotion can lose acknowledged writes to a store that keeps an AOF (a restart replays
-- the file, fsynced before each POST: durability.py), so only a promotion raises the era.
-- A Redis without INFO in scripts (a test double) keeps its era as it is.
--
-- store_era(era_key, now)
--   era_key  the era hash: era, replid (the master last seen), since, promoted_from
--   now      epoch seconds, kept as `since` when the era is raised
-- Returns the era, raised first if this master is a promoted replica not seen before, and
-- when it was last raised (0 if never).
--
-- mark_reconciled.lua looks at each reconcile pass, so a promotion is seen within an
-- interval even on an idle store (a promoted master restarted before any script saw it
-- would show no lineage and forget the promotion).
--
-- create.lua looks too, though it costs an INFO per new job (enqueue_many 14-16% slower in
-- benchmarks/enqueue.py, runs interleaved; 6% for reading the era alone): a job created on
-- a promoted replica before any POST there raised the era would get the old one, and with
-- it a listing read and a lease's wait it does not need. Reads are what the providers'
-- budgets count (100 to 150 calls a minute); enqueue runs at some 1,500 grants a second.

local NO_REPLID = '0000000000000000000000000000000000000000'

local function store_era(era_key, now)
  local kept = redis.call('HMGET', era_key, 'era', 'since', 'replid')
  local era, since = tonumber(kept[1] or '0'), tonumber(kept[2] or '0')
  local ok, info = pcall(redis.call, 'INFO', 'replication')
  if not ok or type(info) ~= 'string' then return era, since end
  local replid = string.match(info, 'master_replid:(%x+)')
  if not replid or kept[3] == replid then return era, since end
  local promoted_from = string.match(info, 'master_replid2:(%x+)')
  if promoted_from and promoted_from ~= NO_REPLID then
    era, since = era + 1, tonumber(now)
    redis.call('HSET', era_key, 'era', era, 'since', now, 'promoted_from', promoted_from)
  end
  redis.call('HSET', era_key, 'replid', replid)
  return era, since
end
