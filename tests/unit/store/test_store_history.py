"""Structured history (issue 16, point 5): a move may carry a ``detail`` object, kept in the
history entry it appends, for what the reason's words do not carry."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

import pytest

from tests.fixtures.grants import make_grant
from worker.domain.states import DlqReason, JobState
from worker.errors import TransitionRefused
from worker.store.jobs import JobStore, Seen
from worker.store.keys import Keys

ENTRY = {"at", "from", "to", "reason", "attempt"}


def raw_history(store: JobStore, key: str = "k1") -> list[dict[str, Any]]:
    return [json.loads(entry) for entry in store.redis.lrange(Keys.history(key), 0, -1)]


def test_a_move_keeps_its_detail_in_the_history_entry(store: JobStore) -> None:
    store.create(make_grant())
    store.transition("k1", JobState.SUBMITTING, reason="POST attempt 1", attempts="incr")
    detail = {"outcome": "unknown", "status": 500, "fault": "timeout"}
    store.transition("k1", JobState.SUBMITTING, reason="HTTP 500", detail=detail)
    entry = raw_history(store)[-1]
    assert set(entry) == ENTRY | {"detail"}
    assert entry["detail"] == detail
    moved = (entry["from"], entry["to"], entry["reason"], entry["attempt"])
    assert moved == ("submitting", "submitting", "HTTP 500", 1)
    job = store.get("k1")
    assert job is not None and job.history[-1]["detail"] == detail
    assert "detail" not in job.extra, "the detail is the entry's, not a field of the job"


def test_without_a_detail_the_entry_is_as_before(store: JobStore) -> None:
    store.create(make_grant())
    store.transition("k1", JobState.SUBMITTING, reason="POST attempt 1", attempts="incr")
    store.transition("k1", JobState.DEAD, reason="gave up", dlq_reason=DlqReason.EXHAUSTED)
    history = raw_history(store)
    assert set(history[0]) == ENTRY - {"from"}
    assert all(set(entry) == ENTRY for entry in history[1:])


@pytest.mark.parametrize(
    "detail",
    [
        {"took": 0.1 + 0.2, "at": 1_800_000_000.123456},  # numbers kept as sent, not rounded
        {"nested": {"refs": ["e-1", "e-2"], "empty": [], "none": None}},
        {},
        MappingProxyType({"status": 409}),  # any mapping
    ],
)
def test_the_detail_is_stored_as_sent(store: JobStore, detail: Any) -> None:
    store.create(make_grant())
    store.transition(
        "k1", JobState.REJECTED, reason="refused", dlq_reason=DlqReason.REFUSED, detail=detail
    )
    assert raw_history(store)[-1]["detail"] == dict(detail)


def test_a_refused_move_appends_no_entry_and_no_detail(store: JobStore) -> None:
    store.create(make_grant())
    with pytest.raises(TransitionRefused):
        store.transition("k1", JobState.CONFIRMED, reason="too soon", detail={"why": "x"})
    assert len(raw_history(store)) == 1


def test_the_store_s_own_moves_carry_no_detail(store: JobStore) -> None:
    """begin_post and confirm_seen make their moves without one."""
    grant = make_grant()
    store.create(grant)
    started = store.begin_post(grant, max_attempts=5, now=1_800_000_000.0, lease=30.0)
    assert started.outcome == "started" and started.job is not None
    seen = Seen("k1", JobState.SUBMITTING, started.job.version, "e-1", "e-1", {"ref": "e-1"}, 2.5)
    store.confirm_seen([seen], now=1_800_000_010.0)
    history = raw_history(store)
    assert [entry["to"] for entry in history] == ["queued", "submitting", "confirmed"]
    assert all("detail" not in entry for entry in history)
