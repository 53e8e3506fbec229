"""Confirming what one listing read found (``JobStore.confirm_seen``), on fakeredis: each
job is its own compare-and-set, and an entry confirms one job only."""

from __future__ import annotations

from tests.fixtures.grants import make_grant
from worker.domain.states import DlqReason, JobState
from worker.errors import EntryClaimed, TransitionRefused
from worker.store.jobs import JobStore, Seen
from worker.store.moves import Moved


def submitted(store: JobStore, key: str, customer: str = "c1") -> int:
    store.create(make_grant(key, customer_id=customer))
    store.transition(key, JobState.SUBMITTING, reason="post", attempts="incr")
    store.transition(key, JobState.SUBMITTED, reason="201")
    job = store.get(key)
    assert job is not None
    return job.version


def seen(key: str, version: int, ref: str, state: JobState = JobState.SUBMITTED) -> Seen:
    return Seen(key, state, version, ref, ref, {"ref": ref, "matched_by": "marker"}, 1.5)


def test_every_job_found_is_confirmed_with_its_entry_in_one_call(store: JobStore) -> None:
    versions = {key: submitted(store, key) for key in ("a", "b")}
    outcomes = store.confirm_seen([seen(k, v, f"e-{k}") for k, v in versions.items()], now=9.0)
    assert outcomes == [Moved(JobState.SUBMITTED), Moved(JobState.SUBMITTED)]
    job = store.get("a")
    assert job is not None and job.state is JobState.CONFIRMED and job.provider_ref == "e-a"
    out = job.to_json()
    assert out["provider_entry"] == {"ref": "e-a", "matched_by": "marker"}
    assert out["confirmed_at"] == 9.0 and out["visible_after_seconds"] == 1.5
    assert job.history[-1]["reason"] == "seen in the listing as e-a"
    assert store.pending("inveterate", "c1") == [] and store.claimed("inveterate", "c1") == {
        "e-a",
        "e-b",
    }


def test_a_job_moved_since_it_was_read_is_refused_and_the_others_still_confirm(
    store: JobStore,
) -> None:
    old = submitted(store, "a")
    fresh = submitted(store, "b")
    store.transition("a", JobState.DEAD, reason="deadline", dlq_reason=DlqReason.NOT_VISIBLE)
    outcomes = store.confirm_seen([seen("a", old, "e-a"), seen("b", fresh, "e-b")], now=9.0)
    assert isinstance(outcomes[0], TransitionRefused) and "dead" in str(outcomes[0])
    assert outcomes[1] == Moved(JobState.SUBMITTED)
    job = store.get("a")
    assert job is not None and job.state is JobState.DEAD
    assert store.claimed("inveterate", "c1") == {"e-b"}


def test_an_entry_another_job_claimed_confirms_nothing_more(store: JobStore) -> None:
    versions = {key: submitted(store, key) for key in ("a", "b")}
    outcomes = store.confirm_seen(
        [seen("a", versions["a"], "e-1"), seen("b", versions["b"], "e-1")], now=9.0
    )
    assert outcomes[0] == Moved(JobState.SUBMITTED) and isinstance(outcomes[1], EntryClaimed)
    job = store.get("b")
    assert job is not None and job.state is JobState.SUBMITTED
