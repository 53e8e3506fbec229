"""The issue path's one-round-trip start (``JobStore.begin_post``), on fakeredis: it starts
only a plain queued job holding exactly the grant, and a slot is spent only on a start."""

from __future__ import annotations

import time
import uuid

import fakeredis
import pytest

from tests.fixtures.grants import make_grant
from worker.budget import ProviderBudget
from worker.domain.grant import Provider
from worker.domain.states import JobState
from worker.store.jobs import JobStore
from worker.store.keys import Keys

NOW = 1_800_000_000.0


def budget(redis: fakeredis.FakeRedis, per_minute: int = 60) -> ProviderBudget:
    return ProviderBudget(redis, Provider.INVETERATE, per_minute, clock=lambda: NOW)


def test_a_queued_job_is_moved_into_submitting_with_its_lease_and_first_attempt(
    store: JobStore,
) -> None:
    store.create(make_grant())
    started = store.begin_post(make_grant(), max_attempts=5, now=NOW, lease=50.0)
    assert started.outcome == "started" and started.job is not None
    assert started.job.state is JobState.SUBMITTING and started.job.attempts == 1
    job = store.get("k1")
    assert job is not None and job.state is JobState.SUBMITTING and job.version == 1
    assert job.number("in_flight_until") == NOW + 50.0
    assert job.number("first_post_at") == NOW == job.number("last_post_at")
    assert job.history[-1]["reason"] == "POST attempt 1"
    assert store.pending("inveterate", "c1") == ["k1"]


def test_a_second_start_of_the_same_job_finds_it_already_started(store: JobStore) -> None:
    store.create(make_grant())
    store.begin_post(make_grant(), max_attempts=5, now=NOW, lease=50.0)
    again = store.begin_post(make_grant(), max_attempts=5, now=NOW, lease=50.0)
    assert again.outcome == "other" and again.job is not None
    assert again.job.state is JobState.SUBMITTING and again.job.attempts == 1


def test_a_grant_that_differs_from_the_stored_one_is_left_to_the_full_path(store: JobStore) -> None:
    store.create(make_grant(amount="5.00"))
    for other in (make_grant(amount="5.0"), make_grant(amount="6.00")):
        started = store.begin_post(other, max_attempts=5, now=NOW, lease=50.0)
        assert started.outcome == "other"
    job = store.get("k1")
    assert job is not None and job.state is JobState.QUEUED and job.version == 0


def test_a_job_without_attempts_left_or_with_a_replay_note_is_not_started(store: JobStore) -> None:
    store.create(make_grant())
    assert store.begin_post(make_grant(), max_attempts=0, now=NOW, lease=50.0).outcome == "other"
    store.redis.hset("creditq:job:k1", "reconcile_first", "1")
    assert store.begin_post(make_grant(), max_attempts=5, now=NOW, lease=50.0).outcome == "other"
    job = store.get("k1")
    assert job is not None and job.state is JobState.QUEUED


def test_an_unknown_key_is_missing(store: JobStore) -> None:
    assert store.begin_post(make_grant(), max_attempts=5, now=NOW, lease=1.0).outcome == "missing"


def test_the_budget_slot_is_taken_with_the_start_and_only_then(
    store: JobStore, fake_redis: fakeredis.FakeRedis
) -> None:
    slots = budget(fake_redis)
    store.create(make_grant("a"))
    store.create(make_grant("b"))
    store.transition("b", JobState.SUBMITTING, reason="elsewhere", attempts="incr")
    lost = store.begin_post(
        make_grant("b"), max_attempts=5, now=NOW, lease=50.0, turn=slots.turn_request("post:b", 1)
    )
    assert lost.outcome == "other" and slots.snapshot()["calls_last_minute"] == 0
    started = store.begin_post(
        make_grant("a"), max_attempts=5, now=NOW, lease=50.0, turn=slots.turn_request("post:a", 1)
    )
    assert started.outcome == "started" and slots.snapshot()["calls_last_minute"] == 1
    assert started.wait == 0.0  # the slot was free: the POST goes now


def test_without_a_slot_the_job_is_unchanged_and_the_wait_is_reported(
    store: JobStore, fake_redis: fakeredis.FakeRedis
) -> None:
    slots = budget(fake_redis, per_minute=20)  # a slot every 3 s: beyond the horizon
    store.create(make_grant("a"))
    store.create(make_grant("b"))
    store.begin_post(
        make_grant("a"), max_attempts=5, now=NOW, lease=50.0, turn=slots.turn_request("post:a", 1)
    )
    waiting = store.begin_post(
        make_grant("b"), max_attempts=5, now=NOW, lease=50.0, turn=slots.turn_request("post:b", 1)
    )
    # back half a horizon (1.5 s) before its slot, 3 s away, to reserve it then
    assert waiting.outcome == "wait" and waiting.wait == pytest.approx(3.0 - 0.75)
    job = store.get("b")
    assert job is not None and job.state is JobState.QUEUED and job.version == 0
    assert waiting.job is not None and waiting.job.version == 0
    assert slots.snapshot()["calls_last_minute"] == 1


def test_a_slot_a_moment_ahead_is_reserved_and_the_post_starts_with_its_wait(
    store: JobStore, fake_redis: fakeredis.FakeRedis
) -> None:
    slots = budget(fake_redis, per_minute=60)  # a slot a second: within the horizon
    store.create(make_grant("a"))
    store.create(make_grant("b"))
    store.begin_post(
        make_grant("a"), max_attempts=5, now=NOW, lease=50.0, turn=slots.turn_request("post:a", 1)
    )
    started = store.begin_post(
        make_grant("b"), max_attempts=5, now=NOW, lease=50.0, turn=slots.turn_request("post:b", 1)
    )
    assert started.outcome == "started" and started.wait == pytest.approx(1.0)
    assert slots.snapshot()["calls_last_hour"] == 2  # counted in the second it is for


def promote(fake_redis: fakeredis.FakeRedis, at: float = NOW - 20.0) -> None:
    """What ``era.lua`` does on a replica promoted ``at`` (fakeredis has no INFO)."""
    fake_redis.hincrby(Keys.ERA, "era", 1)
    fake_redis.hset(Keys.ERA, "since", at)


def test_after_a_promotion_a_job_from_before_waits_for_the_listing_and_takes_no_slot(
    store: JobStore, fake_redis: fakeredis.FakeRedis
) -> None:
    slots = budget(fake_redis)
    store.create(make_grant())
    created = store.get("k1")
    assert created is not None
    promote(fake_redis)
    checked = store.begin_post(
        make_grant(), max_attempts=5, now=NOW, lease=50.0, turn=slots.turn_request("post:k1", 1)
    )
    assert checked.outcome == "checked" and slots.snapshot()["calls_last_minute"] == 0
    job = store.get("k1")
    assert job is not None and job.state is JobState.SUBMITTING and job.attempts == 0
    assert job.extra["outcome_unknown"] == "1" and job.extra["era"] == "1"
    # a POST sent on the old master before the promotion (20 s ago) holds its lease 30 s more
    assert job.number("in_flight_until") == NOW + 30.0 == job.number("unknown_since")
    # the listing is read back to the last move this store recorded: the lost POST came after
    assert job.number("first_post_at") == created.state_at
    assert "master was promoted" in job.history[-1]["reason"]


def test_after_a_promotion_a_job_created_since_starts_its_post(
    store: JobStore, fake_redis: fakeredis.FakeRedis
) -> None:
    promote(fake_redis)
    store.create(make_grant())
    started = store.begin_post(make_grant(), max_attempts=5, now=NOW, lease=50.0)
    assert started.outcome == "started"


def test_after_a_promotion_the_full_paths_move_before_a_post_becomes_the_check_too(
    store: JobStore, fake_redis: fakeredis.FakeRedis
) -> None:
    store.create(make_grant())
    promote(fake_redis)
    moved = store.transition(
        "k1",
        JobState.SUBMITTING,
        reason="POST attempt 1",
        attempts="incr",
        fields={"in_flight_until": NOW + 50.0},
        post=50.0,
    )
    assert moved.checked and moved.job is not None and moved.job.attempts == 0
    assert moved.job.extra["outcome_unknown"] == "1"
    # once checked, the job's POSTs are on record again: the next start is a plain one
    store.transition(
        "k1", JobState.QUEUED, reason="did not apply", fields={"outcome_unknown": None}
    )
    assert store.begin_post(make_grant(), max_attempts=5, now=NOW, lease=50.0).outcome == "started"


def test_a_move_that_starts_no_post_is_made_as_asked_after_a_promotion(
    store: JobStore, fake_redis: fakeredis.FakeRedis
) -> None:
    store.create(make_grant())
    promote(fake_redis)
    moved = store.transition("k1", JobState.SUBMITTING, reason="elsewhere", attempts="incr")
    assert not moved.checked and moved.job is not None and moved.job.attempts == 1


def test_a_start_sent_again_after_its_reply_was_lost_knows_its_own_move(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create(make_grant())
    token = uuid.uuid4()
    monkeypatch.setattr(uuid, "uuid4", lambda: token)  # the same call's arguments, sent again
    first = store.begin_post(make_grant(), max_attempts=5, now=NOW, lease=50.0)
    again = store.begin_post(make_grant(), max_attempts=5, now=NOW, lease=50.0)
    assert first.outcome == again.outcome == "started" and again.job is not None
    assert again.job.attempts == 1 and again.job.version == 1  # the one move, not a second


def test_a_job_first_started_long_after_the_promotion_gets_a_whole_confirm_deadline(
    store: JobStore, fake_redis: fakeredis.FakeRedis
) -> None:
    """Its lease ran out long ago, but its outcome is unknown from now: reading from the
    promotion's time would send it to the DLQ at its first inconclusive read."""
    store.create(make_grant())
    promoted_at = time.time() - 7200  # the store's moves carry its own clock
    promote(fake_redis, at=promoted_at)
    assert store.begin_post(make_grant(), max_attempts=5, now=NOW, lease=50.0).outcome == (
        "checked"
    )
    job = store.get("k1")
    assert job is not None and job.number("in_flight_until") == pytest.approx(promoted_at + 50)
    assert job.number("unknown_since") == pytest.approx(time.time(), abs=60)
