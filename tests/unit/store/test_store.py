"""The job store's atomic steps, on fakeredis: creation, compare-and-set moves, history, TTL."""

from __future__ import annotations

import json

import fakeredis
import pytest

from tests.fixtures.grants import make_grant
from worker.domain.states import ALLOWED, TERMINAL, DlqReason, JobState, can_move, sources_of
from worker.errors import IdempotencyConflict, TransitionRefused
from worker.store.jobs import JobStore
from worker.store.keys import Keys


def walk(store: JobStore, key: str, *states: JobState) -> None:
    for state in states:
        why = DlqReason.REFUSED if state.dead_letter else None
        store.transition(key, state, reason=f"to {state}", dlq_reason=why)


def test_create_makes_a_queued_job_with_its_first_history_entry(store: JobStore) -> None:
    assert store.create(make_grant()).created
    job = store.get("k1")
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 0
    assert [h["to"] for h in job.history] == ["queued"]
    assert job.to_json()["amount"] == "5.00"
    assert store.count_by_state()["queued"] == 1


def test_same_key_same_payload_is_a_duplicate(store: JobStore) -> None:
    store.create(make_grant())
    again = store.create(make_grant(amount="5.0"))
    assert not again.created and not again.conflict
    assert store.count_by_state()["queued"] == 1


def test_same_key_different_payload_is_a_conflict_naming_the_key(store: JobStore) -> None:
    store.create(make_grant())
    with pytest.raises(IdempotencyConflict, match="'k1'"):
        store.create(make_grant(amount="6.00"))
    job = store.get("k1")
    assert job is not None and job.grant_fields["amount"] == "5.00"


def test_allowed_moves_append_history_with_from_to_and_attempt(store: JobStore) -> None:
    store.create(make_grant())
    store.transition("k1", JobState.SUBMITTING, reason="posting", attempts="incr")
    store.transition("k1", JobState.SUBMITTED, reason="201", fields={"provider_ref": "e-9"})
    store.transition("k1", JobState.CONFIRMED, reason="seen in listing")
    job = store.get("k1")
    assert job is not None and job.state is JobState.CONFIRMED
    assert job.provider_ref == "e-9" and job.attempts == 1
    moves = [(h.get("from"), h["to"], h["attempt"]) for h in job.history]
    assert moves == [
        (None, "queued", 0),
        ("queued", "submitting", 1),
        ("submitting", "submitted", 1),
        ("submitted", "confirmed", 1),
    ]
    assert job.history[1]["reason"] == "posting"


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ((JobState.SUBMITTING, JobState.SUBMITTED, JobState.CONFIRMED), JobState.SUBMITTING),
        ((JobState.SUBMITTING, JobState.SUBMITTED, JobState.CONFIRMED), JobState.QUEUED),
        ((JobState.SUBMITTING, JobState.SUBMITTED), JobState.SUBMITTING),
        ((JobState.SUBMITTING, JobState.SUBMITTED), JobState.QUEUED),
        ((), JobState.CONFIRMED),
        ((), JobState.SUBMITTED),
    ],
)
def test_a_job_never_moves_backwards_or_skips(
    store: JobStore, path: tuple[JobState, ...], target: JobState
) -> None:
    store.create(make_grant())
    walk(store, "k1", *path)
    before = store.get("k1")
    with pytest.raises(TransitionRefused):
        store.transition("k1", target, reason="late worker")
    after = store.get("k1")
    assert before is not None and after is not None
    assert after.state is before.state and len(after.history) == len(before.history)


def test_expect_narrows_the_compare_and_set(store: JobStore) -> None:
    store.create(make_grant())
    walk(store, "k1", JobState.SUBMITTING)
    with pytest.raises(TransitionRefused, match="is submitting"):
        store.transition(
            "k1",
            JobState.DEAD,
            reason="x",
            expect=[JobState.QUEUED],
            dlq_reason=DlqReason.EXHAUSTED,
        )


def test_moving_an_unknown_job_is_refused(store: JobStore) -> None:
    with pytest.raises(TransitionRefused, match="does not exist"):
        store.transition("ghost", JobState.SUBMITTING, reason="x")
    assert not store.redis.exists(Keys.job("ghost"))


def test_terminal_jobs_get_the_retention_ttl_and_replay_clears_it(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    store = JobStore(fake_redis, ttl_seconds=3600)
    store.create(make_grant())
    assert fake_redis.ttl(Keys.job("k1")) == -1
    store.transition(
        "k1", JobState.REJECTED, reason="400 from provider", dlq_reason=DlqReason.REFUSED
    )
    assert 0 < fake_redis.ttl(Keys.job("k1")) <= 3600
    assert 0 < fake_redis.ttl(Keys.history("k1")) <= 3600
    store.transition("k1", JobState.QUEUED, reason="replay", attempts="reset")
    assert fake_redis.ttl(Keys.job("k1")) == -1 and fake_redis.ttl(Keys.history("k1")) == -1


def test_terminal_index_forgets_jobs_past_retention(fake_redis: fakeredis.FakeRedis) -> None:
    store = JobStore(fake_redis, ttl_seconds=100)
    for key in ("old", "new"):
        store.create(make_grant(key))
    store.transition("old", JobState.DEAD, reason="x", now=1_000.0, dlq_reason=DlqReason.EXHAUSTED)
    store.transition("new", JobState.DEAD, reason="x", now=1_200.0, dlq_reason=DlqReason.EXHAUSTED)
    assert store.keys_in_state(JobState.DEAD) == ["new"]


def test_indexes_follow_the_state_and_find_stuck_jobs(store: JobStore) -> None:
    for key, at in (("a", 10.0), ("b", 20.0), ("c", 30.0)):
        store.create(make_grant(key), now=at)
    store.transition("c", JobState.SUBMITTING, reason="x", now=31.0)
    assert store.keys_in_state(JobState.QUEUED) == ["a", "b"]
    assert store.keys_in_state(JobState.QUEUED, entered_before=15.0) == ["a"]
    assert store.oldest([JobState.QUEUED, JobState.SUBMITTED]) == {
        "queued": 10.0,
        "submitted": None,
    }
    counts = store.count_by_state()
    assert counts["queued"] == 2 and counts["submitting"] == 1


def test_counts_per_provider_follow_every_move_and_add_up_to_the_fleets(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    store = JobStore(fake_redis, ttl_seconds=100)
    store.create(make_grant("i1"), now=1_000.0)
    store.create(make_grant("i2"), now=1_000.0)
    store.create(make_grant("c1", provider="chargebee"), now=1_000.0)
    store.transition("i1", JobState.SUBMITTING, reason="x", now=1_001.0)
    store.transition("i2", JobState.DEAD, reason="x", now=1_002.0, dlq_reason=DlqReason.EXHAUSTED)
    store.create_rejected("bad", {"provider": "chargebee"}, {"message": "m"})
    by_provider = store.count_by_provider()
    assert {s: n for s, n in by_provider["inveterate"].items() if n} == {"submitting": 1, "dead": 1}
    assert {s: n for s, n in by_provider["chargebee"].items() if n} == {"queued": 1, "rejected": 1}
    fleet = store.count_by_state()
    assert all(fleet[s] == sum(c[s] for c in by_provider.values()) for s in fleet)
    store.transition("c1", JobState.DEAD, reason="x", now=1_003.0, dlq_reason=DlqReason.EXHAUSTED)
    store.transition("c1", JobState.QUEUED, reason="replay", now=1_004.0)  # out of the DLQ
    store.create(make_grant("i3"), now=1_200.0)
    store.transition("i3", JobState.DEAD, reason="x", now=1_200.0, dlq_reason=DlqReason.EXHAUSTED)
    store.transition("i1", JobState.CONFIRMED, reason="x", now=1_200.0)
    # i2 is past retention (ttl 100): i3 entering `dead` trimmed it from both indexes
    by_provider = store.count_by_provider()
    assert {s: n for s, n in by_provider["inveterate"].items() if n} == {"confirmed": 1, "dead": 1}
    assert {s: n for s, n in by_provider["chargebee"].items() if n} == {"queued": 1, "rejected": 1}
    fleet = store.count_by_state()
    assert all(fleet[s] == sum(c[s] for c in by_provider.values()) for s in fleet)


def test_lanes_count_unfinished_jobs_per_provider_and_lane_and_their_oldest(
    store: JobStore,
) -> None:
    store.create(make_grant("b1", priority="bulk"), now=100.0)
    store.create(make_grant("b2", priority="bulk"), now=110.0)
    store.create(make_grant("i1"), now=120.0)
    store.create(make_grant("c1", provider="chargebee"), now=130.0)
    lanes = store.lanes()
    assert lanes["inveterate"] == {"interactive": (1, 120.0), "bulk": (2, 100.0)}
    assert lanes["chargebee"] == {"interactive": (1, 130.0), "bulk": (0, None)}
    store.transition("b1", JobState.SUBMITTING, reason="x", now=140.0)
    store.transition("b1", JobState.CONFIRMED, reason="x", now=150.0)  # through: out
    store.transition("b2", JobState.DEAD, reason="x", now=150.0, dlq_reason=DlqReason.EXHAUSTED)
    assert store.lanes()["inveterate"]["bulk"] == (0, None)
    store.transition("b2", JobState.QUEUED, reason="replay", now=160.0)  # waits again
    assert store.lanes()["inveterate"]["bulk"] == (1, 160.0)
    job = store.get("b2")
    assert job is not None and job.priority == "bulk" and "priority" not in job.extra


def test_fields_are_set_as_json_and_none_deletes(store: JobStore) -> None:
    store.create(make_grant())
    error = {"status": 500, "message": "boom"}
    store.transition("k1", JobState.SUBMITTING, reason="x", fields={"last_error": error})
    job = store.get("k1")
    assert job is not None and job.last_error == error
    store.transition("k1", JobState.SUBMITTED, reason="x", fields={"last_error": None})
    job = store.get("k1")
    assert job is not None and job.last_error is None


def test_create_many_reports_created_duplicates_and_conflicts(store: JobStore) -> None:
    store.create(make_grant("taken"))
    outcomes = store.create_many(
        [make_grant("new"), make_grant("new"), make_grant("taken", amount="9.00")]
    )
    assert [(o.created, o.conflict) for o in outcomes] == [
        (True, False),
        (False, False),
        (False, True),
    ]


def test_history_is_json_with_iso_times(store: JobStore) -> None:
    store.create(make_grant())
    raw = store.redis.lrange(Keys.history("k1"), 0, -1)
    entry = json.loads(raw[0])
    assert entry["at"].endswith("+00:00") and entry["to"] == "queued"


def test_the_state_table_is_consistent() -> None:
    assert all(not ALLOWED[s] for s in TERMINAL if not s.dead_letter)
    assert sources_of(JobState.QUEUED) == {JobState.SUBMITTING, JobState.REJECTED, JobState.DEAD}
    assert not can_move(JobState.CONFIRMED, JobState.QUEUED)
    assert not can_move(JobState.SUBMITTED, JobState.SUBMITTING)


def test_pending_index_holds_jobs_in_submitting_or_submitted_per_customer(store: JobStore) -> None:
    store.create(make_grant("a"))
    store.create(make_grant("b", customer_id="c2"))
    walk(store, "a", JobState.SUBMITTING)
    assert store.pending("inveterate", "c1") == ["a"] and store.pending("inveterate", "c2") == []
    walk(store, "a", JobState.SUBMITTED)
    assert store.pending("inveterate", "c1") == ["a"]
    walk(store, "a", JobState.CONFIRMED)
    assert store.pending("inveterate", "c1") == []


def test_a_ledger_entry_confirms_one_job_only(store: JobStore) -> None:
    from worker.errors import EntryClaimed

    for key in ("a", "b"):
        store.create(make_grant(key))
        walk(store, key, JobState.SUBMITTING, JobState.SUBMITTED)
    store.transition("a", JobState.CONFIRMED, reason="seen", claim="entry-1")
    with pytest.raises(EntryClaimed, match="entry-1"):
        store.transition("b", JobState.CONFIRMED, reason="seen", claim="entry-1")
    job = store.get("b")
    assert job is not None and job.state is JobState.SUBMITTED
    assert store.claimed("inveterate", "c1") == {"entry-1"}


def test_due_index_tracks_unfinished_jobs_and_forgets_finished_ones(store: JobStore) -> None:
    store.create(make_grant("a"), now=100.0)
    store.create(make_grant("b"), now=100.0)
    assert store.overdue(before=150.0) == ["a", "b"]
    store.transition("a", JobState.SUBMITTING, reason="x", due=500.0)
    store.transition("b", JobState.REJECTED, reason="x", dlq_reason=DlqReason.REFUSED)
    assert store.overdue(before=150.0) == [] and store.overdue(before=600.0) == ["a"]
    store.set_due("b", 10.0)  # a finished job is never due again
    assert store.overdue(before=600.0) == ["a"]


def test_a_stale_version_loses_the_compare_and_set(store: JobStore) -> None:
    store.create(make_grant())
    job = store.get("k1")
    assert job is not None and job.version == 0
    store.transition("k1", JobState.SUBMITTING, reason="first", version=0)
    with pytest.raises(TransitionRefused):
        store.transition("k1", JobState.SUBMITTING, reason="second", version=0)
    job = store.get("k1")
    assert job is not None and job.version == 1 and len(job.history) == 2


def test_a_flag_is_set_by_the_first_move_only(store: JobStore) -> None:
    for key in ("a", "b"):
        store.create(make_grant(key))
        store.transition(key, JobState.SUBMITTING, reason="x")
    flag = "creditq:t:flag"
    first = store.transition("a", JobState.SUBMITTED, reason="x", flag=(flag, 30, "t1"))
    second = store.transition("b", JobState.SUBMITTED, reason="x", flag=(flag, 30, "t2"))
    assert first.flagged and not second.flagged and store.redis.get(flag) == "t1"
    assert 0 < store.redis.pttl("creditq:t:flag") <= 30_000


def test_an_invalid_message_without_a_job_is_recorded_rejected(store: JobStore) -> None:
    error = {"class": "validation", "message": "amount: must not be zero"}
    assert store.create_rejected("bad-1", {"amount": "0", "provider": "inveterate"}, error)
    job = store.get("bad-1")
    assert job is not None and job.state is JobState.REJECTED and job.last_error == error
    assert store.redis.ttl(Keys.job("bad-1")) > 0 and store.overdue(before=1e12) == []
    assert not store.create_rejected("bad-1", {}, error)


def test_dlq_indexes_follow_jobs_in_and_out_by_provider_and_reason(store: JobStore) -> None:
    store.create(make_grant("a"))
    store.create(make_grant("b", provider="chargebee"))
    store.transition("a", JobState.DEAD, reason="x", dlq_reason=DlqReason.EXHAUSTED)
    store.transition("b", JobState.REJECTED, reason="x", dlq_reason=DlqReason.REFUSED)
    r = store.redis
    assert set(r.zrange(Keys.dlq(), 0, -1)) == {"a", "b"}
    assert r.zrange(Keys.dlq(provider="chargebee"), 0, -1) == ["b"]
    assert r.zrange(Keys.dlq(reason="exhausted"), 0, -1) == ["a"]
    store.transition("a", JobState.QUEUED, reason="replay", attempts="reset")
    assert (
        r.zrange(Keys.dlq(), 0, -1) == ["b"] and r.zrange(Keys.dlq(reason="exhausted"), 0, -1) == []
    )
    assert "dlq_reason" not in r.hgetall(Keys.job("a"))


def test_a_move_into_the_dlq_must_say_why(store: JobStore) -> None:
    store.create(make_grant())
    with pytest.raises(ValueError, match="dlq_reason"):
        store.transition("k1", JobState.DEAD, reason="x")


def test_a_key_spelled_like_another_jobs_history_is_a_job_of_its_own(store: JobStore) -> None:
    """``order-9:history`` once addressed job ``order-9``'s history list: the second create
    failed half-way (WRONGTYPE) and left ``order-9`` in no index."""
    assert store.create(make_grant("order-9")).created
    assert store.create(make_grant("order-9:history")).created
    store.transition("order-9", JobState.SUBMITTING, reason="POST")
    first, second = store.get("order-9"), store.get("order-9:history")
    assert first is not None and [h["to"] for h in first.history] == ["queued", "submitting"]
    assert second is not None and [h["to"] for h in second.history] == ["queued"]
    assert store.count_by_state() == {
        **dict.fromkeys([s.value for s in JobState], 0),
        "queued": 1,
        "submitting": 1,
    }
    assert Keys.history("order-9") != Keys.job("order-9:history")


def test_a_move_returns_the_job_as_the_script_left_it(store: JobStore) -> None:
    """The pipeline goes on from the stored job, never from its own copy of what it wrote."""
    g = make_grant("k1")
    store.create(g)
    moved = store.transition(
        "k1",
        JobState.SUBMITTING,
        reason="POST attempt 1",
        attempts="incr",
        fields={"first_post_at": 12.5, "last_error": {"class": "ambiguous"}},
    )
    assert moved.job is not None
    assert moved.job == store.get("k1", history=False)
    assert (moved.job.state, moved.job.attempts, moved.job.version) == (JobState.SUBMITTING, 1, 1)
    assert moved.job.number("first_post_at") == 12.5
    assert moved.job.last_error == {"class": "ambiguous"}
    again = store.transition(
        "k1",
        JobState.QUEUED,
        reason="did not apply",
        attempts="decr",
        fields={"first_post_at": None},
        version=1,
    )
    assert again.job is not None
    assert (again.job.attempts, again.job.version) == (0, 2)
    assert "first_post_at" not in again.job.extra
