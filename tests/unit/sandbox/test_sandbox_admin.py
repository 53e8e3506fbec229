"""Credits written by others (the provider's admin), straight into the ledger."""

from __future__ import annotations

from decimal import Decimal

import pytest

from worker.sandbox.admin import MANUAL_DESCRIPTION, add_credits
from worker.sandbox.options import SandboxOptions
from worker.sandbox.state import SandboxState


def test_admin_credits_are_written_count_times_and_marked_admin() -> None:
    state = SandboxState()
    entries = add_credits(state, "inveterate", "c", "2.50", note="goodwill", count=3)
    assert [entry.amount for entry in entries] == [Decimal("2.50")] * 3
    assert {entry.origin for entry in entries} == {"admin"}
    assert [entry.balance for entry in entries] == [
        Decimal("2.50"),
        Decimal("5.00"),
        Decimal("7.50"),
    ]
    assert state.ledger.entries(origin="api") == []


def test_admin_credits_are_no_api_call() -> None:
    state = SandboxState(SandboxOptions(rate_limit=1))
    add_credits(state, "chargebee", "c", 1, count=5)
    assert state.stats.snapshot()["chargebee"]["calls"] == {}
    assert state.stats.snapshot()["chargebee"]["applied"] == 0
    assert state.limiters["chargebee"].admit(1, 60) is None  # the budget is untouched


def test_chargebee_admin_credit_gets_the_manual_description_and_general_type() -> None:
    [entry] = add_credits(SandboxState(), "chargebee", "c", "10.50", reference="ref-1")
    assert entry.description == MANUAL_DESCRIPTION and entry.credit_type == "general"
    assert entry.reference == "ref-1" and entry.note is None


def test_an_admin_credit_quoting_a_marker_looks_like_creditqs_own() -> None:
    [entry] = add_credits(SandboxState(), "inveterate", "c", 5, note="re [cq-0011223344556677]")
    assert entry.marker == "cq-0011223344556677" and entry.origin == "admin"


def test_lag_defaults_to_the_sandbox_option_and_can_be_set_per_call() -> None:
    state = SandboxState(SandboxOptions(lag=3.0))
    [default] = add_credits(state, "inveterate", "c", 1)
    [own] = add_credits(state, "inveterate", "c", 1, lag=0)
    assert default.visible_at - default.created_at == pytest.approx(3.0)
    assert own.visible_at == own.created_at


@pytest.mark.parametrize(
    ("provider", "amount", "fields"),
    [
        ("paypal", "1", {}),
        ("inveterate", "0", {}),
        ("inveterate", "abc", {}),
        ("inveterate", "NaN", {}),
        ("inveterate", True, {}),
        ("inveterate", "1", {"description": "inveterate has none"}),
        ("inveterate", "1", {"customer_id": ""}),
        ("inveterate", "1", {"count": 0}),
        ("inveterate", "1", {"count": 10_001}),
        ("inveterate", "1", {"lag": -1}),
        ("chargebee", "1", {"note": "chargebee has none"}),
        ("chargebee", "0.001", {}),
        ("chargebee", "1", {"description": ""}),
        ("chargebee", "1", {"description": "x" * 251}),
        ("chargebee", "1", {"currency": "usd"}),
    ],
)
def test_credits_the_admin_would_not_take_are_refused(
    provider: str, amount: object, fields: dict[str, object]
) -> None:
    state = SandboxState()
    arguments: dict[str, object] = {"customer_id": "c", **fields}
    with pytest.raises(ValueError):
        add_credits(state, provider, amount=amount, **arguments)  # type: ignore[arg-type]
    assert state.ledger.entries() == []
