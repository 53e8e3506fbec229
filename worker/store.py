"""The Redis job store: one hash per job, its history, and one sorted set per state.

Every change of state is a Lua compare-and-set, so two workers racing on one
job can never both win, and no move outside ``worker.states.ALLOWED`` can
happen. The per-state sorted sets (score: when the job entered the state) make
counting, the DLQ and the reconciler's "stuck since" queries range reads
instead of scans, the way rq keeps one registry per state.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from worker.errors import EntryClaimed, IdempotencyConflict, TransitionRefused
from worker.job import Job, iso
from worker.models import CreditGrant
from worker.settings import get_settings
from worker.states import DlqReason, JobState, sources_of

PREFIX = "creditq"
HISTORY_LIMIT = 200  # a job that needs more moves than this has a bug; keep memory bounded


class Keys:
    """The one place Redis key names are spelled."""

    @staticmethod
    def job(idempotency_key: str) -> str:
        return f"{PREFIX}:job:{idempotency_key}"

    @staticmethod
    def history(idempotency_key: str) -> str:
        return f"{PREFIX}:job:{idempotency_key}:history"

    INDEX_PREFIX = f"{PREFIX}:state:"
    # Jobs waiting in submitting/submitted, per provider and customer: one listing read
    # confirms every job it shows.
    PENDING_PREFIX = f"{PREFIX}:pending:"
    # When each unfinished job should next be worked on; the reconciler re-drives the overdue.
    DUE = f"{PREFIX}:due"

    @staticmethod
    def index(state: JobState) -> str:
        return f"{Keys.INDEX_PREFIX}{state.value}"

    @staticmethod
    def pending(provider: str, customer_id: str | None) -> str:
        """Per customer, or (``None``) for every customer of the provider."""
        if customer_id is None:
            return f"{Keys.PENDING_PREFIX}{provider}"
        return f"{Keys.PENDING_PREFIX}{provider}:{customer_id}"

    # Ledger entries already used to confirm a job, per provider and customer: each entry
    # confirms one job only.
    CLAIMED_PREFIX = f"{PREFIX}:claimed:"

    @staticmethod
    def claimed(provider: str, customer_id: str) -> str:
        return f"{Keys.CLAIMED_PREFIX}{provider}:{customer_id}"

    # The dead-letter queue: every rejected or dead job, by time, and by provider and by
    # reason class, so filtered listings stay range reads at 100,000 entries.
    DLQ_PREFIX = f"{PREFIX}:dlq:"

    @staticmethod
    def dlq(provider: str | None = None, reason: str | None = None) -> str:
        if provider is not None:
            return f"{Keys.DLQ_PREFIX}provider:{provider}"
        if reason is not None:
            return f"{Keys.DLQ_PREFIX}reason:{reason}"
        return f"{Keys.DLQ_PREFIX}all"

    @staticmethod
    def learned_delay(provider: str) -> str:
        """The learned delay before a listing first shows a credit (see LearnedLag)."""
        return f"{PREFIX}:lag:{provider}"

    @staticmethod
    def confirming(provider: str, customer_id: str | None) -> str:
        """Set while a listing read is scheduled for the customer (``None``: for the whole
        provider): one read serves every pending job it can show."""
        return f"{PREFIX}:confirming:{provider}:{customer_id or '*'}"


# Index a job into the DLQ sets (all, by provider, by reason); spelled once, used by both
# scripts. The key names follow Keys.dlq.
_DLQ_ADD = """
local function dlq_add(prefix, key, provider, reason, now, ttl)
  for _, set in ipairs({prefix .. 'all', prefix .. 'provider:' .. provider,
                        prefix .. 'reason:' .. reason}) do
    redis.call('ZADD', set, now, key)
    if ttl > 0 then redis.call('ZREMRANGEBYSCORE', set, '-inf', tonumber(now) - ttl) end
  end
end
"""

# KEYS: job, history, index of the initial state, due index. ARGV: 1 fingerprint,
# 2 grant json, 3 now, 4 now iso, 5 provider, 6 customer id, 7 idempotency key,
# 8 initial state, 9 reason, 10 ttl (0: keep), 11 last_error json ('' none),
# 12 DLQ prefix, 13 DLQ reason class ('' not in the DLQ).
# Returns 1 created, 0 duplicate, -1 conflict.
_CREATE = (
    _DLQ_ADD
    + """
local fp = redis.call('HGET', KEYS[1], 'fingerprint')
if fp then
  if fp == ARGV[1] then return 0 end
  return -1
end
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'grant', ARGV[2], 'state', ARGV[8],
  'attempts', 0, 'version', 0, 'created_at', ARGV[3], 'updated_at', ARGV[3], 'state_at', ARGV[3],
  'provider', ARGV[5], 'customer_id', ARGV[6])
if ARGV[11] ~= '' then redis.call('HSET', KEYS[1], 'last_error', ARGV[11]) end
if ARGV[13] ~= '' then
  redis.call('HSET', KEYS[1], 'dlq_reason', ARGV[13])
  dlq_add(ARGV[12], ARGV[7], ARGV[5], ARGV[13], ARGV[3], tonumber(ARGV[10]))
end
redis.call('RPUSH', KEYS[2], cjson.encode({at=ARGV[4], to=ARGV[8], reason=ARGV[9], attempt=0}))
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[7])
local ttl = tonumber(ARGV[10])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
else
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[7])
end
return 1
"""
)

# KEYS: job, history, due index. ARGV: 1 idempotency key, 2 target state, 3 allowed
# sources (space separated), 4 now, 5 now iso, 6 reason, 7 attempts: keep|incr|decr|reset,
# 8 ttl (0: not terminal), 9 index prefix, 10 history limit, 11 pending prefix,
# 12 due ('' leaves it), 13 claimed-entries prefix ('' no claim), 14 entry ref to claim,
# 15 DLQ prefix, 16 DLQ reason class (entering the DLQ) or '', 17 expected version ('' any),
# 18 flag key to set if absent ('' none), 19 its ttl in ms, 20.. field/value pairs
# ('' deletes). Returns {1, previous state, flag set 0|1}, {0, current state or ''},
# or {0, state, 'claimed'}.
_TRANSITION = (
    _DLQ_ADD
    + """
local job = redis.call('HMGET', KEYS[1], 'state', 'version', 'provider', 'customer_id',
  'dlq_reason', 'attempts')
local state = job[1]
if not state then return {0, ''} end
local allowed = false
for s in string.gmatch(ARGV[3], '%S+') do
  if s == state then allowed = true end
end
if not allowed then return {0, state} end
if ARGV[17] ~= '' and job[2] ~= ARGV[17] then return {0, state} end
local provider = job[3]
local scope = provider .. ':' .. job[4]
local left_dlq = job[5]
local claimed = ARGV[13] .. scope
if ARGV[13] ~= '' and redis.call('SISMEMBER', claimed, ARGV[14]) == 1 then
  return {0, state, 'claimed'}
end
local attempts = tonumber(job[6] or '0')
if ARGV[7] == 'incr' then attempts = attempts + 1
elseif ARGV[7] == 'decr' then attempts = math.max(attempts - 1, 0)
elseif ARGV[7] == 'reset' then attempts = 0 end
local set = {'state', ARGV[2], 'attempts', attempts, 'updated_at', ARGV[4],
  'state_at', ARGV[4], 'version', tonumber(job[2] or '0') + 1}
local unset = {}
for i = 20, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    table.insert(unset, ARGV[i])
  else
    table.insert(set, ARGV[i])
    table.insert(set, ARGV[i + 1])
  end
end
redis.call('HSET', KEYS[1], unpack(set))
if #unset > 0 then redis.call('HDEL', KEYS[1], unpack(unset)) end
redis.call('RPUSH', KEYS[2], cjson.encode({at=ARGV[5], from=state, to=ARGV[2],
  reason=ARGV[6], attempt=attempts}))
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[10]), -1)
if state ~= ARGV[2] then
  redis.call('ZREM', ARGV[9] .. state, ARGV[1])
  redis.call('ZADD', ARGV[9] .. ARGV[2], ARGV[4], ARGV[1])
end
local was_pending = state == 'submitting' or state == 'submitted'
local is_pending = ARGV[2] == 'submitting' or ARGV[2] == 'submitted'
if was_pending ~= is_pending then
  for _, pending in ipairs({ARGV[11] .. scope, ARGV[11] .. provider}) do
    if is_pending then
      redis.call('ZADD', pending, 'NX', ARGV[4], ARGV[1])
    else
      redis.call('ZREM', pending, ARGV[1])
    end
  end
end
local ttl = tonumber(ARGV[8])
if left_dlq then
  for _, set in ipairs({ARGV[15] .. 'all', ARGV[15] .. 'provider:' .. provider,
                        ARGV[15] .. 'reason:' .. left_dlq}) do
    redis.call('ZREM', set, ARGV[1])
  end
  redis.call('HDEL', KEYS[1], 'dlq_reason')
end
if ARGV[16] ~= '' then
  redis.call('HSET', KEYS[1], 'dlq_reason', ARGV[16])
  dlq_add(ARGV[15], ARGV[1], provider, ARGV[16], ARGV[4], ttl)
end
if ARGV[13] ~= '' then
  redis.call('SADD', claimed, ARGV[14])
  redis.call('EXPIRE', claimed, math.max(ttl, 86400))
end
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('ZREMRANGEBYSCORE', ARGV[9] .. ARGV[2], '-inf', tonumber(ARGV[4]) - ttl)
  redis.call('ZREM', KEYS[3], ARGV[1])
else
  if left_dlq then  -- leaving the DLQ (replay): the job is live again, keep it
    redis.call('PERSIST', KEYS[1])
    redis.call('PERSIST', KEYS[2])
  end
  if ARGV[12] ~= '' then redis.call('ZADD', KEYS[3], ARGV[12], ARGV[1]) end
end
local flagged = 0
if ARGV[18] ~= '' and redis.call('SET', ARGV[18], '1', 'NX', 'PX', ARGV[19]) then flagged = 1 end
return {1, state, flagged}
"""
)


@dataclass(frozen=True)
class Move:
    """One requested move of a job; ``JobStore.transition`` documents each field."""

    idempotency_key: str
    target: JobState
    reason: str
    expect: Iterable[JobState] | None = None
    attempts: str = "keep"
    fields: Mapping[str, Any] | None = None
    due: float | None = None
    claim: str | None = None
    dlq_reason: DlqReason | None = None
    version: int | None = None
    flag: tuple[str, float] | None = None


@dataclass(frozen=True)
class Moved:
    """What a successful move did: the state it left, and whether it set the flag."""

    previous: JobState
    flagged: bool = False


@dataclass(frozen=True)
class CreateOutcome:
    """What one atomic create did: ``created`` False means an identical grant already existed."""

    idempotency_key: str
    created: bool
    conflict: bool = False


class JobStore:
    """Jobs in Redis. Construct with a client that decodes responses (``from_url`` does)."""

    def __init__(self, client: redis.Redis, *, ttl_seconds: int | None = None) -> None:
        self.redis = client
        self.ttl_seconds = (
            ttl_seconds if ttl_seconds is not None else get_settings().job_ttl_seconds
        )
        self._create = client.register_script(_CREATE)
        self._transition = client.register_script(_TRANSITION)

    @classmethod
    def from_url(cls, url: str | None = None, **kwargs: Any) -> JobStore:
        client = redis.Redis.from_url(url or get_settings().redis_url, decode_responses=True)
        return cls(client, **kwargs)

    # -- creating -----------------------------------------------------------------

    def _create_args(self, grant: CreditGrant, now: float) -> tuple[list[str], list[Any]]:
        key = grant.idempotency_key
        keys = [Keys.job(key), Keys.history(key), Keys.index(JobState.QUEUED), Keys.DUE]
        payload = json.dumps(grant.to_message(), sort_keys=True, separators=(",", ":"))
        args = [grant.fingerprint(), payload, repr(now), iso(now), grant.provider.value,
                grant.customer_id, key, JobState.QUEUED.value, "enqueued", 0, "",
                Keys.DLQ_PREFIX, ""]  # fmt: skip
        return keys, args

    def create_rejected(
        self, idempotency_key: str, raw: Mapping[str, Any], error: dict[str, Any]
    ) -> bool:
        """Record a message that failed validation and has no job: visible in the DLQ.

        Such a message bypassed the producer; keeping it (fields cut to a safe size)
        lets an operator see what arrived. Returns False if a job already exists.
        """
        now = time.time()
        safe = {str(k)[:40]: (v if isinstance(v, bool | int | None) else str(v)[:200])
                for k, v in list(raw.items())[:16]}  # fmt: skip
        keys = [Keys.job(idempotency_key), Keys.history(idempotency_key),
                Keys.index(JobState.REJECTED), Keys.DUE]  # fmt: skip
        args: list[Any] = ["invalid", json.dumps(safe, sort_keys=True, default=str), repr(now),
                iso(now),
                str(raw.get("provider", ""))[:40], str(raw.get("customer_id", ""))[:100],
                idempotency_key, JobState.REJECTED.value, f"invalid: {error['message']}",
                self.ttl_seconds, json.dumps(error), Keys.DLQ_PREFIX,
                DlqReason.INVALID.value]  # fmt: skip
        return int(self._create(keys=keys, args=args)) == 1

    def create(self, grant: CreditGrant, *, now: float | None = None) -> CreateOutcome:
        """Create the job ``queued``, or recognise the identical grant; refuse a different one."""
        keys, args = self._create_args(grant, time.time() if now is None else now)
        outcome = self._outcome(grant.idempotency_key, int(self._create(keys=keys, args=args)))
        if outcome.conflict:
            raise IdempotencyConflict(grant.idempotency_key)
        return outcome

    def create_many(self, grants: Sequence[CreditGrant]) -> list[CreateOutcome]:
        """One round trip for the whole batch; each grant is still its own atomic step.

        Conflicts are reported in the outcomes, not raised: the other grants of the
        batch are already written and their callers need them published.
        """
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        for grant in grants:
            keys, args = self._create_args(grant, now)
            self._create(keys=keys, args=args, client=pipe)
        results = pipe.execute()
        return [
            self._outcome(g.idempotency_key, int(r)) for g, r in zip(grants, results, strict=True)
        ]

    @staticmethod
    def _outcome(key: str, code: int) -> CreateOutcome:
        return CreateOutcome(key, created=code == 1, conflict=code == -1)

    def fingerprints(self, keys: Iterable[str]) -> dict[str, str | None]:
        pipe = self.redis.pipeline(transaction=False)
        keys = list(keys)
        for key in keys:
            pipe.hget(Keys.job(key), "fingerprint")
        return dict(zip(keys, pipe.execute(), strict=True))

    # -- reading ------------------------------------------------------------------

    def get(self, idempotency_key: str, *, history: bool = True) -> Job | None:
        if not history:  # the workers' hot path: one HGETALL
            fields = cast(dict[str, str], self.redis.hgetall(Keys.job(idempotency_key)))
            return Job.from_redis(fields, []) if fields else None
        return self.get_many([idempotency_key])[0]

    def get_many(self, keys: Sequence[str], *, history: bool = True) -> list[Job | None]:
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(Keys.job(key))
            if history:
                pipe.lrange(Keys.history(key), 0, -1)
        replies = pipe.execute()
        if not history:
            return [Job.from_redis(fields, []) if fields else None for fields in replies]
        return [
            Job.from_redis(fields, hist) if fields else None
            for fields, hist in zip(replies[::2], replies[1::2], strict=True)
        ]

    def get_with_due(self, keys: Sequence[str]) -> tuple[list[Job | None], dict[str, float | None]]:
        """Jobs (without history) and when each is next due, in one round trip."""
        if not keys:
            return [], {}
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(Keys.job(key))
        pipe.zmscore(Keys.DUE, list(keys))
        *hashes, scores = pipe.execute()
        jobs = [Job.from_redis(fields, []) if fields else None for fields in hashes]
        return jobs, dict(zip(keys, scores, strict=True))

    def count_by_state(self) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for state in JobState:
            pipe.zcard(Keys.index(state))
        return {state.value: int(n) for state, n in zip(JobState, pipe.execute(), strict=True)}

    def oldest(self, states: Iterable[JobState]) -> dict[str, float | None]:
        """When the longest-waiting job of each state entered it (epoch seconds), or None."""
        states = list(states)
        pipe = self.redis.pipeline(transaction=False)
        for state in states:
            pipe.zrange(Keys.index(state), 0, 0, withscores=True)
        return {
            state.value: (float(first[0][1]) if first else None)
            for state, first in zip(states, pipe.execute(), strict=True)
        }

    def keys_in_state(
        self, state: JobState, *, entered_before: float | None = None, limit: int = 1000
    ) -> list[str]:
        """Keys of jobs in ``state``, oldest first; ``entered_before`` finds the stuck ones."""
        high = "+inf" if entered_before is None else repr(entered_before)
        found = self.redis.zrangebyscore(Keys.index(state), "-inf", high, start=0, num=limit)
        return cast(list[str], found)

    # -- moving -------------------------------------------------------------------

    def transition(
        self,
        idempotency_key: str,
        target: JobState,
        *,
        reason: str,
        expect: Iterable[JobState] | None = None,
        attempts: str = "keep",
        fields: Mapping[str, Any] | None = None,
        due: float | None = None,
        claim: str | None = None,
        dlq_reason: DlqReason | None = None,
        version: int | None = None,
        flag: tuple[str, float] | None = None,
        now: float | None = None,
    ) -> Moved:
        """Move the job to ``target`` if it is in an allowed source state; return where it was.

        ``expect`` narrows the sources further (a caller that saw ``submitting``
        says so, and loses the race if another worker moved the job first).
        ``fields`` are set on the job (``None`` deletes; non-strings are stored as
        JSON). ``due`` is when the job should next be worked on (the reconciler re-drives
        it if nothing has by then); ``claim`` marks a ledger entry as this job's, refusing
        the move if another job already claimed it. ``version`` makes the move fail if any
        other move happened since the job was read (optimistic concurrency: two deliveries
        of one job cannot both win). ``flag`` is a (key, seconds) marker set if absent in the
        same step; ``Moved.flagged`` says whether this move set it. Raises
        ``TransitionRefused`` (or its ``EntryClaimed``) when the compare-and-set fails.
        """
        move = Move(idempotency_key, target, reason, expect, attempts, fields, due, claim,
                    dlq_reason, version, flag)  # fmt: skip
        keys, args = self._move_args(move, time.time() if now is None else now)
        outcome = self._outcome_of(move, self._transition(keys=keys, args=args))
        if isinstance(outcome, TransitionRefused):
            raise outcome
        return outcome

    def transition_many(self, moves: Sequence[Move]) -> list[Moved | TransitionRefused]:
        """Several independent moves in one round trip (e.g. every job one listing read
        confirmed); each is still its own compare-and-set, and succeeds or fails alone."""
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        for move in moves:
            keys, args = self._move_args(move, now)
            self._transition(keys=keys, args=args, client=pipe)
        return [self._outcome_of(m, r) for m, r in zip(moves, pipe.execute(), strict=True)]

    def _move_args(self, move: Move, now: float) -> tuple[list[str], list[Any]]:
        if move.attempts not in ("keep", "incr", "decr", "reset"):
            raise ValueError(f"attempts must be keep, incr, decr or reset, not {move.attempts!r}")
        if move.target.dead_letter != (move.dlq_reason is not None):
            raise ValueError("a move into the DLQ (and only such a move) needs a dlq_reason")
        sources = sources_of(move.target)
        if move.expect is not None:
            sources = sources & frozenset(move.expect)
        due, flag = move.due, move.flag
        args: list[Any] = [
            move.idempotency_key, move.target.value, " ".join(sorted(s.value for s in sources)),
            repr(now), iso(now), move.reason, move.attempts,
            self.ttl_seconds if move.target.terminal else 0, Keys.INDEX_PREFIX, HISTORY_LIMIT,
            Keys.PENDING_PREFIX, "" if due is None else repr(due), "", "",
            Keys.DLQ_PREFIX, move.dlq_reason.value if move.dlq_reason else "",
            "" if move.version is None else str(move.version),
            flag[0] if flag else "", int(flag[1] * 1000) if flag else 0,
        ]  # fmt: skip
        if move.claim is not None:
            args[12:14] = [Keys.CLAIMED_PREFIX, move.claim]
        for name, value in (move.fields or {}).items():
            args += [name, _encode_field(value)]
        key = move.idempotency_key
        return [Keys.job(key), Keys.history(key), Keys.DUE], args

    @staticmethod
    def _outcome_of(move: Move, reply: Any) -> Moved | TransitionRefused:
        if not int(reply[0]):
            if len(reply) > 2:
                return EntryClaimed(move.idempotency_key, str(move.claim))
            return TransitionRefused(move.idempotency_key, reply[1] or None, move.target.value)
        return Moved(JobState(reply[1]), bool(int(reply[2])))

    # -- scheduling and leases ----------------------------------------------------

    def set_due(self, idempotency_key: str, at: float) -> None:
        """Record when the job is next expected to be worked on (only for unfinished jobs)."""
        self.redis.zadd(Keys.DUE, {idempotency_key: at}, xx=True)

    def forget_due(self, idempotency_key: str) -> None:
        self.redis.zrem(Keys.DUE, idempotency_key)

    def overdue(self, before: float, limit: int = 500) -> list[str]:
        """Unfinished jobs nobody has worked on since they were due: lost or crashed work."""
        found = self.redis.zrangebyscore(Keys.DUE, "-inf", repr(before), start=0, num=limit)
        return cast(list[str], found)

    def pending(self, provider: str, customer_id: str | None) -> list[str]:
        """Keys of jobs in submitting or submitted, oldest first: the customer's, or (None)
        the provider's."""
        return cast(list[str], self.redis.zrange(Keys.pending(provider, customer_id), 0, -1))

    def claimed(self, provider: str, customer_id: str) -> set[str]:
        return cast(set[str], self.redis.smembers(Keys.claimed(provider, customer_id)))

    def take_flag(self, key: str, seconds: float) -> bool:
        """Set a marker if absent (e.g. "a confirmation read is scheduled"); True if set now."""
        return bool(self.redis.set(key, "1", nx=True, px=int(seconds * 1000)))

    def confirmation_work(
        self, provider: str, customer_id: str | None, *, clear: bool = False
    ) -> tuple[list[str], set[str]]:
        """Pending job keys and claimed entries of a customer (or, with ``None``, the
        pending jobs of the whole provider and no claims), in one round trip.

        ``clear`` first removes the "read scheduled" marker: a job submitted from then on
        schedules a read of its own instead of counting on this one.
        """
        pipe = self.redis.pipeline(transaction=False)
        if clear:
            pipe.delete(Keys.confirming(provider, customer_id))
        pipe.zrange(Keys.pending(provider, customer_id), 0, -1)
        if customer_id is not None:
            pipe.smembers(Keys.claimed(provider, customer_id))
        replies = pipe.execute()
        if customer_id is None:
            return list(replies[-1]), set()
        return list(replies[-2]), set(replies[-1])

    def learned_delay(self, provider: str) -> float | None:
        value = self.redis.get(Keys.learned_delay(provider))
        return float(value) if value is not None else None

    def set_learned_delay(self, provider: str, seconds: float) -> None:
        self.redis.set(Keys.learned_delay(provider), repr(round(seconds, 3)), ex=7 * 86400)

    def set_due_many(self, due: Mapping[str, float]) -> None:
        if due:
            self.redis.zadd(Keys.DUE, dict(due), xx=True)


def _encode_field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)
