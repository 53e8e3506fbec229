"""The Redis job store: one hash per job, its history, and one sorted set per state.

Every change of state is a Lua compare-and-set, so two workers racing on one
job can never both win, and no move outside ``worker.domain.states.ALLOWED`` can
happen. The per-state sorted sets (score: when the job entered the state) make
counting, the DLQ and the reconciler's "stuck since" queries range reads
instead of scans, the way rq keeps one registry per state.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import redis

from worker.budget import TURN_ARGS
from worker.domain.fields import JobField
from worker.domain.grant import CreditGrant, Priority, Provider, new_incarnation
from worker.domain.job import Job, iso
from worker.domain.states import DlqReason, JobState
from worker.errors import EntryClaimed, IdempotencyConflict, TransitionRefused
from worker.settings import get_settings
from worker.store import lua
from worker.store.connect import redis_client
from worker.store.durability import has_waitaof
from worker.store.fence import fence_for
from worker.store.keys import Keys
from worker.store.moves import (
    _LAYOUT_ARGS,
    Move,
    Moved,
    encode_field,
    job_of,
    move_args,
    outcome_of,
)

# How long a batch's set outlives its jobs' retention: time for a campaign to drain.
BATCH_DRAIN_SECONDS = 7 * 86400

log = logging.getLogger("creditq.store")


def sweep_marker(token: str, due_at: float) -> str:
    """The value of a provider's sweep marker: the scheduled sweep and when it is due."""
    return f"{token}@{due_at:.3f}"


@dataclass(frozen=True)
class Sweep:
    """What ``JobStore.start_sweep`` found: the pending jobs due, when the earliest of the
    others is due, and whether a newer schedule superseded this sweep (the marker names
    another token: that sweep covers everything, this one does nothing) or another sweep is
    running (it holds the lease)."""

    due: list[str]
    next_due: float | None
    superseded: bool
    busy: bool = False  # another sweep is running (``next_due``: its lease's time left)


@dataclass(frozen=True)
class Seen:
    """A pending job a listing read showed as ledger entry ``ref`` (``JobStore.confirm_seen``).

    ``state`` and ``version`` are the job as read: the move to ``confirmed`` expects them.
    """

    idempotency_key: str
    state: JobState
    version: int
    ref: str
    provider_ref: str
    entry: Mapping[str, Any]
    visible_after: float


@dataclass(frozen=True)
class Visibility:
    """What a provider's listing has shown lately (``JobStore.visibility``)."""

    witness_at: float | None
    lag: float | None


@dataclass(frozen=True)
class PostStart:
    """What ``JobStore.begin_post`` did.

    ``started``: the job (``job``, as it now stands) is ``submitting`` and its POST may go
    in ``wait`` seconds (when its reserved slot opens).
    ``unheld``: the move into ``submitting`` was made but not held (disk, replicas) in time:
    the POST must not leave. ``wait``: no budget slot for this job yet: ask again in
    ``wait`` seconds (its turn keeps its place); nothing else changed.
    ``checked``: the store's master was promoted since the job's last move, so instead of
    starting a POST the job moved into ``submitting`` with its outcome unknown, to wait for
    the listing (``store/lua/era.lua``); it took no slot. ``other``: the job is
    not a plain queued job holding this grant, and takes the full path; nothing changed.
    ``missing``: there is no such job (``job`` None).
    """

    outcome: str
    job: Job | None = None
    wait: float = 0.0


@dataclass(frozen=True)
class CreateOutcome:
    """What one atomic create did: ``created`` False means an identical grant already existed."""

    idempotency_key: str
    created: bool
    conflict: bool = False
    held: bool = True  # by the replicas CREDITQ_REDIS_MIN_REPLICAS asks for


class JobStore:
    """Jobs in Redis. Construct with a client that decodes responses (``from_url`` does)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        ttl_seconds: int | None = None,
        min_replicas: int | None = None,
    ) -> None:
        self.redis = client
        settings = get_settings()
        self.ttl_seconds = ttl_seconds if ttl_seconds is not None else settings.job_ttl_seconds
        self.min_replicas = (
            min_replicas if min_replicas is not None else settings.redis_min_replicas
        )
        self._aof_wait: bool | None = None  # WAITAOF usable: found out on first need
        self._fence = fence_for(client)  # behind Sentinels: they vouch before each POST
        self._create = lua.script(client, "create.lua")
        self._transition = lua.script(client, "transition.lua")
        self._begin_post = lua.script(client, "begin_post.lua")
        self._start_sweep = lua.script(client, "start_sweep.lua")
        self._hold_sweep = lua.script(client, "hold_sweep.lua")
        self._schedule_sweep = lua.script(client, "schedule_sweep.lua")
        self._confirm_seen = lua.script(client, "confirm_seen.lua")
        self._record_visibility = lua.script(client, "record_visibility.lua")
        self._raise_alarm = lua.script(client, "raise_alarm.lua")
        self._mark_reconciled = lua.script(client, "mark_reconciled.lua")

    @classmethod
    def from_url(cls, url: str | None = None, **kwargs: Any) -> JobStore:
        """The store ``url`` names (default ``CREDITQ_REDIS_URL``), Sentinels included."""
        settings = get_settings()
        client = redis_client(
            url or settings.redis_url, master=settings.redis_sentinel_master, decode_responses=True
        )
        return cls(client, **kwargs)

    # -- creating -----------------------------------------------------------------

    def _create_args(
        self, grant: CreditGrant, now: float, batch: str | None = None
    ) -> tuple[list[str], list[Any]]:
        key = grant.idempotency_key
        keys = [
            Keys.job(key),
            Keys.history(key),
            Keys.index(JobState.QUEUED),
            Keys.DUE,
            Keys.index(JobState.QUEUED, grant.provider.value),
            Keys.waiting(grant.provider.value, grant.priority.value),
        ]
        args = [
            grant.fingerprint(),
            payload_of(grant),
            repr(now),
            iso(now),
            grant.provider.value,
            grant.customer_id,
            key,
            JobState.QUEUED.value,
            "enqueued",
            0,
            "",
            *Keys.dlq_layout(),
            "",
            new_incarnation(),
            grant.priority.value,
            *self._batch_args(batch),
            Keys.ERA,
        ]
        return keys, args

    def _batch_args(self, batch: str | None) -> list[Any]:
        """create.lua's batch arguments: the set, the name, and how long the set lives
        (the retention of the jobs, and a week for the campaign to drain)."""
        if batch is None:
            return ["", "", 0]
        return [Keys.batch(batch), batch, self.ttl_seconds + BATCH_DRAIN_SECONDS]

    def create_rejected(
        self, idempotency_key: str, raw: Mapping[str, Any], error: dict[str, Any]
    ) -> bool:
        """Record a message that failed validation and has no job: visible in the DLQ.

        Such a message bypassed the producer; keeping it (fields cut to a safe size)
        lets an operator see what arrived. Returns False if a job already exists.
        """
        now = time.time()
        safe = {
            str(k)[:40]: (v if isinstance(v, bool | int | None) else str(v)[:200])
            for k, v in list(raw.items())[:16]
        }
        provider = str(raw.get("provider", ""))[:40]
        keys = [
            Keys.job(idempotency_key),
            Keys.history(idempotency_key),
            Keys.index(JobState.REJECTED),
            Keys.DUE,
            Keys.index(JobState.REJECTED, provider),
            Keys.waiting(provider, Priority.INTERACTIVE.value),  # not written: a DLQ job
        ]
        args: list[Any] = [
            "invalid",
            json.dumps(safe, sort_keys=True, default=str),
            repr(now),
            iso(now),
            provider,
            str(raw.get("customer_id", ""))[:100],
            idempotency_key,
            JobState.REJECTED.value,
            f"invalid: {error['message']}",
            self.ttl_seconds,
            json.dumps(error),
            *Keys.dlq_layout(),
            DlqReason.INVALID.value,
            new_incarnation(),
            Priority.INTERACTIVE.value,
            *self._batch_args(None),
            Keys.ERA,
        ]
        return int(self._create(keys=keys, args=args)) == 1

    def create(
        self, grant: CreditGrant, *, now: float | None = None, batch: str | None = None
    ) -> CreateOutcome:
        """Create the job ``queued``, or recognise the identical grant; refuse a different one.
        ``batch``: the name it is handed over under (a checked ``worker.domain.batch`` name)."""
        keys, args = self._create_args(grant, time.time() if now is None else now, batch)
        reply, held = self._run_replicated(lambda client: self._create(keys, args, client))
        outcome = self._outcome(grant.idempotency_key, int(reply[0]))
        if outcome.conflict:
            raise IdempotencyConflict(grant.idempotency_key)
        return replace(outcome, held=held)

    def create_many(
        self, grants: Sequence[CreditGrant], *, batch: str | None = None
    ) -> list[CreateOutcome]:
        """One round trip for the whole batch; each grant is still its own atomic step.

        Conflicts are reported in the outcomes, not raised: the other grants of the
        batch are already written and their callers need them published.
        """
        now = time.time()

        def create_all(client: Any) -> None:
            for grant in grants:
                keys, args = self._create_args(grant, now, batch)
                self._create(keys=keys, args=args, client=client)

        results, held = self._run_replicated(create_all)
        return [
            replace(self._outcome(g.idempotency_key, int(r)), held=held)
            for g, r in zip(grants, results, strict=True)
        ]

    def _run_replicated(self, write: Any) -> tuple[list[Any], bool]:
        """Run ``write`` (it queues commands on the client it is given) in one pipeline, with
        a WAIT for ``min_replicas`` replicas after it when some are asked for: the replies,
        and whether the replicas held the writes in time (True when none are asked)."""
        pipe = self.redis.pipeline(transaction=False)
        write(pipe)
        if self.min_replicas <= 0:
            return lua.execute(pipe), True
        pipe.execute_command("WAIT", self.min_replicas, HOLD_TIMEOUT_MS)  # type: ignore[no-untyped-call]
        *replies, replicas = lua.execute(pipe)
        return replies, int(replicas) >= self.min_replicas

    @staticmethod
    def _outcome(key: str, code: int) -> CreateOutcome:
        return CreateOutcome(key, created=code == 1, conflict=code == -1)

    def fingerprints(self, keys: Iterable[str]) -> dict[str, str | None]:
        pipe = self.redis.pipeline(transaction=False)
        keys = list(keys)
        for key in keys:
            pipe.hget(Keys.job(key), JobField.FINGERPRINT)
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

    def count_by_provider(self) -> dict[str, dict[str, int]]:
        """Jobs per state of each provider: ``{provider: {state: n}}``, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for provider in Provider:
            for state in JobState:
                pipe.zcard(Keys.index(state, provider.value))
        counts = iter(pipe.execute())
        return {p.value: {s.value: int(next(counts)) for s in JobState} for p in Provider}

    def batch_states(self, name: str) -> dict[str, int]:
        """How many of a batch's grants are in each state (``gone``: the job no longer
        exists, purged or past its retention), reading a thousand jobs a round trip."""
        keys = cast(list[str], self.redis.zrange(Keys.batch(name), 0, -1))
        counts = dict.fromkeys([s.value for s in JobState], 0)
        for start in range(0, len(keys), 1000):
            pipe = self.redis.pipeline(transaction=False)
            for key in keys[start : start + 1000]:
                pipe.hget(Keys.job(key), JobField.STATE)
            for state in pipe.execute():
                name_of = state if state in counts else "gone"
                counts[name_of] = counts.get(name_of, 0) + 1
        return counts

    def lanes(self) -> dict[str, dict[str, tuple[int, float | None]]]:
        """Unfinished jobs per provider and lane: how many, and since when the oldest has
        waited (accepted, or replayed; None when none waits), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for provider in Provider:
            for lane in Priority:
                pipe.zcard(Keys.waiting(provider.value, lane.value))
                pipe.zrange(Keys.waiting(provider.value, lane.value), 0, 0, withscores=True)
        replies = iter(pipe.execute())
        lanes: dict[str, dict[str, tuple[int, float | None]]] = {}
        for provider in Provider:
            for lane in Priority:
                count, first = int(next(replies)), next(replies)
                since = float(first[0][1]) if first else None
                lanes.setdefault(provider.value, {})[lane.value] = (count, since)
        return lanes

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
        flag: tuple[str, float, str] | None = None,
        now: float | None = None,
        detail: Mapping[str, Any] | None = None,
        post: float | None = None,
    ) -> Moved:
        """Move the job to ``target`` if it is in an allowed source state; return where it was.

        ``expect`` narrows the sources further (a caller that saw ``submitting``
        says so, and loses the race if another worker moved the job first).
        ``fields`` are set on the job (``None`` deletes; non-strings are stored as
        JSON). ``due`` is when the job should next be worked on (the reconciler re-drives
        it if nothing has by then); ``claim`` marks a ledger entry as this job's, refusing
        the move if another job already claimed it. ``version`` makes the move fail if any
        other move happened since the job was read (optimistic concurrency: two deliveries
        of one job cannot both win). ``flag`` is a (key, seconds, value) marker set if absent
        in the same step; ``Moved.flagged`` says whether this move set it. ``post``: the
        move starts a POST with a lease of that many seconds, so it must be durable first
        (``held``; see ``_run_held``), and it becomes a listing check instead
        (``Moved.checked``) when the store's master was promoted since the job's last move
        (``store/lua/era.lua``).
        ``detail`` (JSON-able) is kept as the ``detail`` object of the history entry the move
        appends, for what the reason's words do not carry (e.g. ``{"status": 500}``).
        Raises ``TransitionRefused`` (or its ``EntryClaimed``) when the compare-and-set fails.
        """
        move = Move(
            idempotency_key,
            target,
            reason,
            expect,
            attempts,
            fields,
            due,
            claim,
            dlq_reason,
            version,
            flag,
            detail,
            post=post,
        )
        keys, args = move_args(move, time.time() if now is None else now, self.ttl_seconds)
        reply, held = self._run_held(self._transition, keys, args, post is not None)
        outcome = outcome_of(move, reply)
        if isinstance(outcome, TransitionRefused):
            raise outcome
        return replace(outcome, held=held)

    # -- durable before the POST ------------------------------------------------------

    def _hold_commands(self) -> list[tuple[Any, ...]]:
        """What makes this connection's last write durable before a POST leaves: WAITAOF
        (Redis 7.2 and later, with the append-only file on) so it is on this server's disk,
        and WAIT for ``min_replicas`` replicas. Sent in the same pipeline as the move: both
        count the writes of their own connection only. Nothing when neither applies (an
        older Redis with AOF everysec can lose its last second on a host crash: run it with
        appendfsync always for the same guarantee)."""
        waits: list[tuple[Any, ...]] = []
        if self._aof_wait is None:
            self._aof_wait = _supports_waitaof(self.redis)
        if self._aof_wait:
            waits.append(("WAITAOF", 1, 0, HOLD_TIMEOUT_MS))
        if self.min_replicas > 0:
            waits.append(("WAIT", self.min_replicas, HOLD_TIMEOUT_MS))
        return waits

    def _run_held(
        self, script: Any, keys: list[str], args: list[Any], hold: bool
    ) -> tuple[Any, bool]:
        """Run a move script; with ``hold``, in one pipeline with what makes it durable
        (``_hold_commands``). Its reply, and whether the move is held (True without hold)."""
        waits = self._hold_commands() if hold else []
        if hold and self._fence is not None:
            waits.append(SERVER_IDENTITY)  # which server holds the move: the fence asks
        if not waits:
            return script(keys=keys, args=args), True
        pipe = self.redis.pipeline(transaction=False)
        script(keys=keys, args=args, client=pipe)
        reply, *answers = self._run_holding(pipe, waits)
        return reply, self._held(waits, answers)

    @staticmethod
    def _run_holding(pipe: Any, waits: list[tuple[Any, ...]]) -> list[Any]:
        for command in waits:
            pipe.execute_command(*command)
        return lua.execute(pipe)

    def _held(self, waits: list[tuple[Any, ...]], answers: list[Any]) -> bool:
        for command, answer in zip(waits, answers, strict=True):
            if command[0] == "WAITAOF" and int(answer[0]) < 1:
                return False
            if command[0] == "WAIT" and int(answer) < self.min_replicas:
                return False
            if command == SERVER_IDENTITY and self._fence is not None:
                found = self._fence.vouches_for(str(answer.get("run_id", "")))
                if not found.confirmed:
                    log.warning("a POST put off: %s", found.why)
                    return False
        return True

    def confirm_seen(self, seen: Sequence[Seen], *, now: float) -> list[Moved | TransitionRefused]:
        """Move every job one read found to ``confirmed``, in one round trip. Each move is the
        compare-and-set ``transition`` makes (the job as read, the entry claimed for it) with
        the confirmation's fields, and succeeds or fails alone."""
        if not seen:
            return []
        when = time.time()
        args: list[Any] = [
            repr(when),
            iso(when),
            self.ttl_seconds,
            Keys.JOB_PREFIX,
            Keys.HISTORY_PREFIX,
            JobState.CONFIRMED.value,
            repr(now),
            *_LAYOUT_ARGS,
        ]
        for s in seen:
            args += [
                s.idempotency_key,
                s.state.value,
                str(s.version),
                s.ref,
                f"seen in the listing as {s.ref}",
                s.provider_ref,
                encode_field(s.entry),
                repr(s.visible_after),
            ]
        reply = self._confirm_seen(keys=[Keys.DUE, Keys.COUNTERS], args=args)
        outcomes: list[Moved | TransitionRefused] = []
        for s, code, state in zip(seen, reply[::2], reply[1::2], strict=True):
            if int(code) == 1:
                outcomes.append(Moved(JobState(state)))
            elif int(code) == 2:
                outcomes.append(EntryClaimed(s.idempotency_key, s.ref))
            else:
                outcomes.append(TransitionRefused(s.idempotency_key, state or None, "confirmed"))
        return outcomes

    def begin_post(
        self,
        grant: CreditGrant,
        *,
        max_attempts: int,
        now: float,
        lease: float,
        turn: tuple[list[str], list[str | int]] | None = None,
    ) -> PostStart:
        """The issue path's first step in one round trip: load the job and, if it is a plain
        ``queued`` job holding exactly ``grant`` with attempts left, take its turn for a
        budget slot (``turn``: ``ProviderBudget.turn_request()``, None without a budget) and
        move it into ``submitting`` with its POST in flight until ``now + lease``.

        The move is the same compare-and-set as ``transition`` (attempts +1, reason
        "POST attempt N"); the turn is taken only when the move will be made, so a
        delivery that loses the race spends nothing. ``started`` carries in ``wait`` the
        seconds until the reserved slot: the POST leaves then, not before.

        The move carries a token of this call (``post_token``): when its reply is lost and
        the client sends the script again (a cut connection, a failover), the second run
        knows the move as its own and answers ``started``; else the job would wait out its
        lease as a POST of unknown fate that never left.
        """
        key = grant.idempotency_key
        move = Move(
            key,
            JobState.SUBMITTING,
            "POST attempt",
            expect=[JobState.QUEUED],
            attempts="incr",
            due=now + lease,
            fields={
                JobField.LAST_POST_AT: now,
                JobField.IN_FLIGHT_UNTIL: now + lease,
                JobField.POST_TOKEN: uuid.uuid4().hex,
            },
            post=lease,
        )
        keys, moving = move_args(move, time.time(), self.ttl_seconds)
        slot_args: list[Any] = [*turn[0], *turn[1]] if turn else [""] * len(TURN_ARGS)
        args = [
            payload_of(grant),
            max_attempts,
            encode_field(now),
            JobState.QUEUED.value,
            *slot_args,
            *moving,
        ]
        reply, held = self._run_held(self._begin_post, keys, args, hold=True)
        outcome = reply[0]
        if outcome == "started" and not held:
            return PostStart("unheld", job_of(reply[1]))
        if outcome == "started":
            return PostStart("started", job_of(reply[1]), int(reply[2]) / 1_000_000)
        if outcome == "missing":
            return PostStart("missing")
        if outcome == "checked":
            return PostStart("checked", job_of(reply[1]))
        if outcome == "wait":
            return PostStart("wait", job_of(reply[2]), int(reply[1]) / 1_000_000)
        return PostStart(outcome, job_of(reply[1]))

    # -- scheduling and confirmation reads ----------------------------------------

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

    def pending_many(self, provider: str, scopes: Sequence[str | None]) -> list[str]:
        """``pending`` of several customers (None: the whole provider), in one round trip,
        without repeats."""
        if not scopes:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for scope in scopes:
            pipe.zrange(Keys.pending(provider, scope), 0, -1)
        return list(dict.fromkeys(k for keys in pipe.execute() for k in keys))

    def start_sweep(self, provider: str, token: str, due_by: float, lease: float) -> Sweep:
        """The start of a confirmation sweep of the provider, in one round trip (see
        start_sweep.lua): superseded, busy, or started, holding the lease for ``lease`` seconds."""
        name, due, later, busy = self._start_sweep(
            keys=[
                Keys.confirming(provider),
                Keys.pending(provider, None),
                Keys.DUE,
                Keys.sweeping(provider),
                Keys.sweep_wanted(provider),
            ],
            args=[token, repr(due_by), max(int(lease * 1000), 1)],
        )
        if int(busy):  # ``later`` holds the lease's time left, in ms
            return Sweep([], max(float(later or 0), 0.0) / 1000, False, True)
        return Sweep(list(due), float(later) if later else None, bool(name) and name != token)

    def renew_sweep(self, provider: str, token: str, lease: float) -> bool:
        """Extend this sweep's lease; False if it lost it (it outlived the lease and another
        sweep took over: it must stop reading)."""
        ttl = max(int(lease * 1000), 1)
        keys = [Keys.sweeping(provider), Keys.sweep_wanted(provider)]
        return int(self._hold_sweep(keys=keys, args=[token, ttl])) == 1

    def end_sweep(self, provider: str, token: str) -> bool:
        """Release this sweep's lease; True if another sweep came meanwhile and is wanted."""
        keys = [Keys.sweeping(provider), Keys.sweep_wanted(provider)]
        return int(self._hold_sweep(keys=keys, args=[token, "0"])) == 2

    def schedule_sweep(
        self, provider: str, token: str, due_at: float, ttl: float, *, force: bool = False
    ) -> bool:
        """Name a sweep due at ``due_at`` in the provider's sweep marker, unless one is
        scheduled no later (``force``: in any case). True if the caller must send it."""
        reply = self._schedule_sweep(
            keys=[Keys.confirming(provider)],
            args=[sweep_marker(token, due_at), max(int(ttl * 1000), 1), "1" if force else "0"],
        )
        return int(reply) == 1

    def counters(self) -> dict[str, int]:
        """Work done for nothing (``Keys.COUNTERS``), e.g. ``confirm_again``."""
        raw = cast(dict[str, str], self.redis.hgetall(Keys.COUNTERS))
        return {name: int(value) for name, value in raw.items()}

    def claimed_many(self, provider: str, customers: Sequence[str]) -> dict[str, set[str]]:
        """The ledger entries already claimed by a job, per customer, in one round trip."""
        if not customers:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for customer in customers:
            pipe.smembers(Keys.claimed(provider, customer))
        return {c: set(found) for c, found in zip(customers, pipe.execute(), strict=True)}

    def learned_delay(self, provider: str) -> float | None:
        value = self.redis.get(Keys.learned_delay(provider))
        return float(value) if value is not None else None

    def set_learned_delay(self, provider: str, seconds: float) -> None:
        self.redis.set(Keys.learned_delay(provider), repr(round(seconds, 3)), ex=7 * 86400)

    def set_due_many(self, due: Mapping[str, float]) -> None:
        if due:
            self.redis.zadd(Keys.DUE, dict(due), xx=True)

    # -- what listings have shown, and alarms ---------------------------------------

    def record_visibility(self, provider: str, accepted_at: float, took: float, now: float) -> None:
        """A listing showed credits: the newest was accepted at ``accepted_at``, and the
        slowest took ``took`` seconds to show. Both only ever raise the stored maxima."""
        args = [repr(accepted_at), repr(max(took, 0.0)), repr(now)]
        self._record_visibility(keys=[Keys.visibility(provider)], args=args)

    def visibility(self, provider: str, now: float) -> Visibility:
        """When the newest credit any listing of the provider has shown was accepted, and
        the longest a credit took to show this hour or the last (None: nothing seen)."""
        fields = cast(dict[str, str], self.redis.hgetall(Keys.visibility(provider)))
        hour = int(now // 3600)
        lags = [float(fields[f"lag:{h}"]) for h in (hour, hour - 1) if f"lag:{h}" in fields]
        witness = fields.get("witness_at")
        return Visibility(float(witness) if witness else None, max(lags) if lags else None)

    def raise_alarm(self, idempotency_key: str, alarm: Mapping[str, Any], now: float) -> bool:
        """Record an alarm on the job (its ``alarm`` field) and in the alarm index."""
        reply = self._raise_alarm(
            keys=[Keys.job(idempotency_key), Keys.ALARMS],
            args=[idempotency_key, json.dumps(alarm, default=str), repr(now)],
        )
        return int(reply) == 1

    def remember_confirmed(
        self, provider: str, markers: Mapping[str, str], latencies: Sequence[float], now: float
    ) -> None:
        """What a read's confirmations leave behind, in one round trip: their markers (marker
        -> "key ref", kept for about two hours, for late duplicates) and their
        enqueue-to-confirmed times (``record_latencies``)."""
        if not markers and not latencies:
            return
        pipe = self.redis.pipeline(transaction=False)
        if markers:
            key = Keys.confirmed_markers(provider, int(now // 3600))
            pipe.hset(key, mapping=cast(Mapping[Any, Any], markers))
            pipe.expire(key, 3 * 3600)
        _count_latencies(pipe, provider, latencies)
        pipe.execute()

    def recall_markers(
        self, provider: str, markers: Sequence[str], now: float
    ) -> dict[str, tuple[str, str]]:
        """Which of ``markers`` were confirmed this hour or the last: marker -> (key, ref)."""
        if not markers:
            return {}
        hour = int(now // 3600)
        pipe = self.redis.pipeline(transaction=False)
        for h in (hour, hour - 1):
            pipe.hmget(Keys.confirmed_markers(provider, h), list(markers))
        found: dict[str, tuple[str, str]] = {}
        for values in pipe.execute():
            for marker, value in zip(markers, values, strict=True):
                if value and marker not in found:
                    key, _, ref = str(value).rpartition(" ")
                    found[marker] = (key, ref)
        return found

    def first_alarm(self, ref: str) -> bool:
        """True the first time an alarm names this ledger entry: each is raised once."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.sadd(Keys.ALARMED_REFS, ref)
        pipe.expire(Keys.ALARMED_REFS, 7 * 86400)
        return bool(pipe.execute()[0])

    def mark_reconciled(self, now: float) -> int:
        """Beat's heartbeat, and a look at the store's era (``mark_reconciled.lua``: a
        promotion is seen within one reconcile interval even when no grant comes)."""
        return int(self._mark_reconciled(keys=[Keys.RECONCILED_AT], args=[repr(now), Keys.ERA]))

    def reconciled_at(self) -> float | None:
        value = self.redis.get(Keys.RECONCILED_AT)
        return float(value) if value else None

    def record_latencies(self, provider: str, seconds: Sequence[float]) -> None:
        """Count enqueue-to-confirmed times into the provider's histogram (``/metrics``),
        kept for the fleet, in Redis; a read's confirmations do it in ``remember_confirmed``."""
        if seconds:
            pipe = self.redis.pipeline(transaction=False)
            _count_latencies(pipe, provider, seconds)
            pipe.execute()

    def latencies(self, provider: str) -> tuple[list[tuple[float, int]], int, float]:
        """The histogram ``record_latencies`` keeps: cumulative (bound, count) pairs ending at
        +Inf, the count and the sum."""
        raw = self.redis.hgetall(Keys.latency(provider))
        running = 0
        buckets = []
        for bound in [*LATENCY_BUCKETS, math.inf]:
            running += int(raw.get(_bucket_field(bound), 0))
            buckets.append((bound, running))
        return buckets, int(raw.get("count", 0)), float(raw.get("sum", 0.0))

    def alarms(self) -> int:
        """How many jobs carry an alarm."""
        return int(self.redis.zcard(Keys.ALARMS))


# The bounds (seconds) of the enqueue-to-confirmed histogram: a grant confirmed at the first
# listing read takes a few seconds; one the listing shows late, minutes; the deadline is an hour.
LATENCY_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0)


def _bucket_field(bound: float) -> str:
    """The histogram hash's field of one bucket: its upper bound, or "inf"."""
    return "inf" if bound == math.inf else repr(bound)


def _count_latencies(pipe: Any, provider: str, seconds: Sequence[float]) -> None:
    """Queue on ``pipe`` the histogram counts of ``seconds`` (nothing when empty)."""
    if not seconds:
        return
    key = Keys.latency(provider)
    for value in seconds:
        pipe.hincrby(
            key, _bucket_field(next((b for b in LATENCY_BUCKETS if value <= b), math.inf)), 1
        )
    pipe.hincrby(key, "count", len(seconds))
    pipe.hincrbyfloat(key, "sum", float(sum(seconds)))


# How long a POST waits for its move to be held (WAITAOF, WAIT) before it is put off.
HOLD_TIMEOUT_MS = 1000
# Sent after a POST's move behind Sentinels: the server's run_id, for them to vouch for.
SERVER_IDENTITY = ("INFO", "server")


def _supports_waitaof(client: redis.Redis) -> bool:
    """WAITAOF exists from Redis 7.2, and says something only with the append-only file on."""
    try:
        if not has_waitaof(str(client.info("server").get("redis_version", "0"))):
            return False
        answer = cast(dict[Any, Any], client.config_get("appendonly"))
        return "yes" in {str(v) for v in answer.values()}
    except (redis.ResponseError, ValueError):
        return False


def payload_of(grant: CreditGrant) -> str:
    """The grant as the job hash stores it: canonical JSON, the amount as spelled."""
    return json.dumps(grant.to_message(), sort_keys=True, separators=(",", ":"))
