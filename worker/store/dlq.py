"""The dead-letter queue: list, replay and purge the jobs that ended ``rejected`` or ``dead``.

The store files every job entering the DLQ in three sorted sets (all, by provider, by
reason class; score: when it entered), so a listing is a range read on one set plus one
pipelined read of the jobs, whatever the depth. Replay goes through the store's
compare-and-set like every other move, which is what makes it idempotent: a second
replay finds the job ``queued`` (or further) and is refused before anything is sent.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from worker.domain.fields import JobField
from worker.domain.grant import Provider
from worker.domain.job import Job, iso
from worker.domain.states import DEAD_LETTER, DlqReason, JobState
from worker.errors import InvalidGrant, TransitionRefused
from worker.store import lua
from worker.store.jobs import JobStore
from worker.store.keys import Keys

if TYPE_CHECKING:  # listing and purging never touch Celery; only replay publishes
    from celery import Celery

REPLAY_REASON = "replayed from the DLQ"
BATCH = 500  # keys per pipelined read when walking a whole set (replay --all, purge --all)
MAX_CHUNK = 10_000  # keys per range read while intersecting two sets

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """``2h``/``30m``/``7d`` ago, an ISO-8601 time (naive means UTC), or epoch seconds."""
    now = time.time() if now is None else now
    text = text.strip()
    duration = _DURATION.match(text)
    if duration:
        return now - float(duration.group(1)) * _UNIT_SECONDS[duration.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a duration (e.g. 2h, 30m, 7d), an ISO-8601 time or epoch seconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


# -- reading ----------------------------------------------------------------------


def dlq_reason(job: Job) -> str | None:
    return job.extra.get(JobField.DLQ_REASON)


def dead_letter_json(job: Job) -> dict[str, Any]:
    """The job JSON plus ``reason`` and ``dlq_at``; ``last_error`` is never null here.

    Some ways into the DLQ carry no provider error (a credit not visible by the deadline,
    attempts used up by unknown outcomes): their ``last_error`` is the move's own reason.
    """
    out = job.to_json()
    out["reason"] = dlq_reason(job)
    out["dlq_at"] = iso(job.state_at) if job.state.dead_letter else None
    if out["last_error"] is None and job.state.dead_letter:
        why = job.history[-1].get("reason") if job.history else None
        out["last_error"] = {
            "class": out["reason"],
            "status": None,
            "message": why,
            "at": out["dlq_at"],
        }
    return out


def _scan_plan(store: JobStore, provider: str | None, reason: str | None) -> tuple[str, str | None]:
    """Which set to range over and which (if any) to check membership in.

    With both filters, the smaller set is read and its keys are checked against the
    other with ZMSCORE (O(1) each), so no job hash is read for a key that cannot match.
    """
    if provider is not None and reason is not None:
        by_provider, by_reason = Keys.dlq(provider=provider), Keys.dlq(reason=reason)
        pipe = store.redis.pipeline(transaction=False)
        pipe.zcard(by_provider)
        pipe.zcard(by_reason)
        n_provider, n_reason = pipe.execute()
        return (by_provider, by_reason) if n_provider <= n_reason else (by_reason, by_provider)
    if provider is not None:
        return Keys.dlq(provider=provider), None
    if reason is not None:
        return Keys.dlq(reason=reason), None
    return Keys.dlq(), None


def _candidates(
    store: JobStore,
    provider: str | None,
    reason: str | None,
    since: float | None,
    chunk: int,
    newest_first: bool,
) -> Iterator[list[str]]:
    """Keys of the matching DLQ entries, chunk by chunk, in time order.

    With both filters each chunk is checked against the other set with one ZMSCORE
    (Redis >= 6.2) and the next chunk is twice as long, so even an empty intersection
    of large sets costs a handful of round trips.
    """
    scan, check = _scan_plan(store, provider, reason)
    low = "-inf" if since is None else repr(since)
    offset = 0
    while True:
        if newest_first:
            reply = store.redis.zrevrangebyscore(scan, "+inf", low, start=offset, num=chunk)
        else:
            reply = store.redis.zrangebyscore(scan, low, "+inf", start=offset, num=chunk)
        keys: list[str] = [str(k) for k in reply]
        offset += len(keys)
        exhausted = len(keys) < chunk
        if check is not None and keys:
            scores = store.redis.zmscore(check, keys)
            keys = [k for k, score in zip(keys, scores, strict=True) if score is not None]
            chunk = min(chunk * 2, MAX_CHUNK)
        if keys:
            yield keys
        if exhausted:
            return


def _value(name: str, value: str | StrEnum | None, allowed: type[StrEnum]) -> str | None:
    if value is None:
        return None
    try:
        return allowed(value).value
    except ValueError:
        choices = ", ".join(m.value for m in allowed)
        raise ValueError(f"{name} must be one of {choices}, not {value!r}") from None


def list_dlq(
    store: JobStore,
    provider: str | None = None,
    reason: str | None = None,
    since: float | None = None,
    limit: int = 50,
) -> list[Job]:
    """DLQ jobs, newest first: at most ``limit``, entered at or after ``since`` (epoch).

    Unfiltered or with one filter this is two round trips (one range read, one pipelined
    read of ``limit`` jobs) at any depth. An entry whose job has expired (the retention
    TTL) is skipped.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    provider = _value("provider", provider, Provider)
    reason = _value("reason", reason, DlqReason)
    both = provider is not None and reason is not None
    chunk = max(limit * 4, 200) if both else limit
    found: list[Job] = []
    for keys in _candidates(store, provider, reason, since, chunk, newest_first=True):
        while keys and len(found) < limit:
            take, keys = keys[: limit - len(found)], keys[limit - len(found) :]
            found += [j for j in store.get_many(take) if j is not None and j.state.dead_letter]
        if len(found) >= limit:
            break
    return found


def dlq_depth(store: JobStore, provider: str | None = None, reason: str | None = None) -> int:
    """How many jobs the DLQ holds (for one provider or reason class: its own set's size)."""
    provider = _value("provider", provider, Provider)
    reason = _value("reason", reason, DlqReason)
    if provider is not None and reason is not None:
        return sum(len(k) for k in _candidates(store, provider, reason, None, BATCH, False))
    return int(store.redis.zcard(Keys.dlq(provider=provider, reason=reason)))


def select(store: JobStore, *, provider: str | None = None, reason: str | None = None) -> list[str]:
    """Every DLQ key for ``--all`` (no filter), ``--provider`` and/or ``--reason``, oldest first."""
    provider = _value("provider", provider, Provider)
    reason = _value("reason", reason, DlqReason)
    keys: list[str] = []
    for chunk in _candidates(store, provider, reason, None, BATCH * 10, newest_first=False):
        keys += chunk
    return keys


def _batches(keys: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(keys), BATCH):
        yield keys[start : start + BATCH]


# -- replay -----------------------------------------------------------------------


class ReplayResult(StrEnum):
    REPLAYED = "replayed"  # back to queued and published
    WOULD_REPLAY = "would_replay"  # --dry-run: nothing changed
    NOT_IN_DLQ = "not_in_dlq"  # queued, in flight or confirmed (e.g. replayed already)
    UNKNOWN = "unknown"  # no job with this key (never enqueued, purged or expired)
    INVALID = "invalid"  # the stored grant fails today's rules: it cannot be sent as it is

    @property
    def ok(self) -> bool:
        return self in (ReplayResult.REPLAYED, ReplayResult.WOULD_REPLAY)


@dataclass(frozen=True)
class ReplayOutcome:
    """What replay did for one key; ``state`` is where the job stands afterwards."""

    idempotency_key: str
    result: ReplayResult
    state: str | None
    detail: str
    reconcile_first: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "idempotency_key": self.idempotency_key,
            "result": self.result.value,
            "ok": self.result.ok,
            "state": self.state,
            "reconcile_first": self.reconcile_first,
            "detail": self.detail,
        }


def replay(
    store: JobStore, keys: Iterable[str], app: Celery | None = None, dry_run: bool = False
) -> list[ReplayOutcome]:
    """Move each DLQ job back to ``queued`` (attempts reset) and publish its issue message.

    A job whose credit may exist (a 2xx, or an outcome still unknown) comes back with
    ``reconcile_first``: the worker reads the listing before any new POST, so replaying a
    credit that did apply confirms it instead of paying again. Only a job still in the DLQ
    moves (the store's compare-and-set), and only a job that moved is published: replaying
    twice sends one message.
    """
    from worker.producer import publish  # the producer imports Celery's app; keep reads light

    outcomes: list[ReplayOutcome] = []
    for batch in _batches(list(dict.fromkeys(keys))):
        for key, job in zip(batch, store.get_many(batch), strict=True):
            outcome = _refusal(key, job)
            if outcome is None:
                assert job is not None
                outcome = _replay_one(store, job, app, dry_run, publish)
            outcomes.append(outcome)
    return outcomes


def _refusal(key: str, job: Job | None) -> ReplayOutcome | None:
    if job is None:
        why = "no job with this key (never enqueued, purged or expired)"
        return ReplayOutcome(key, ReplayResult.UNKNOWN, None, why)
    if not job.state.dead_letter:
        return ReplayOutcome(
            key,
            ReplayResult.NOT_IN_DLQ,
            job.state.value,
            f"not in the DLQ (it is {job.state.value}); nothing sent",
        )
    try:
        grant = job.grant()
    except InvalidGrant as exc:
        return ReplayOutcome(
            key,
            ReplayResult.INVALID,
            job.state.value,
            f"the stored grant is invalid ({exc}); it cannot be replayed: "
            "enqueue a corrected grant under a new key",
        )
    if grant.fingerprint() != job.fingerprint:  # e.g. a bad message kept only in part
        return ReplayOutcome(
            key,
            ReplayResult.INVALID,
            job.state.value,
            "the stored payload is not the grant that was accepted; it cannot "
            "be replayed: enqueue a corrected grant under a new key",
        )
    return None


def _replay_one(
    store: JobStore, job: Job, app: Celery | None, dry_run: bool, publish: Any
) -> ReplayOutcome:
    key = job.idempotency_key
    # A credit may exist only if a POST was accepted (2xx) or its outcome is still unknown;
    # a job whose every try surely did not apply (a 4xx, a 503) is simply POSTed again.
    reconcile = bool(job.extra.get(JobField.OUTCOME_UNKNOWN)) or JobField.SUBMITTED_AT in job.extra
    how = "the listing is read before any POST" if reconcile else "never POSTed before"
    if dry_run:
        return ReplayOutcome(
            key,
            ReplayResult.WOULD_REPLAY,
            job.state.value,
            f"would go back to queued; {how}",
            reconcile,
        )
    now = time.time()
    try:
        store.transition(
            key,
            JobState.QUEUED,
            reason=REPLAY_REASON,
            expect=[JobState.REJECTED, JobState.DEAD],
            attempts="reset",
            due=now,
            fields={JobField.RECONCILE_FIRST: "1"} if reconcile else None,
        )
    except TransitionRefused as exc:  # another replay (or purge) got there first
        current = exc.current
        if current is None:
            return ReplayOutcome(key, ReplayResult.UNKNOWN, None, "purged meanwhile; nothing sent")
        return ReplayOutcome(
            key, ReplayResult.NOT_IN_DLQ, current, f"not in the DLQ (it is {current}); nothing sent"
        )
    try:
        publish(job.grant(), app=app)
    except Exception as exc:  # the job is queued and due now: the reconciler sweep sends it
        return ReplayOutcome(
            key,
            ReplayResult.REPLAYED,
            JobState.QUEUED.value,
            f"queued, but publishing failed ({type(exc).__name__}); the "
            "reconciler sweep will send it",
            reconcile,
        )
    return ReplayOutcome(
        key, ReplayResult.REPLAYED, JobState.QUEUED.value, f"queued and published; {how}", reconcile
    )


# -- purge ------------------------------------------------------------------------


class PurgeResult(StrEnum):
    PURGED = "purged"  # the job, its history and every index entry are gone
    STALE = "stale"  # the job had expired; its leftover index entries are gone
    NOT_IN_DLQ = "not_in_dlq"  # a live job: never purged, its record guards the key
    UNKNOWN = "unknown"

    @property
    def ok(self) -> bool:
        return self in (PurgeResult.PURGED, PurgeResult.STALE)


@dataclass(frozen=True)
class PurgeOutcome:
    idempotency_key: str
    result: PurgeResult
    state: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "idempotency_key": self.idempotency_key,
            "result": self.result.value,
            "ok": self.result.ok,
            "state": self.state,
        }


def purge(store: JobStore, keys: Iterable[str]) -> list[PurgeOutcome]:
    """Delete DLQ jobs for good: the hash, the history, the state index, DLQ sets and due.

    Only jobs in the DLQ are purged: a live or confirmed job's record is what makes a
    repeated enqueue of its key a duplicate, so deleting it could pay twice. One script per
    job (``purge.lua``), so a replay racing the purge either wins (the job is kept) or loses.
    """
    script = lua.script(store.redis, "purge.lua")
    shared = [
        Keys.INDEX_PREFIX,
        Keys.PENDING_PREFIX,
        *Keys.dlq_layout(),
        " ".join(sorted(s.value for s in DEAD_LETTER)),
        " ".join(p.value for p in Provider),
        " ".join(r.value for r in DlqReason),
    ]
    outcomes: list[PurgeOutcome] = []
    for batch in _batches(list(dict.fromkeys(keys))):
        pipe = store.redis.pipeline(transaction=False)
        for key in batch:
            script(
                keys=[Keys.job(key), Keys.history(key), Keys.DUE], args=[key, *shared], client=pipe
            )
        for key, reply in zip(batch, lua.execute(pipe), strict=True):
            if reply in ("purged", "stale"):
                outcomes.append(PurgeOutcome(key, PurgeResult(reply), None))
            elif reply == "":
                outcomes.append(PurgeOutcome(key, PurgeResult.UNKNOWN, None))
            else:
                outcomes.append(PurgeOutcome(key, PurgeResult.NOT_IN_DLQ, str(reply)))
    return outcomes
