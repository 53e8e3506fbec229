"""The pipeline's decisions, in a simulated world (fake clock, in-memory provider, fakeredis).

Each test drives scheduled work to the end and checks the one invariant that matters:
exactly one credit per key, and the job where it should be.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fixtures.celery import PublishRecorder
from tests.fixtures.grants import message
from tests.fixtures.simulation import World, state
from worker.budget import ProviderBudget
from worker.domain.grant import CreditGrant, Provider
from worker.domain.states import DlqReason, JobState
from worker.errors import TransitionRefused
from worker.store import dlq
from worker.store.jobs import JobStore


def start(world: World, *messages: dict[str, Any], witness_after: float | None = None) -> None:
    """Hand the grants over and run everything. ``witness_after``: another member's grant
    arrives that many seconds later, a credit the provider accepts after the others' first
    tries, whose showing in a listing proves the listing shows writes that late."""
    for m in messages:
        world.store.create(CreditGrant.parse(m))
        world.scheduler.issue(m, 0.0)
    if witness_after is not None:
        w = message("witness", provider=messages[0]["provider"], customer_id="m-witness")
        world.store.create(CreditGrant.parse(w))
        world.scheduler.issue(w, witness_after)
    world.run()


def test_a_grant_is_posted_once_and_confirmed_from_the_listing(world: World) -> None:
    start(world, message())
    inv = world.providers[Provider.INVETERATE]
    assert state(world) is JobState.CONFIRMED
    assert inv.submits == 1 and inv.reads == 1 and inv.credits_for(world.marker("g1")) == 1
    job = world.store.get("g1")
    assert job is not None and job.to_json()["provider_entry"]["matched_by"] == "marker"
    assert [h["to"] for h in job.history] == ["queued", "submitting", "submitted", "confirmed"]


def test_500_after_applying_is_reconciled_from_the_listing_without_a_second_post(
    world: World,
) -> None:
    world.providers[Provider.INVETERATE].script = ["error_after"]
    start(world, message())
    inv = world.providers[Provider.INVETERATE]
    assert state(world) is JobState.CONFIRMED
    assert inv.submits == 1 and inv.credits_for(world.marker("g1")) == 1


def test_500_before_applying_is_posted_again_only_after_the_listing_settled(world: World) -> None:
    inv = world.providers[Provider.INVETERATE]
    inv.script = ["error_before"]
    inv.lag = 5.0
    start(world, message(), witness_after=1.0)
    assert state(world) is JobState.CONFIRMED
    assert inv.submits == 3 and inv.credits_for(world.marker("g1")) == 1  # g1 twice, witness
    job = world.store.get("g1")
    assert job is not None
    times = [h["at"] for h in job.history if h["to"] == "submitting"]
    assert len(times) == 3  # POST, outcome unknown, second POST


def test_a_lagging_listing_does_not_trick_reconciliation_into_paying_twice(world: World) -> None:
    inv = world.providers[Provider.INVETERATE]
    inv.script = ["error_after"]
    inv.lag = 15.0  # below settle (20 s): the credit shows before its absence counts
    start(world, message())
    assert state(world) is JobState.CONFIRMED and inv.credits_for(world.marker("g1")) == 1


def test_chargebee_ambiguous_answer_is_retried_with_the_same_idempotency_key(world: World) -> None:
    cb = world.providers[Provider.CHARGEBEE]
    cb.script = ["error_after"]
    cb.lag = 5.0  # not in the listing yet when the retry is due: the record answers it
    start(world, message(provider="chargebee", customer_id="c-1"))
    assert state(world) is JobState.CONFIRMED
    assert cb.submits == 2 and cb.credits_for(world.marker("g1")) == 1


def test_chargebee_retry_reads_the_listing_first_and_a_shown_credit_needs_no_retry(
    world: World,
) -> None:
    """A record lost early (or a proxy dropping the header) must not be all that stands
    between the customer and a second credit: the listing is read before the retry."""
    cb = world.providers[Provider.CHARGEBEE]
    cb.script = ["error_after"]
    start(world, message(provider="chargebee", customer_id="c-1"))
    assert state(world) is JobState.CONFIRMED
    assert cb.submits == 1 and cb.credits_for(world.marker("g1")) == 1


def test_a_permanent_refusal_rejects_with_the_providers_message_and_no_retry(world: World) -> None:
    world.providers[Provider.INVETERATE].script = ["refused"]
    start(world, message())
    job = world.store.get("g1")
    assert job is not None and job.state is JobState.REJECTED
    assert job.last_error is not None and job.last_error["status"] == 404
    assert job.last_error["message"] == "customer not found"
    assert world.providers[Provider.INVETERATE].submits == 1


def test_429_retries_after_retry_after_without_using_up_an_attempt(world: World) -> None:
    inv = world.providers[Provider.INVETERATE]
    inv.script = ["rate_limited"] * 3
    t0 = world.clock.now
    start(world, message())
    job = world.store.get("g1")
    assert job is not None and job.state is JobState.CONFIRMED and job.attempts == 1
    assert inv.submits == 4 and world.clock.now - t0 >= 3 * 7.0


def test_not_applied_failures_end_dead_after_max_attempts(world: World) -> None:
    inv = world.providers[Provider.INVETERATE]
    inv.script = ["connect"] * 10
    start(world, message())
    job = world.store.get("g1")
    assert job is not None and job.state is JobState.DEAD and job.attempts == 5
    assert inv.submits == 5 and "attempts exhausted" in job.history[-1]["reason"]


def test_a_zero_amount_that_bypassed_the_producer_is_rejected_without_any_call(
    world: World,
) -> None:
    bad = {**message("z1"), "amount": "0"}
    assert world.pipeline.issue(bad) == "rejected"
    job = world.store.get("z1")
    assert job is not None and job.state is JobState.REJECTED
    assert job.last_error is not None and "must not be zero" in job.last_error["message"]
    assert world.providers[Provider.INVETERATE].submits == 0
    assert world.scheduler.queue == []


def test_a_valid_message_without_a_job_is_adopted_and_issued(world: World) -> None:
    world.scheduler.issue(message("adopted"), 0.0)
    world.run()
    assert state(world, "adopted") is JobState.CONFIRMED


def test_the_same_message_delivered_twice_pays_once(world: World) -> None:
    m = message()
    world.store.create(CreditGrant.parse(m))
    world.scheduler.issue(m, 0.0)
    world.scheduler.issue(m, 0.0)
    world.run()
    inv = world.providers[Provider.INVETERATE]
    assert state(world) is JobState.CONFIRMED and inv.submits == 1


def test_a_post_in_flight_holds_off_every_other_delivery(world: World) -> None:
    m = message()
    world.store.create(CreditGrant.parse(m))
    now = world.clock.now
    # Another delivery moved the job into submitting and its POST is still in flight.
    world.store.transition(
        "g1",
        JobState.SUBMITTING,
        reason="POST attempt 1",
        attempts="incr",
        fields={"first_post_at": now, "last_post_at": now, "in_flight_until": now + 50},
    )
    assert world.pipeline.issue(m) == "post in flight"
    assert world.providers[Provider.INVETERATE].submits == 0
    assert world.scheduler.queue[0].at == now + 50


def test_two_deliveries_racing_on_one_queued_job_post_once(world: World) -> None:
    m = message()
    world.store.create(CreditGrant.parse(m))
    stale = world.store.get("g1", history=False)
    assert stale is not None
    assert world.pipeline.issue(m) == "submitted"  # the first delivery wins
    with pytest.raises(TransitionRefused):  # the second read the job before that move
        world.pipeline.issuer._issue_job(stale)
    assert world.providers[Provider.INVETERATE].submits == 1


def test_a_worker_killed_after_posting_is_healed_by_the_sweep_without_paying_twice(
    world: World,
) -> None:
    m = message()
    world.store.create(CreditGrant.parse(m))
    inv = world.providers[Provider.INVETERATE]
    # The worker moved the job to submitting and POSTed, then died: no answer recorded.
    world.store.transition(
        "g1",
        JobState.SUBMITTING,
        reason="POST attempt 1",
        attempts="incr",
        fields={"first_post_at": world.clock.now, "last_post_at": world.clock.now},
        due=world.clock.now + 50,
    )
    inv.submit(CreditGrant.parse(m), world.marker("g1"))
    world.clock.now += 200
    assert world.pipeline.reconcile() == 1
    world.run()
    assert state(world) is JobState.CONFIRMED and inv.submits == 1


def test_a_job_saved_but_never_published_is_published_by_the_sweep(world: World) -> None:
    world.store.create(CreditGrant.parse(message()), now=world.clock.now)
    assert world.pipeline.reconcile() == 0  # not overdue yet
    world.clock.now += 61
    assert world.pipeline.reconcile() == 1
    world.run()
    assert state(world) is JobState.CONFIRMED


def test_a_credit_that_never_shows_is_dead_after_the_confirm_deadline(store: JobStore) -> None:
    world = World(store, confirm_deadline=120.0)
    world.providers[Provider.INVETERATE].lag = 10_000.0
    start(world, message())
    job = world.store.get("g1")
    assert job is not None and job.state is JobState.DEAD
    assert "not visible" in job.history[-1]["reason"]
    reads = world.providers[Provider.INVETERATE].reads
    assert 3 <= reads <= 12  # polls grow apart instead of hammering the budget


def test_one_listing_read_confirms_every_pending_grant_of_the_customer(world: World) -> None:
    inv = world.providers[Provider.INVETERATE]
    inv.lag = 1.0
    start(world, *(message(f"g{i}") for i in range(5)))
    assert all(state(world, f"g{i}") is JobState.CONFIRMED for i in range(5))
    assert inv.submits == 5 and inv.reads == 1


def test_without_markers_equal_amounts_each_claim_a_different_entry(world: World) -> None:
    inv = world.providers[Provider.INVETERATE]
    inv.echo_markers = False
    start(world, *(message(f"g{i}") for i in range(3)))
    jobs = [world.store.get(f"g{i}") for i in range(3)]
    refs = {j.provider_ref for j in jobs if j is not None}
    assert all(j is not None and j.state is JobState.CONFIRMED for j in jobs) and len(refs) == 3


def replay(world: World, key: str) -> None:
    """`creditq dlq replay` for real (worker/store/dlq.py), its message run by the simulation."""
    sent = PublishRecorder()
    dlq.replay(world.store, [key], app=sent)  # type: ignore[arg-type]
    for _, grant_message in sent.sent:
        world.scheduler.issue(grant_message, 0.0)
    world.run()


def test_replaying_a_refused_job_after_the_fix_posts_again(world: World) -> None:
    inv = world.providers[Provider.INVETERATE]
    inv.script = ["refused"]
    start(world, message())
    assert state(world) is JobState.REJECTED
    replay(world, "g1")
    assert state(world) is JobState.CONFIRMED
    assert inv.submits == 2 and inv.credits_for(world.marker("g1")) == 1


def test_the_first_read_learns_a_long_lag_instead_of_reading_early(world: World) -> None:
    inv = world.providers[Provider.INVETERATE]
    inv.lag = 6.0

    def reads_for(prefix: str, grants: int) -> int:
        before = inv.reads
        for n in range(grants):  # one grant at a time, each for a new member
            start(world, message(f"{prefix}-{n}", customer_id=f"{prefix}-m{n}"))
        return inv.reads - before

    untrained = reads_for("cold", 1)
    reads_for("warm-up", 10)
    trained = reads_for("warm", 10)
    print(f"reads per grant: {untrained} before learning, {trained / 10} after")
    assert untrained >= 2 and trained / 10 <= 1.4
    assert world.pipeline.lag.delay(Provider.INVETERATE) + 1.0 >= 6.0 * 0.8


def test_the_first_read_comes_sooner_when_the_listing_is_quick(world: World) -> None:
    world.providers[Provider.INVETERATE].lag = 0.1
    for batch in range(12):
        start(world, message(f"fast-{batch}", customer_id=f"m-{batch}"))
    assert world.pipeline.lag.delay(Provider.INVETERATE) < 2.0 * 0.95**10


def test_a_429_after_an_unknown_outcome_keeps_the_job_unresolved_not_queued(world: World) -> None:
    """Try 1 may have applied (500); try 2 (same Chargebee key) is turned away (429). Queued
    would claim that nothing applied; the job must stay 'outcome unknown' until resolved."""
    cb = world.providers[Provider.CHARGEBEE]
    cb.script = ["error_before", "rate_limited"]
    start(world, message(provider="chargebee", customer_id="c-1"))
    job = world.store.get("g1")
    assert job is not None and job.state is JobState.CONFIRMED
    states = [h["to"] for h in job.history]
    assert "queued" not in states[1:], states
    assert cb.credits_for(world.marker("g1")) == 1 and "outcome_unknown" not in job.extra


def test_an_inveterate_retry_after_the_listing_showed_nothing_is_a_plain_retry(
    world: World,
) -> None:
    inv = world.providers[Provider.INVETERATE]
    inv.script = ["error_before", "rate_limited"]
    start(world, message(), witness_after=1.0)
    job = world.store.get("g1")
    assert job is not None and job.state is JobState.CONFIRMED
    assert "queued" in [h["to"] for h in job.history][1:]  # resolved: the 429 is a plain retry
    assert inv.credits_for(world.marker("g1")) == 1


def test_a_queued_grant_starts_its_post_without_a_separate_load_of_the_job(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[str] = []
    original = world.store.get

    def counting_get(key: str, **kwargs: Any) -> Any:
        loads.append(key)
        return original(key, **kwargs)

    monkeypatch.setattr(world.store, "get", counting_get)
    start(world, message())
    assert loads == []
    monkeypatch.undo()
    assert state(world) is JobState.CONFIRMED
    assert world.outcomes[0] == "submitted"


def test_one_sweep_reads_every_members_listing_that_has_jobs_due(world: World) -> None:
    start(world, *(message(f"g{i}", customer_id=f"m-{i}") for i in range(3)))
    inv = world.providers[Provider.INVETERATE]
    assert all(state(world, f"g{i}") is JobState.CONFIRMED for i in range(3))
    assert inv.reads == 3 and inv.submits == 3
    sweeps = [o for o in world.outcomes if o.startswith("confirmed")]
    assert sweeps == ["confirmed 3, waiting 0, listings unread 0"]


def test_a_sweep_stopped_by_the_budget_leaves_the_unread_listings_for_the_next_one(
    world: World,
) -> None:
    from worker.budget import ProviderBudget

    slots = ProviderBudget(world.store.redis, Provider.INVETERATE, 20, clock=world.clock)
    world.pipeline.mover.budgets = lambda p: slots if p is Provider.INVETERATE else None
    start(world, *(message(f"g{i}", customer_id=f"m-{i}") for i in range(3)))
    inv = world.providers[Provider.INVETERATE]
    assert all(state(world, f"g{i}") is JobState.CONFIRMED for i in range(3))
    assert inv.submits == 3 and inv.reads == 3  # no listing read twice, none skipped
    sweeps = [o for o in world.outcomes if o.startswith("confirmed")]
    assert any(o.endswith(("unread 1", "unread 2")) for o in sweeps), sweeps


def test_a_sweep_message_superseded_by_a_newer_schedule_does_nothing(world: World) -> None:
    from worker.store.keys import Keys

    world.store.create(CreditGrant.parse(message()))
    world.pipeline.issue(message())  # submitted; its sweep is scheduled under a token
    (scheduled,) = [i for i in world.scheduler.queue if i.task == "confirm"]
    token = scheduled.kwargs["token"]
    assert world.store.redis.get(Keys.confirming("inveterate")).startswith(f"{token}@")
    world.clock.now += 5
    inv = world.providers[Provider.INVETERATE]
    assert world.pipeline.confirm("inveterate", "", "someone-else") == "superseded"
    assert inv.reads == 0
    assert world.pipeline.confirm("inveterate", "", token).startswith("confirmed 1")
    assert inv.reads == 1 and world.store.redis.get(Keys.confirming("inveterate")) is None


def test_a_forced_sweep_supersedes_the_scheduled_one_so_only_one_chain_runs(world: World) -> None:
    world.providers[Provider.INVETERATE].lag = 30.0  # several sweeps before it shows
    world.store.create(CreditGrant.parse(message()))
    world.pipeline.issue(message())
    world.pipeline.reconcile()  # nothing overdue yet: no second sweep
    world.clock.now += 200  # now overdue: the reconcile forces a sweep
    assert world.pipeline.reconcile() == 1
    world.run()
    assert state(world) is JobState.CONFIRMED
    assert "superseded" in world.outcomes  # the first schedule stood down
    assert world.providers[Provider.INVETERATE].credits_for(world.marker("g1")) == 1


def test_a_sweep_reads_at_most_its_share_of_listings_and_the_next_one_reads_the_rest(
    world: World,
) -> None:
    from worker.pipeline.confirm import MAX_READS_PER_SWEEP

    members = MAX_READS_PER_SWEEP + 5
    start(world, *(message(f"g{i}", customer_id=f"m-{i}") for i in range(members)))
    inv = world.providers[Provider.INVETERATE]
    assert all(state(world, f"g{i}") is JobState.CONFIRMED for i in range(members))
    assert inv.reads == members  # every listing read once: none skipped, none twice
    sweeps = [o for o in world.outcomes if o.startswith("confirmed")]
    assert sweeps[0] == f"confirmed {MAX_READS_PER_SWEEP}, waiting 5, listings unread 5"
    assert sweeps[1] == "confirmed 5, waiting 0, listings unread 0"


def test_a_sweep_loads_the_jobs_due_not_every_job_waiting(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    cb = world.providers[Provider.CHARGEBEE]
    cb.lag = 10.0  # nothing shows before the second grant is due too
    loaded: list[list[str]] = []
    original = world.store.get_with_due

    def recording(keys: Any) -> Any:
        loaded.append(list(keys))
        return original(keys)

    monkeypatch.setattr(world.store, "get_with_due", recording)
    world.store.create(CreditGrant.parse(message("early", "chargebee")))
    world.pipeline.issue(message("early", "chargebee"))
    world.clock.now += 3.0  # "early" is due, "late" (submitted now) is not
    world.store.create(CreditGrant.parse(message("late", "chargebee")))
    world.pipeline.issue(message("late", "chargebee"))
    token = world.store.redis.get("creditq:confirming:chargebee").split("@")[0]
    assert world.pipeline.confirm("chargebee", "", token).startswith("confirmed 0")
    assert loaded == [["early"]]
    world.run()
    assert state(world, "early") is JobState.CONFIRMED
    assert state(world, "late") is JobState.CONFIRMED


def test_an_entry_without_a_marker_loads_every_waiting_job_before_matching(world: World) -> None:
    cb = world.providers[Provider.CHARGEBEE]
    cb.echo_markers = False
    world.store.create(CreditGrant.parse(message("first", "chargebee")))
    world.pipeline.issue(message("first", "chargebee"))
    world.clock.now += 3.0
    world.store.create(CreditGrant.parse(message("second", "chargebee")))
    world.pipeline.issue(message("second", "chargebee"))  # same customer and amount, not due
    world.run()
    jobs = [world.store.get(k) for k in ("first", "second")]
    assert all(j is not None and j.state is JobState.CONFIRMED for j in jobs)
    assert len({j.provider_ref for j in jobs if j is not None}) == 2  # one entry each
    assert cb.reads == 1  # the one read placed both


def test_a_job_not_due_yet_that_already_shows_is_confirmed_by_the_same_read(world: World) -> None:
    cb = world.providers[Provider.CHARGEBEE]
    world.store.create(CreditGrant.parse(message("early", "chargebee")))
    world.pipeline.issue(message("early", "chargebee"))
    world.clock.now += 3.0  # "early" is due, "late" (submitted now) is not, but shows at once
    world.store.create(CreditGrant.parse(message("late", "chargebee")))
    world.pipeline.issue(message("late", "chargebee"))
    token = world.store.redis.get("creditq:confirming:chargebee").split("@")[0]
    assert world.pipeline.confirm("chargebee", "", token).startswith("confirmed 2")
    assert cb.reads == 1


# -- outside the lab: issue 14 -------------------------------------------------------


def test_a_listing_lagging_past_settle_shows_the_credit_before_any_second_post(
    world: World,
) -> None:
    """A 500 that did apply, and a listing three times slower than the settle time: with
    no later credit shown, absence proves nothing, so the job keeps reading until its own
    credit shows."""
    inv = world.providers[Provider.INVETERATE]
    inv.script = ["error_after"]
    inv.lag = 60.0  # settle is 20 s
    start(world, message())
    assert state(world) is JobState.CONFIRMED
    assert inv.submits == 1 and inv.credits_for(world.marker("g1")) == 1


def test_with_a_witness_the_measured_lag_outlasts_a_short_settle(world: World) -> None:
    """The witness's own credit took 30 s to show: the absence must outlast twice that,
    whatever CREDITQ_SETTLE_SECONDS (20 s here) says, so g1's lagging credit is found."""
    inv = world.providers[Provider.INVETERATE]
    inv.script = ["error_after"]
    inv.lag = 30.0
    start(world, message(), witness_after=1.0)
    assert state(world) is JobState.CONFIRMED and state(world, "witness") is JobState.CONFIRMED
    assert inv.credits_for(world.marker("g1")) == 1 and inv.submits == 2


def test_without_a_witness_an_unknown_outcome_ends_in_the_dlq_unpaid_never_twice(
    store: JobStore,
) -> None:
    world = World(store, confirm_deadline=300.0)
    inv = world.providers[Provider.INVETERATE]
    inv.script = ["error_before"]
    start(world, message())
    job = world.store.get("g1")
    assert job is not None and job.state is JobState.DEAD
    assert job.extra["dlq_reason"] == "outcome_unknown" and inv.submits == 1
    assert 3 <= inv.reads <= 20  # read again and again, further apart


@pytest.mark.parametrize("echoed", [True, False])
def test_a_persons_credit_of_the_same_amount_never_settles_an_unknown_outcome(
    world: World, echoed: bool
) -> None:
    """The POST failed before applying; a person then gives the member the same amount by
    hand. That credit must not confirm the grant: with notes echoed it is someone else's
    (and the grant is paid once, after a witness); without, the outcome stays unknown."""
    inv = world.providers[Provider.INVETERATE]
    inv.echo_markers = echoed
    inv.script = ["error_before"]
    world.store.create(CreditGrant.parse(message()))
    world.scheduler.issue(message(), 0.0)
    world.run(until=lambda: inv.submits == 1)
    inv.add_credit("m-1", "5.00", note="goodwill, sorry for the delay")
    witness = message("witness", customer_id="m-witness")
    world.store.create(CreditGrant.parse(witness))
    world.scheduler.issue(witness, 1.0)
    world.run()
    job = world.store.get("g1")
    assert job is not None
    if echoed:
        assert job.state is JobState.CONFIRMED and job.provider_ref != "e1"
        assert inv.credits_for(world.marker("g1")) == 1
        assert job.to_json()["provider_entry"]["matched_by"] == "marker"
    else:
        assert job.state is JobState.DEAD and job.extra["dlq_reason"] == "outcome_unknown"
        assert inv.credits_for(world.marker("g1")) == 0


def test_a_refusal_after_an_unknown_try_waits_for_the_listing_instead_of_rejecting(
    world: World,
) -> None:
    """Try 1 applied but answered 500; Chargebee's retry is refused (409). The customer holds
    the credit: the job is confirmed from the listing, not rejected."""
    cb = world.providers[Provider.CHARGEBEE]
    cb.script = ["error_after", "conflict"]
    start(world, message(provider="chargebee", customer_id="c-1"))
    job = world.store.get("g1")
    assert job is not None and job.state is JobState.CONFIRMED, job.history
    assert cb.credits_for(world.marker("g1")) == 1


def test_a_refusal_after_an_unknown_try_stands_once_the_listing_proves_nothing_applied(
    world: World,
) -> None:
    cb = world.providers[Provider.CHARGEBEE]
    cb.script = ["error_before", "conflict"]
    start(world, message(provider="chargebee", customer_id="c-1"), witness_after=1.0)
    job = world.store.get("g1")
    assert job is not None and job.state is JobState.REJECTED, job.history
    assert job.extra["dlq_reason"] == "refused" and cb.credits_for(world.marker("g1")) == 0


def test_a_replayed_unknown_job_at_the_default_budget_reads_once_then_posts(
    store: JobStore,
) -> None:
    """The livelock seen at 100 calls a minute: the read took a slot, the POST found none,
    and the job went back to read again, for ever. A proven absence is written down, so
    the POST waits for its own slot without reading again."""
    world = World(store, budget_per_minute=100)
    inv = world.providers[Provider.INVETERATE]
    inv.script = ["error_before"]
    start(world, message(), witness_after=1.0)  # with the budget: confirmed, or retried
    job = world.store.get("g1")
    assert job is not None and job.state is JobState.CONFIRMED, job.history
    reads_before = inv.reads
    # The same again from the DLQ: a replayed job with an unknown outcome.
    world.store.create(CreditGrant.parse(message("g2", customer_id="m-2")))
    world.store.transition(
        "g2",
        JobState.SUBMITTING,
        reason="POST attempt 1",
        attempts="incr",
        fields={
            "first_post_at": world.clock.now,
            "outcome_unknown": "1",
            "unknown_at": world.clock.now,
            "last_post_at": world.clock.now,
        },
    )
    world.store.transition("g2", JobState.DEAD, reason="exhausted", dlq_reason=DlqReason.UNKNOWN)
    world.clock.now += 120
    start(world, message("w2", customer_id="m-w2"))  # a witness after the old attempt
    replay(world, "g2")
    g2 = world.store.get("g2")
    assert g2 is not None and g2.state is JobState.CONFIRMED, g2.history
    assert inv.credits_for(world.marker("g2")) == 1
    assert inv.reads - reads_before <= 4, inv.reads - reads_before


def test_a_marker_shown_twice_raises_an_alarm_on_the_job_and_in_stats(world: World) -> None:
    inv = world.providers[Provider.INVETERATE]
    inv.lag = 3.0
    world.store.create(CreditGrant.parse(message()))
    world.scheduler.issue(message(), 0.0)
    world.run(until=lambda: inv.submits == 1)
    twin = inv.credits[0]
    inv.credits.append(
        type(twin)("e-twin", twin.customer_id, twin.amount, twin.marker, twin.created_at)
    )
    world.run()
    job = world.store.get("g1")
    assert job is not None and job.state is JobState.CONFIRMED
    assert json.loads(job.extra["alarm"])["kind"] == "duplicate"
    alarm = json.loads(job.extra["alarm"])
    assert {alarm["own"], *alarm["refs"]} == {"e1", "e-twin"} and len(alarm["refs"]) == 1
    assert world.store.alarms() == 1


def test_a_second_credit_that_shows_after_the_confirmation_raises_an_alarm_once(
    world: World,
) -> None:
    inv = world.providers[Provider.INVETERATE]
    start(world, message())
    assert state(world) is JobState.CONFIRMED and world.store.alarms() == 0
    first = inv.credits[0]
    inv.credits.append(
        type(first)("e-late", first.customer_id, first.amount, first.marker, world.clock.now)
    )
    start(world, message("g2"))  # the same member's next grant: its read shows the copy
    start(world, message("g3"))  # and again: the alarm is raised once
    job = world.store.get("g1")
    assert job is not None and json.loads(job.extra["alarm"])["refs"] == ["e-late"]
    assert world.store.alarms() == 1


def test_a_sweep_that_confirms_before_the_2xx_is_recorded_is_a_lost_race_not_a_failure(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listing can show a credit before the worker records its POST's 2xx (issue 20):
    the worker's move to submitted then finds the job confirmed. That is a happy ending."""
    inv = world.providers[Provider.INVETERATE]
    original = inv.submit

    def submit_then_confirmed_meanwhile(grant: CreditGrant, marker: str) -> Any:
        result = original(grant, marker)
        assert world.pipeline.confirmer.focus(world.store.get("g1")).value == "found"  # type: ignore[arg-type]
        return result

    monkeypatch.setattr(inv, "submit", submit_then_confirmed_meanwhile)
    world.store.create(CreditGrant.parse(message()))
    assert world.pipeline.issue(message()) == "lost race"
    assert state(world) is JobState.CONFIRMED and inv.credits_for(world.marker("g1")) == 1


def test_a_listing_of_many_pages_is_read_to_its_end_at_the_real_budget(store: JobStore) -> None:
    """Found by benchmarks/adversarial.py: at 100 calls a minute with no burst, page two never
    found a free slot, and the read started again at page one, for ever. Further pages now
    reserve their slot and wait for it."""
    world = World(store, budget_per_minute=100)
    inv = world.providers[Provider.INVETERATE]
    inv.oldest_first = True
    for n in range(40):  # older credits of the member: pages of 12 entries, oldest first
        inv.add_credit("m-1", "1.00", note=f"older {n}")
    world.clock.now += 3600
    inv.script = ["error_after"]
    start(world, message())
    job = world.store.get("g1")
    assert job is not None and job.state is JobState.CONFIRMED, job.history
    assert inv.submits == 1 and inv.reads <= 12, inv.reads


def test_a_post_that_goes_through_after_429s_ends_the_fleets_streak(world: World) -> None:
    """Two 429s in a row would double the next pause; the 2xx after them ends the streak,
    so a 429 much later pauses the fleet for the first step again."""
    from worker.budget import ProviderBudget
    from worker.store.keys import BudgetKeys

    slots = ProviderBudget(world.store.redis, Provider.INVETERATE, 6000, clock=world.clock)
    world.pipeline.mover.budgets = lambda p: slots if p is Provider.INVETERATE else None
    inv = world.providers[Provider.INVETERATE]
    inv.script = ["rate_limited"] * 2
    strikes = BudgetKeys.strikes(Provider.INVETERATE)
    world.store.create(CreditGrant.parse(message()))
    world.scheduler.issue(message(), 0.0)
    world.run(until=lambda: state(world, "g1") is JobState.SUBMITTED)
    assert inv.submits == 3 and inv.reads == 0  # the 2xx itself, before any listing read
    assert world.store.redis.get(strikes) is None


def test_a_confirmation_counts_its_enqueue_to_confirmed_time_for_the_fleet(world: World) -> None:
    start(world, message())
    assert state(world, "g1") is JobState.CONFIRMED
    buckets, count, total = world.store.latencies("inveterate")
    job = world.store.get("g1")
    assert job is not None and count == 1 and buckets[-1][1] == 1
    assert total == pytest.approx(float(job.extra["confirmed_at"]) - job.created_at, abs=0.01)


def test_a_reconcile_pass_leaves_beats_heartbeat(world: World) -> None:
    assert world.store.reconciled_at() is None
    world.pipeline.reconcile()
    assert world.store.reconciled_at() == world.clock()


def test_a_post_waiting_for_its_slot_is_not_sent_into_a_pause_a_429_set_meanwhile(
    store: JobStore,
) -> None:
    """The slot was reserved a moment ahead; while this worker waited for it, another met a
    429 and paused the fleet. Sending anyway would meet the limit the 429 announced."""
    world = World(store, budget_per_minute=60, overlapping_waits=True)
    inv = world.providers[Provider.INVETERATE]
    other_worker = ProviderBudget(store.redis, Provider.INVETERATE, 60, clock=world.clock)
    paused_at: list[float] = []

    def meanwhile_a_429(seconds: float) -> None:
        if not paused_at:
            paused_at.append(world.clock.now)
            other_worker.pause_after_429(5.0)

    world.pipeline.mover.sleep = meanwhile_a_429
    first, second = message("g1", customer_id="m-1"), message("g2", customer_id="m-2")
    for m in (first, second):
        world.store.create(CreditGrant.parse(m))
    world.scheduler.issue(first, 0.0)
    world.scheduler.issue(second, 0.0)
    world.run()
    assert state(world, "g1") is JobState.CONFIRMED and state(world, "g2") is JobState.CONFIRMED
    assert inv.submits == 2 and paused_at  # g2 waited for a reserved slot, then held back
    job = world.store.get("g2")
    assert job is not None and job.attempts == 1  # the held-back start gave its attempt back
    assert any("paused" in h["reason"] for h in job.history)
    (credit,) = [c for c in inv.credits if c.marker == world.marker("g2")]
    assert credit.created_at >= paused_at[0] + 5.0
