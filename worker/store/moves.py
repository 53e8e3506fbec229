"""A move of a job, as the store sends it to ``move.lua`` and reads its answer: the
argument layout (named, in the script's order), the request, the outcome, and how values are
written into the job hash."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.domain.job import Job, iso
from worker.domain.states import DlqReason, JobState, sources_of
from worker.errors import EntryClaimed, TransitionRefused
from worker.store.keys import HISTORY_LIMIT, Keys

# The states of a job waiting for its credit to show: the pending sets (``Keys.pending``)
# hold the jobs in them.
PENDING_STATES = (JobState.SUBMITTING, JobState.SUBMITTED)

# A move's arguments, by name, in the order ``move.lua`` reads them (its MOVE_LAYOUT and
# MOVE_REQUEST; tests/unit/store/test_lua.py keeps the lists equal). The layout is the same for
# every move; ``move.lua`` documents each name.
MOVE_LAYOUT = (
    "index_prefix",
    "history_limit",
    "pending_prefix",
    "pending_states",
    "claimed_prefix",
    "dlq_all",
    "dlq_by_provider",
    "dlq_by_reason",
    "waiting_prefix",
    "era_key",
)
MOVE_REQUEST = (
    "key",
    "target",
    "sources",
    "now",
    "now_iso",
    "reason",
    "attempts",
    "ttl",
    "due",
    "claim",
    "claim_ref",
    "dlq_reason",
    "version",
    "flag_key",
    "flag_ttl",
    "flag_value",
    "detail",
    "post",
)


def _layout_args() -> list[Any]:
    """The key layout every move is passed, in MOVE_LAYOUT's order."""
    dlq_all, dlq_by_provider, dlq_by_reason = Keys.dlq_layout()
    layout: dict[str, Any] = {
        "index_prefix": Keys.INDEX_PREFIX,
        "history_limit": HISTORY_LIMIT,
        "pending_prefix": Keys.PENDING_PREFIX,
        "pending_states": " ".join(s.value for s in PENDING_STATES),
        "claimed_prefix": Keys.CLAIMED_PREFIX,
        "dlq_all": dlq_all,
        "dlq_by_provider": dlq_by_provider,
        "dlq_by_reason": dlq_by_reason,
        "waiting_prefix": Keys.WAITING_PREFIX,
        "era_key": Keys.ERA,
    }
    return [layout[name] for name in MOVE_LAYOUT]


_LAYOUT_ARGS = _layout_args()


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
    flag: tuple[str, float, str] | None = None
    detail: Mapping[str, Any] | None = None
    # The move starts a POST with a lease of this many seconds (move.lua may turn it into a
    # listing check); None for any other move.
    post: float | None = None


@dataclass(frozen=True)
class Moved:
    """What a successful move did: the state it left, and whether it set the flag."""

    previous: JobState
    flagged: bool = False
    held: bool = True  # the move is on disk / on the replicas asked for (``hold``)
    job: Job | None = None  # the job as the move left it (without history), from the script
    # A POST's move turned into a listing check: the store's master was promoted since the
    # job's last move (move.lua), so no POST may leave before the listing speaks.
    checked: bool = False


def move_args(move: Move, now: float, ttl_seconds: int) -> tuple[list[str], list[Any]]:
    """The keys and arguments of ``move.lua`` for ``move`` (``ttl_seconds``: a finished
    job's retention)."""
    if move.attempts not in ("keep", "incr", "decr", "reset"):
        raise ValueError(f"attempts must be keep, incr, decr or reset, not {move.attempts!r}")
    if move.target.dead_letter != (move.dlq_reason is not None):
        raise ValueError("a move into the DLQ (and only such a move) needs a dlq_reason")
    sources = sources_of(move.target)
    if move.expect is not None:
        sources = sources & frozenset(move.expect)
    due, flag = move.due, move.flag
    request: dict[str, Any] = {
        "key": move.idempotency_key,
        "target": move.target.value,
        "sources": " ".join(sorted(s.value for s in sources)),
        "now": repr(now),
        "now_iso": iso(now),
        "reason": move.reason,
        "attempts": move.attempts,
        "ttl": ttl_seconds if move.target.terminal else 0,
        "due": "" if due is None else repr(due),
        "claim": "" if move.claim is None else "1",
        "claim_ref": move.claim or "",
        "dlq_reason": move.dlq_reason.value if move.dlq_reason else "",
        "version": "" if move.version is None else str(move.version),
        "flag_key": flag[0] if flag else "",
        "flag_ttl": int(flag[1] * 1000) if flag else 0,
        "flag_value": flag[2] if flag else "",
        "detail": encode_detail(move.detail),
        "post": "" if move.post is None else repr(move.post),
    }
    args: list[Any] = [*_LAYOUT_ARGS, *(request[name] for name in MOVE_REQUEST)]
    for name, value in (move.fields or {}).items():
        args += [str(name), encode_field(value)]
    key = move.idempotency_key
    return [Keys.job(key), Keys.history(key), Keys.DUE], args


def outcome_of(move: Move, reply: Any) -> Moved | TransitionRefused:
    """What ``transition.lua`` answered, as the store's callers see it."""
    if not int(reply[0]):
        if len(reply) > 2:
            return EntryClaimed(move.idempotency_key, str(move.claim))
        return TransitionRefused(move.idempotency_key, reply[1] or None, move.target.value)
    after = reply[4] if len(reply) > 4 else None
    job = job_of(after) if after else None
    checked = len(reply) > 3 and reply[3] == "era"
    return Moved(JobState(reply[1]), bool(int(reply[2])), job=job, checked=checked)


def job_of(flat: list[str]) -> Job:
    return Job.from_redis(dict(zip(flat[::2], flat[1::2], strict=True)), [])


def encode_detail(detail: Mapping[str, Any] | None) -> str:
    """A move's ``detail`` as the history entry keeps it: a JSON object, or '' for none."""
    if detail is None:
        return ""
    return json.dumps(dict(detail), separators=(",", ":"), default=str)


def encode_field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if type(value) in (float, int):  # what json.dumps writes, without its machinery
        return repr(value)
    return json.dumps(value, separators=(",", ":"), default=str)
