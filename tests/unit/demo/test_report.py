"""The demo's report reads what a job met from its history's structured detail, not its words."""

from __future__ import annotations

from tests.fixtures.grants import make_grant
from worker.demo.report import what_happened
from worker.domain.states import JobState
from worker.store.jobs import JobStore


def test_faults_come_from_the_detail_and_end_in_how_they_were_resolved(store: JobStore) -> None:
    store.create(make_grant("k1"))
    move = store.transition
    move("k1", JobState.SUBMITTING, reason="POST attempt 1", attempts="incr")
    move(
        "k1",
        JobState.SUBMITTING,
        reason="outcome unknown (words free to change)",
        detail={"outcome": "ambiguous", "status": 500},
    )
    move("k1", JobState.QUEUED, reason="did not apply")
    move("k1", JobState.SUBMITTING, reason="POST attempt 2", attempts="incr")
    move(
        "k1",
        JobState.SUBMITTING,
        reason="anything",
        detail={"outcome": "ambiguous", "status": None},
    )
    move("k1", JobState.CONFIRMED, reason="seen in the listing")
    job = store.get("k1")
    assert job is not None
    assert what_happened(job) == "500, retried; timeout, found in listing"


def test_words_alone_say_nothing(store: JobStore) -> None:
    """A reason that reads like a fault but carries no detail is not reported as one."""
    store.create(make_grant("k2"))
    store.transition("k2", JobState.SUBMITTING, reason="outcome unknown: HTTP 500")
    store.transition("k2", JobState.SUBMITTING, reason="refused", detail={"outcome": "permanent"})
    job = store.get("k2")
    assert job is not None
    assert what_happened(job) == ""
