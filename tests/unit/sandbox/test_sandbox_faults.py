"""The fault plan alone: what fails, in which order, and how repeatable the dice are."""

from __future__ import annotations

import pytest

from worker.sandbox.faults import Fault, FaultKind, FaultPlan


def test_queued_faults_fire_in_order_then_stop() -> None:
    plan = FaultPlan()
    plan.queue(Fault(FaultKind.ERROR_AFTER), times=2)
    plan.queue(Fault(FaultKind.UNAVAILABLE))
    drawn = [plan.draw("inveterate", "submit") for _ in range(4)]
    kinds = [fault.kind if fault else None for fault in drawn]
    assert kinds == [FaultKind.ERROR_AFTER, FaultKind.ERROR_AFTER, FaultKind.UNAVAILABLE, None]
    assert plan.pending() == 0


def test_targeted_fault_skips_other_providers_and_operations() -> None:
    plan = FaultPlan()
    plan.queue(Fault(FaultKind.ERROR_BEFORE, provider="chargebee", operation="list"))
    assert plan.draw("inveterate", "list") is None
    assert plan.draw("chargebee", "submit") is None
    assert plan.pending() == 1
    fault = plan.draw("chargebee", "list")
    assert fault is not None and fault.kind is FaultKind.ERROR_BEFORE


def test_queued_fault_wins_over_probability() -> None:
    plan = FaultPlan()
    plan.chance(Fault(FaultKind.ERROR_BEFORE), 1.0)
    plan.queue(Fault(FaultKind.TIMEOUT_AFTER))
    first, second = plan.draw("chargebee", "submit"), plan.draw("chargebee", "submit")
    assert first is not None and first.kind is FaultKind.TIMEOUT_AFTER
    assert second is not None and second.kind is FaultKind.ERROR_BEFORE


def _sequence(plan: FaultPlan, calls: int = 200) -> list[bool]:
    return [plan.draw("inveterate", "submit") is not None for _ in range(calls)]


def test_probability_is_deterministic_for_a_seed() -> None:
    one, two, other = FaultPlan(seed=7), FaultPlan(seed=7), FaultPlan(seed=8)
    for plan in (one, two, other):
        plan.chance(Fault(FaultKind.ERROR_AFTER, operation="submit"), 0.3)
    first = _sequence(one)
    assert first == _sequence(two)
    assert first != _sequence(other)
    assert 30 < sum(first) < 90  # roughly 30% of 200


def test_unmatched_calls_do_not_consume_the_dice() -> None:
    quiet, noisy = FaultPlan(seed=3), FaultPlan(seed=3)
    for plan in (quiet, noisy):
        plan.chance(Fault(FaultKind.ERROR_AFTER, operation="submit"), 0.5)
    expected = _sequence(quiet, 50)
    observed = []
    for _ in range(50):
        noisy.draw("inveterate", "list")  # other traffic in between
        observed.append(noisy.draw("inveterate", "submit") is not None)
    assert observed == expected


def test_clear_forgets_faults_and_restarts_the_dice() -> None:
    plan = FaultPlan(seed=1)
    plan.chance(Fault(FaultKind.ERROR_AFTER), 0.5)
    first = _sequence(plan, 20)
    plan.queue(Fault(FaultKind.UNAVAILABLE), times=3)
    plan.clear()
    assert plan.pending() == 0 and plan.draw("inveterate", "submit") is None
    plan.chance(Fault(FaultKind.ERROR_AFTER), 0.5)
    assert _sequence(plan, 20) == first


def test_only_after_faults_apply_the_write() -> None:
    assert {kind for kind in FaultKind if kind.applies} == {
        FaultKind.ERROR_AFTER,
        FaultKind.TIMEOUT_AFTER,
        FaultKind.TRICKLE,
        FaultKind.LAGGED,
    }


def test_customer_fault_skips_other_customers_and_calls_naming_none() -> None:
    plan = FaultPlan()
    plan.queue(Fault(FaultKind.ERROR_AFTER, customer_id="target"))
    assert plan.draw("chargebee", "submit", "someone-else") is None
    assert plan.draw("chargebee", "list") is None  # an unfiltered listing names nobody
    assert plan.draw("chargebee", "submit") is None  # the two-argument form still works
    assert plan.pending() == 1
    fault = plan.draw("inveterate", "submit", "target")
    assert fault is not None and fault.kind is FaultKind.ERROR_AFTER


def test_customer_probability_draws_only_for_that_customer() -> None:
    plan = FaultPlan(seed=2)
    plan.chance(Fault(FaultKind.UNAVAILABLE, customer_id="target"), 1.0)
    assert [plan.draw("inveterate", "submit", c) is not None for c in ("a", "target", "b")] == [
        False,
        True,
        False,
    ]


def test_untargeted_fault_still_matches_any_customer() -> None:
    plan = FaultPlan()
    plan.queue(Fault(FaultKind.ERROR_BEFORE), times=2)
    assert plan.draw("inveterate", "submit", "a") is not None
    assert plan.draw("inveterate", "list") is not None


def test_lagged_fault_targets_submits_and_answers_as_its_then_says() -> None:
    plain = Fault(FaultKind.LAGGED, lag=6)
    assert plain.operation == "submit" and plain.answer is None
    late_500 = Fault(FaultKind.LAGGED, lag=6, then="error_after")  # type: ignore[arg-type]
    assert late_500.then is FaultKind.ERROR_AFTER and late_500.answer is FaultKind.ERROR_AFTER
    assert Fault(FaultKind.TRICKLE).answer is FaultKind.TRICKLE
    plan = FaultPlan()
    plan.queue(plain)
    assert plan.draw("inveterate", "list", "c") is None  # a listing cannot use it up
    assert plan.draw("inveterate", "submit", "c") == plain


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "lagged"},  # no lag
        {"kind": "lagged", "lag": -1},
        {"kind": "lagged", "lag": 1, "operation": "list"},
        {"kind": "lagged", "lag": 1, "then": "error_before"},
        {"kind": "lagged", "lag": 1, "then": "lagged"},
        {"kind": "error_after", "lag": 1},
        {"kind": "error_after", "then": "timeout_after"},
        {"kind": "error_after", "customer_id": ""},
    ],
)
def test_nonsense_lag_then_and_customer_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Fault(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "build",
    [
        lambda plan: plan.queue(Fault(FaultKind.ERROR_AFTER), times=0),
        lambda plan: plan.chance(Fault(FaultKind.ERROR_AFTER), 0.0),
        lambda plan: plan.chance(Fault(FaultKind.ERROR_AFTER), 1.5),
        lambda plan: plan.queue(Fault(FaultKind.ERROR_AFTER, operation="delete")),
        lambda plan: plan.queue(Fault("explode")),  # type: ignore[arg-type]
    ],
)
def test_nonsense_faults_are_refused(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        build(FaultPlan())


def test_fault_json_names_the_kind() -> None:
    plan = FaultPlan(seed=5)
    plan.queue(Fault(FaultKind.RATE_LIMITED, provider="inveterate", retry_after=3), times=2)
    plan.chance(Fault(FaultKind.ERROR_AFTER), 0.25)
    shown = plan.to_json()
    assert shown["seed"] == 5
    assert shown["queued"][0]["kind"] == "rate_limited" and shown["queued"][0]["times"] == 2
    assert shown["probabilities"][0]["probability"] == 0.25


def test_fault_json_shows_customer_lag_and_then() -> None:
    fault = Fault(FaultKind.LAGGED, customer_id="c", lag=6, then=FaultKind.TIMEOUT_AFTER)
    shown = fault.to_json()
    assert (shown["customer_id"], shown["lag"], shown["then"]) == ("c", 6, "timeout_after")
    assert shown["operation"] == "submit"
