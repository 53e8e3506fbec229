-- create.lua: create a job in its initial state, or recognise the identical grant, in one
-- step; a job created in the DLQ (a message that failed validation) is filed there too.
-- uses: dlq.lua, era.lua
--
-- KEYS[1] job_key          the job hash
-- KEYS[2] history_key      the job's history list
-- KEYS[3] index_key        the index of the initial state
-- KEYS[4] due_key          the due index
-- KEYS[5] provider_index   the provider's index of the initial state
-- KEYS[6] waiting_key      the unfinished jobs of the provider and lane
-- ARGV[1] fingerprint      the grant's fingerprint: the same one is a duplicate
-- ARGV[2] grant            the grant as stored (JSON)
-- ARGV[3] now              epoch seconds
-- ARGV[4] now_iso          the same, ISO-8601
-- ARGV[5] provider
-- ARGV[6] customer_id
-- ARGV[7] key              the idempotency key
-- ARGV[8] state            the initial state
-- ARGV[9] reason           for the first history entry
-- ARGV[10] ttl             the retention TTL in seconds (0: keep; the job is due)
-- ARGV[11] last_error      JSON ('' none)
-- ARGV[12] dlq_all         the DLQ sets (dlq.lua)
-- ARGV[13] dlq_by_provider
-- ARGV[14] dlq_by_reason
-- ARGV[15] dlq_reason      the reason class when the job starts in the DLQ, else ''
-- ARGV[16] incarnation     the salt of the job's marker (grant.marker_for)
-- ARGV[17] priority        the grant's lane
-- ARGV[18] batch_key       the batch's set of keys ('' when handed over in no batch)
-- ARGV[19] batch           the batch's name
-- ARGV[20] batch_ttl       seconds the batch's set lives after its last grant came
-- ARGV[21] era_key         the store's era hash (era.lua): a new job has made no POST, so it
--                          is stamped with the store's era (raised first after a promotion)
-- Returns 1 created, 0 duplicate, -1 conflict (another grant holds the key).

local job_key = KEYS[1]
local history_key = KEYS[2]
local index_key = KEYS[3]
local due_key = KEYS[4]
local provider_index = KEYS[5]
local waiting_key = KEYS[6]
local fingerprint = ARGV[1]
local grant = ARGV[2]
local now = ARGV[3]
local now_iso = ARGV[4]
local provider = ARGV[5]
local customer_id = ARGV[6]
local key = ARGV[7]
local state = ARGV[8]
local reason = ARGV[9]
local ttl = tonumber(ARGV[10])
local last_error = ARGV[11]
local layout = {dlq_all = ARGV[12], dlq_by_provider = ARGV[13], dlq_by_reason = ARGV[14]}
local dlq_reason = ARGV[15]
local incarnation = ARGV[16]
local priority = ARGV[17]
local batch_key = ARGV[18]
local batch = ARGV[19]
local batch_ttl = ARGV[20]
local era_key = ARGV[21]

local existing = redis.call('HGET', job_key, 'fingerprint')
if existing and existing ~= fingerprint then return -1 end
if batch_key ~= '' then  -- the batch counts its grants, those accepted before it too
  redis.call('ZADD', batch_key, 'NX', now, key)
  redis.call('EXPIRE', batch_key, batch_ttl)
end
if existing then return 0 end
redis.call('HSET', job_key, 'fingerprint', fingerprint, 'grant', grant, 'state', state,
  'attempts', 0, 'version', 0, 'created_at', now, 'updated_at', now, 'state_at', now,
  'provider', provider, 'customer_id', customer_id, 'incarnation', incarnation,
  'priority', priority, 'era', (store_era(era_key, now)))
if last_error ~= '' then redis.call('HSET', job_key, 'last_error', last_error) end
if batch_key ~= '' then redis.call('HSET', job_key, 'batch', batch) end
if dlq_reason ~= '' then
  redis.call('HSET', job_key, 'dlq_reason', dlq_reason)
  dlq_add(layout, key, provider, dlq_reason, now, ttl)
end
redis.call('RPUSH', history_key, cjson.encode({at=now_iso, to=state, reason=reason, attempt=0}))
redis.call('ZADD', index_key, now, key)
redis.call('ZADD', provider_index, now, key)
if ttl > 0 then
  redis.call('EXPIRE', job_key, ttl)
  redis.call('EXPIRE', history_key, ttl)
else
  redis.call('ZADD', due_key, now, key)
  redis.call('ZADD', waiting_key, now, key)
end
return 1
