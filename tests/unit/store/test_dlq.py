"""The dead-letter queue over fakeredis: listing and its filters, replay outcomes, purge, CLI."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fixtures.celery import PublishRecorder
from tests.fixtures.cli import run
from tests.fixtures.simulation import World
from worker.app import ISSUE_TASK
from worker.domain.grant import CreditGrant, Provider
from worker.domain.states import DlqReason, JobState
from worker.store import dlq
from worker.store.dlq import PurgeResult, ReplayResult
from worker.store.jobs import JobStore
from worker.store.keys import Keys

T0 = 1_800_000_000.0


def grant(key: str, provider: str = "inveterate", amount: str = "5.00") -> CreditGrant:
    return CreditGrant(
        idempotency_key=key,
        provider=provider,
        customer_id=f"cust-{key}",
        amount=amount,
        note="order",
    )


def dead_letter(
    store: JobStore,
    key: str,
    *,
    provider: str = "inveterate",
    reason: DlqReason = DlqReason.REFUSED,
    at: float = T0,
    posted: bool = True,
    error: dict[str, Any] | None = None,
) -> None:
    """A job taken the way the pipeline takes it into the DLQ (through submitting if POSTed)."""
    store.create(grant(key, provider), now=at - 10)
    if posted:
        store.transition(
            key,
            JobState.SUBMITTING,
            reason="POST attempt 1",
            attempts="incr",
            fields={"first_post_at": at - 5},
            now=at - 5,
        )
        if reason is DlqReason.NOT_VISIBLE:  # accepted (2xx), never seen
            store.transition(
                key,
                JobState.SUBMITTED,
                reason="HTTP 201",
                fields={"submitted_at": at - 4},
                now=at - 4,
            )
        elif reason is DlqReason.UNKNOWN:
            store.transition(
                key,
                JobState.SUBMITTING,
                reason="outcome unknown",
                fields={"outcome_unknown": "1"},
                now=at - 4,
            )
    target = JobState.REJECTED if reason is DlqReason.REFUSED else JobState.DEAD
    store.transition(
        key,
        target,
        reason=f"to the DLQ: {reason}",
        dlq_reason=reason,
        now=at,
        fields={
            "last_error": error
            or {"class": "permanent", "status": 404, "message": "customer not found"}
        },
    )


def keys_of(jobs: list[Any]) -> list[str]:
    return [j.idempotency_key for j in jobs]


@pytest.fixture
def mixed(store: JobStore) -> JobStore:
    """Eight dead letters, one second apart: alternate providers, reasons in turn."""
    reasons = [DlqReason.REFUSED, DlqReason.EXHAUSTED, DlqReason.NOT_VISIBLE, DlqReason.REFUSED]
    for i in range(8):
        dead_letter(
            store,
            f"k{i}",
            provider=("inveterate", "chargebee")[i % 2],
            reason=reasons[i % 4],
            at=T0 + i,
        )
    return store


# -- listing ----------------------------------------------------------------------


def test_list_is_newest_first_and_stops_at_the_limit(mixed: JobStore) -> None:
    assert keys_of(dlq.list_dlq(mixed)) == [f"k{i}" for i in range(7, -1, -1)]
    assert keys_of(dlq.list_dlq(mixed, limit=3)) == ["k7", "k6", "k5"]


def test_list_filters_by_provider_by_reason_and_by_both(mixed: JobStore) -> None:
    assert keys_of(dlq.list_dlq(mixed, provider="chargebee")) == ["k7", "k5", "k3", "k1"]
    assert keys_of(dlq.list_dlq(mixed, reason="refused")) == ["k7", "k4", "k3", "k0"]
    assert keys_of(dlq.list_dlq(mixed, provider="chargebee", reason="refused")) == ["k7", "k3"]
    assert keys_of(dlq.list_dlq(mixed, provider="inveterate", reason="exhausted")) == []
    assert keys_of(dlq.list_dlq(mixed, provider="chargebee", reason="refused", limit=1)) == ["k7"]


def test_list_since_keeps_what_entered_at_or_after_it(mixed: JobStore) -> None:
    assert keys_of(dlq.list_dlq(mixed, since=T0 + 5)) == ["k7", "k6", "k5"]
    assert keys_of(dlq.list_dlq(mixed, reason="refused", since=T0 + 3.5)) == ["k7", "k4"]
    assert dlq.list_dlq(mixed, since=T0 + 100) == []


def test_list_rejects_unknown_filters_and_a_zero_limit(mixed: JobStore) -> None:
    with pytest.raises(ValueError, match="provider must be one of"):
        dlq.list_dlq(mixed, provider="paypal")
    with pytest.raises(ValueError, match="reason must be one of"):
        dlq.list_dlq(mixed, reason="bored")
    with pytest.raises(ValueError, match="limit"):
        dlq.list_dlq(mixed, limit=0)


def test_list_skips_entries_whose_job_expired_and_still_fills_the_limit(mixed: JobStore) -> None:
    mixed.redis.delete(Keys.job("k7"), Keys.job("k6"))  # the retention TTL took them
    assert keys_of(dlq.list_dlq(mixed, limit=3)) == ["k5", "k4", "k3"]


def test_an_intersection_scans_the_smaller_set(mixed: JobStore) -> None:
    for i in range(8, 40):  # make inveterate big and not_visible small
        dead_letter(mixed, f"k{i}", reason=DlqReason.EXHAUSTED, at=T0 + i)
    assert keys_of(dlq.list_dlq(mixed, provider="inveterate", reason="not_visible")) == ["k6", "k2"]
    assert dlq._scan_plan(mixed, "inveterate", "not_visible")[0] == Keys.dlq(reason="not_visible")


def test_dead_letter_json_always_has_a_last_error_and_a_reason(store: JobStore) -> None:
    store.create(grant("late"))
    store.transition("late", JobState.SUBMITTING, reason="POST attempt 1", attempts="incr")
    store.transition("late", JobState.SUBMITTED, reason="HTTP 201")
    store.transition(
        "late", JobState.DEAD, reason="not visible 600s after", dlq_reason=DlqReason.NOT_VISIBLE
    )
    job = store.get("late")
    assert job is not None
    out = dlq.dead_letter_json(job)
    assert out["reason"] == "not_visible" and out["dlq_at"]
    assert out["last_error"]["message"] == "not visible 600s after"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", T0 - 7200),
        ("30m", T0 - 1800),
        ("45s", T0 - 45),
        ("1.5d", T0 - 129600),
        ("1800000000", T0),
        ("2027-01-14T08:00:00Z", 1_799_913_600.0),
        ("2027-01-14T08:00:00", 1_799_913_600.0),
    ],
)
def test_since_reads_durations_iso_times_and_epochs(text: str, expected: float) -> None:
    assert dlq.parse_since(text, now=T0) == pytest.approx(expected)


def test_since_refuses_anything_else() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        dlq.parse_since("yesterday", now=T0)


# -- replay -----------------------------------------------------------------------


def test_replay_moves_back_to_queued_resets_attempts_and_publishes_once(
    store: JobStore, recorder: PublishRecorder
) -> None:
    dead_letter(store, "r1", posted=False)
    dead_letter(store, "r2", reason=DlqReason.EXHAUSTED)
    outcomes = dlq.replay(store, ["r1", "r2"], app=recorder)  # type: ignore[arg-type]
    assert [o.result for o in outcomes] == [ReplayResult.REPLAYED] * 2
    assert [name for name, _ in recorder.sent] == [ISSUE_TASK, ISSUE_TASK]
    assert recorder.sent[1][1] == grant("r2").to_message()
    r1, r2 = store.get_many(["r1", "r2"])
    assert r1 is not None and r2 is not None
    assert r1.state is r2.state is JobState.QUEUED and r1.attempts == r2.attempts == 0
    assert r2.history[-1]["reason"] == "replayed from the DLQ"
    assert store.redis.zscore(Keys.DUE, "r2") is not None
    assert store.redis.zcard(Keys.dlq()) == 0 and "dlq_reason" not in r2.extra


def test_only_a_job_whose_credit_may_exist_comes_back_with_reconcile_first(
    store: JobStore, recorder: PublishRecorder
) -> None:
    """Accepted (2xx) or an outcome still unknown: the listing speaks first. Never POSTed,
    or refused for good (a 4xx applies nothing): POSTed again."""
    dead_letter(store, "never", posted=False)
    dead_letter(store, "refused", reason=DlqReason.REFUSED)
    dead_letter(store, "accepted", reason=DlqReason.NOT_VISIBLE)
    dead_letter(store, "unknown", reason=DlqReason.UNKNOWN)
    keys = ["never", "refused", "accepted", "unknown"]
    outcomes = dlq.replay(store, keys, app=recorder)  # type: ignore[arg-type]
    assert [o.reconcile_first for o in outcomes] == [False, False, True, True]
    jobs = store.get_many(keys)
    assert [j is not None and j.extra.get("reconcile_first") == "1" for j in jobs] == [
        False,
        False,
        True,
        True,
    ]


def test_a_double_replay_is_refused_and_sends_nothing_the_second_time(
    store: JobStore, recorder: PublishRecorder
) -> None:
    dead_letter(store, "twice")
    first = dlq.replay(store, ["twice"], app=recorder)  # type: ignore[arg-type]
    second = dlq.replay(store, ["twice", "twice"], app=recorder)  # type: ignore[arg-type]
    assert first[0].result is ReplayResult.REPLAYED
    assert [o.result for o in second] == [ReplayResult.NOT_IN_DLQ]  # the duplicate folded
    assert second[0].state == "queued" and "nothing sent" in second[0].detail
    assert len(recorder.sent) == 1


def test_a_job_outside_the_dlq_or_unknown_is_refused_untouched(
    store: JobStore, recorder: PublishRecorder
) -> None:
    store.create(grant("live"))
    store.transition("live", JobState.SUBMITTING, reason="POST", attempts="incr")
    store.transition("live", JobState.CONFIRMED, reason="seen")
    before = store.get("live")
    outcomes = dlq.replay(store, ["live", "nope"], app=recorder)  # type: ignore[arg-type]
    assert [(o.result, o.state) for o in outcomes] == [
        (ReplayResult.NOT_IN_DLQ, "confirmed"),
        (ReplayResult.UNKNOWN, None),
    ]
    assert store.get("live") == before and recorder.sent == []


def test_an_invalid_stored_grant_cannot_be_replayed_and_nothing_changes(
    store: JobStore, recorder: PublishRecorder
) -> None:
    raw = {
        "idempotency_key": "zero-1",
        "provider": "inveterate",
        "customer_id": "m-1",
        "amount": "0.00",
    }
    store.create_rejected(
        "zero-1",
        raw,
        {"class": "validation", "status": None, "message": "amount: must not be zero"},
    )
    before = store.get("zero-1")
    (outcome,) = dlq.replay(store, ["zero-1"], app=recorder)  # type: ignore[arg-type]
    assert outcome.result is ReplayResult.INVALID and "must not be zero" in outcome.detail
    assert store.get("zero-1") == before and recorder.sent == []
    assert store.redis.zscore(Keys.dlq(reason="invalid"), "zero-1") is not None


def test_a_dry_run_changes_nothing_and_publishes_nothing(
    mixed: JobStore, recorder: PublishRecorder
) -> None:
    before = mixed.get_many([f"k{i}" for i in range(8)])
    outcomes = dlq.replay(mixed, dlq.select(mixed), app=recorder, dry_run=True)  # type: ignore[arg-type]
    assert {o.result for o in outcomes} == {ReplayResult.WOULD_REPLAY} and len(outcomes) == 8
    assert mixed.get_many([f"k{i}" for i in range(8)]) == before and recorder.sent == []


def test_selectors_pick_all_by_provider_by_reason_oldest_first(mixed: JobStore) -> None:
    assert dlq.select(mixed) == [f"k{i}" for i in range(8)]
    assert dlq.select(mixed, provider="inveterate") == ["k0", "k2", "k4", "k6"]
    assert dlq.select(mixed, reason="exhausted") == ["k1", "k5"]
    assert dlq.select(mixed, provider="chargebee", reason="refused") == ["k3", "k7"]


def test_a_failed_publish_leaves_the_job_queued_and_due_for_the_sweep(store: JobStore) -> None:
    class DownBroker(PublishRecorder):
        def send_task(self, name: str, kwargs: dict[str, Any], **_: Any) -> None:
            raise ConnectionError("broker down")

    dead_letter(store, "k")
    (outcome,) = dlq.replay(store, ["k"], app=DownBroker())  # type: ignore[arg-type]
    assert outcome.result is ReplayResult.REPLAYED and "reconciler" in outcome.detail
    assert store.redis.zscore(Keys.DUE, "k") is not None


def _replay_in(world: World, key: str) -> None:
    """`dlq replay` for real (worker/store/dlq.py), its message run by the simulated workers."""
    sent = PublishRecorder()
    dlq.replay(world.store, [key], app=sent)  # type: ignore[arg-type]
    for _, message in sent.sent:
        world.scheduler.issue(message, 0.0)
    world.run()


def test_replay_runs_through_the_pipeline_and_an_applied_credit_is_not_paid_twice(
    store: JobStore,
) -> None:
    world = World(store, confirm_deadline=30.0)
    inv = world.providers[Provider.INVETERATE]
    inv.lag = 100.0  # shown only after the confirm deadline: the job dies not_visible
    store.create(grant("g1"))
    world.scheduler.issue(grant("g1").to_message(), 0.0)
    world.run()
    assert dlq.list_dlq(store, reason="not_visible")[0].idempotency_key == "g1"
    world.clock.now += 200  # by now the credit shows
    _replay_in(world, "g1")
    job = store.get("g1")
    assert job is not None and job.state is JobState.CONFIRMED
    assert inv.submits == 1 and inv.credits_for(world.marker("g1")) == 1


def test_replaying_a_not_visible_job_whose_credit_still_lags_never_posts_again(
    store: JobStore,
) -> None:
    world = World(store, confirm_deadline=30.0)
    inv = world.providers[Provider.INVETERATE]
    inv.lag = 1000.0  # longer than the deadline and than settle: still hidden at replay
    store.create(grant("g1"))
    world.scheduler.issue(grant("g1").to_message(), 0.0)
    world.run()
    _replay_in(world, "g1")
    assert inv.submits == 1 and inv.credits_for(world.marker("g1")) == 1
    job = store.get("g1")  # it waited for the listing again, with a fresh deadline
    assert job is not None and job.state is JobState.DEAD
    assert [h["to"] for h in job.history[-3:]] == ["submitting", "submitted", "dead"]


# -- purge ------------------------------------------------------------------------


def test_purge_removes_the_job_its_history_and_every_index_entry(store: JobStore) -> None:
    dead_letter(store, "gone", provider="chargebee", reason=DlqReason.EXHAUSTED)
    store.redis.zadd(Keys.DUE, {"gone": T0})  # a stray due entry is swept too
    (outcome,) = dlq.purge(store, ["gone"])
    assert outcome.result is PurgeResult.PURGED
    r = store.redis
    assert r.exists(Keys.job("gone"), Keys.history("gone")) == 0
    for index in [
        Keys.dlq(),
        Keys.dlq(provider="chargebee"),
        Keys.dlq(reason="exhausted"),
        Keys.index(JobState.DEAD),
        Keys.index(JobState.DEAD, "chargebee"),
        Keys.DUE,
    ]:
        assert r.zscore(index, "gone") is None, index
    assert store.count_by_state()["dead"] == 0
    assert store.count_by_provider()["chargebee"]["dead"] == 0


def test_purge_never_touches_a_live_job_and_says_so(store: JobStore) -> None:
    store.create(grant("live"))
    outcomes = dlq.purge(store, ["live", "nope"])
    assert [(o.result, o.state) for o in outcomes] == [
        (PurgeResult.NOT_IN_DLQ, "queued"),
        (PurgeResult.UNKNOWN, None),
    ]
    assert store.get("live") is not None


def test_purge_clears_index_entries_left_by_an_expired_job(store: JobStore) -> None:
    dead_letter(store, "old", reason=DlqReason.REFUSED)
    store.redis.delete(Keys.job("old"), Keys.history("old"))
    (outcome,) = dlq.purge(store, ["old"])
    assert outcome.result is PurgeResult.STALE
    assert store.redis.zcard(Keys.dlq()) == 0 and store.redis.zcard(Keys.dlq(reason="refused")) == 0
    assert store.count_by_provider()["inveterate"]["rejected"] == 0


def test_a_purged_key_can_be_replayed_no_more(store: JobStore, recorder: PublishRecorder) -> None:
    dead_letter(store, "p")
    dlq.purge(store, ["p"])
    (outcome,) = dlq.replay(store, ["p"], app=recorder)  # type: ignore[arg-type]
    assert outcome.result is ReplayResult.UNKNOWN and recorder.sent == []


# -- the command line -------------------------------------------------------------


def test_cli_list_json_prints_one_dead_letter_per_line(
    cli_store: JobStore, capsys: pytest.CaptureFixture[str]
) -> None:
    dead_letter(cli_store, "a", at=T0)
    dead_letter(
        cli_store,
        "b",
        provider="chargebee",
        reason=DlqReason.EXHAUSTED,
        at=T0 + 1,
        error={"class": "not_applied", "status": 503, "message": "unavailable"},
    )
    code, out, err = run(capsys, "dlq", "list", "--json")
    assert code == 0 and err == ""
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(j["idempotency_key"], j["reason"]) for j in lines] == [
        ("b", "exhausted"),
        ("a", "refused"),
    ]
    assert lines[0]["last_error"]["status"] == 503 and lines[0]["amount"] == "5.00"
    assert {"state", "provider", "customer_id", "attempts", "history"} <= lines[0].keys()
    code, out, _ = run(capsys, "dlq", "list", "--json", "--provider", "inveterate", "--limit", "5")
    assert [json.loads(line)["idempotency_key"] for line in out.splitlines()] == ["a"]


def test_cli_list_table_shows_the_columns_people_need(
    cli_store: JobStore, capsys: pytest.CaptureFixture[str]
) -> None:
    dead_letter(cli_store, "tbl-1", at=T0)
    code, out, _ = run(capsys, "dlq", "list", "--reason", "refused", "--since", "3650d")
    assert code == 0
    for text in (
        "tbl-1",
        "inveterate",
        "cust-tbl-1",
        "5.00",
        "refused",
        "404",
        "customer not found",
        "1 shown; 1 in the DLQ matching",
    ):
        assert text in out, text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["dlq", "list", "--since", "yesterday"], "not a duration"),
        (["dlq", "list", "--provider", "paypal"], "--provider"),
        (["dlq", "list", "--limit", "0"], "--limit"),
        (["dlq", "replay"], "name the jobs"),
        (["dlq", "replay", "k0", "--all"], "not both"),
        (["dlq", "replay", "--all", "--reason", "refused"], "--all takes no"),
        (["dlq", "purge", "--all"], "add --yes"),
        (["dlq", "purge"], "name the jobs"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_changes_nothing(
    mixed: JobStore,
    cli_store: JobStore,
    recorder: PublishRecorder,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    before = mixed.get_many(dlq.select(mixed))
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("creditq: ") and message in err
    assert mixed.get_many(dlq.select(mixed)) == before and recorder.sent == []


def test_cli_show_prints_the_whole_history(
    cli_store: JobStore, capsys: pytest.CaptureFixture[str]
) -> None:
    dead_letter(cli_store, "s1")
    code, out, _ = run(capsys, "dlq", "show", "s1", "--json")
    job = json.loads(out)
    assert code == 0 and [h["to"] for h in job["history"]] == ["queued", "submitting", "rejected"]
    code, out, _ = run(capsys, "dlq", "show", "s1")
    assert code == 0 and "POST attempt 1" in out and "customer not found" in out
    code, out, err = run(capsys, "dlq", "show", "missing")
    assert code == 1 and "missing" in err and err.count("\n") == 1


def test_cli_replay_reports_each_key_and_exits_1_on_a_refusal(
    cli_store: JobStore, recorder: PublishRecorder, capsys: pytest.CaptureFixture[str]
) -> None:
    dead_letter(cli_store, "c1")
    code, out, _ = run(capsys, "dlq", "replay", "c1", "--dry-run", "--json")
    assert code == 0 and json.loads(out)["result"] == "would_replay" and recorder.sent == []
    code, out, _ = run(capsys, "dlq", "replay", "c1", "--json")
    assert code == 0 and json.loads(out)["result"] == "replayed" and len(recorder.sent) == 1
    code, out, _ = run(capsys, "dlq", "replay", "c1")
    assert code == 1 and "c1: not_in_dlq" in out and "0 of 1 done" in out
    assert len(recorder.sent) == 1


def test_cli_replay_by_reason_and_purge_all_with_yes(
    mixed: JobStore,
    cli_store: JobStore,
    recorder: PublishRecorder,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "dlq", "replay", "--reason", "exhausted", "--json")
    assert code == 0 and [json.loads(x)["idempotency_key"] for x in out.splitlines()] == [
        "k1",
        "k5",
    ]
    assert len(recorder.sent) == 2
    code, out, _ = run(capsys, "dlq", "purge", "--all", "--yes")
    assert code == 0 and "purge: 6 of 6 done" in out
    assert mixed.redis.zcard(Keys.dlq()) == 0 and mixed.get("k1") is not None  # k1 is queued
    code, out, _ = run(capsys, "dlq", "purge", "k1", "--json")
    assert code == 1 and json.loads(out) == {
        "idempotency_key": "k1",
        "result": "not_in_dlq",
        "ok": False,
        "state": "queued",
    }


def test_cli_stats_counts_the_dlq(cli_store: JobStore, capsys: pytest.CaptureFixture[str]) -> None:
    dead_letter(cli_store, "d1")
    dead_letter(cli_store, "d2", reason=DlqReason.EXHAUSTED)
    cli_store.create(grant("waiting"))
    code, out, _ = run(capsys, "stats", "--json")
    stats = json.loads(out)
    assert code == 0 and stats["dlq_depth"] == 2 and stats["oldest_age_seconds"]["queued"] >= 0
    assert stats["states_by_provider"]["inveterate"]["rejected"] == 1
    assert stats["states_by_provider"]["inveterate"]["dead"] == 1
    lanes = {(lane["provider"], lane["lane"]): lane for lane in stats["lanes"]}
    assert lanes["inveterate", "interactive"]["waiting"] == 1  # the queued one
    assert lanes["inveterate", "interactive"]["drain_seconds"] > 0
    assert lanes["chargebee", "bulk"] == {
        "provider": "chargebee",
        "lane": "bulk",
        "waiting": 0,
        "oldest_age_seconds": None,
        "drain_seconds": 0.0,
    }
