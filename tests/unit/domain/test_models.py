"""Every rule a grant must pass, each failing with one line that names the field."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fixtures.grants import raw_grant
from worker.domain.grant import (
    CHARGEBEE_CUSTOMER_ID_MAX,
    FIELDS,
    IDEMPOTENCY_KEY_MAX,
    NOTE_MAX,
    CreditGrant,
    CreditType,
    Priority,
    Provider,
    marker_for,
    minor_units,
)
from worker.errors import InvalidGrant

grant = raw_grant  # a grant every rule accepts; keyword overrides change fields


def refused(field: str, **overrides: Any) -> InvalidGrant:
    with pytest.raises(InvalidGrant) as caught:
        CreditGrant.parse(grant(**overrides))
    assert caught.value.field == field, str(caught.value)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"{field}: ")
    return caught.value


def test_valid_grant_keeps_the_exact_decimal() -> None:
    g = CreditGrant.parse(grant(amount="10.50"))
    assert g.amount == Decimal("10.50") and str(g.amount) == "10.50"
    assert g.provider is Provider.CHARGEBEE
    assert g.credit_type is CreditType.GENERAL
    assert g.currency_code == "USD"


@pytest.mark.parametrize("amount", ["0", "0.00", "-0", "-0.0", 0, Decimal("0E-7")])
def test_zero_amount_in_any_spelling_is_refused(amount: Any) -> None:
    assert "zero" in str(refused("amount", amount=amount))


@pytest.mark.parametrize("amount", ["NaN", "sNaN", "Infinity", "-Infinity", "inf"])
def test_non_finite_amount_is_refused(amount: str) -> None:
    refused("amount", amount=amount)


@pytest.mark.parametrize("amount", ["ten", "", "1,00", "1.2.3", None, True, [], {}])
def test_non_numeric_amount_is_refused(amount: Any) -> None:
    refused("amount", amount=amount)


def test_float_amount_is_refused_because_floats_are_not_exact() -> None:
    assert "float" in str(refused("amount", amount=0.1))


@pytest.mark.parametrize(
    ("currency", "ok", "too_precise"),
    [("USD", "1.25", "1.255"), ("JPY", "500", "500.5"), ("KWD", "1.250", "1.2501")],
)
def test_amount_has_at_most_the_currency_decimals(currency: str, ok: str, too_precise: str) -> None:
    assert CreditGrant.parse(grant(amount=ok, currency_code=currency)).amount == Decimal(ok)
    refused("amount", amount=too_precise, currency_code=currency)


def test_trailing_zeros_beyond_the_currency_decimals_are_the_same_value() -> None:
    assert CreditGrant.parse(grant(amount="1.2500")).amount == Decimal("1.2500")


def test_a_decimal_with_an_exponent_is_stored_plain() -> None:
    # As text, "1E+2" is refused (one plain spelling: tests/unit/domain/test_amounts.py).
    assert str(CreditGrant.parse(grant(amount=Decimal("1E+2"))).amount) == "100"


def test_amount_above_the_configured_maximum_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    refused("amount", amount="10000.01")
    monkeypatch.setenv("CREDITQ_MAX_AMOUNT", "50")
    from worker.settings import get_settings

    get_settings.cache_clear()
    assert "CREDITQ_MAX_AMOUNT" in str(refused("amount", amount="50.01"))
    assert CreditGrant.parse(grant(amount="50")).amount == 50


def test_negative_chargebee_grant_is_refused_with_the_reason() -> None:
    assert "only adds credit" in str(refused("amount", amount="-5"))


def test_negative_inveterate_grant_is_allowed_and_may_force() -> None:
    g = CreditGrant.parse(grant(provider="inveterate", amount="-5", force=True))
    assert g.amount == Decimal("-5") and g.force is True


@pytest.mark.parametrize(
    "customer_id", ["", "a/b", "..", "a..b", "a b", "a\tb", "a\nb", "a\x00b", "x" * 51, 42]
)
def test_unsafe_or_unbounded_customer_id_is_refused(customer_id: Any) -> None:
    refused("customer_id", customer_id=customer_id)


def test_inveterate_customer_ids_may_be_longer_than_chargebee_ones() -> None:
    long_id = "x" * (CHARGEBEE_CUSTOMER_ID_MAX + 1)
    assert CreditGrant.parse(grant(provider="inveterate", customer_id=long_id)).customer_id
    refused("customer_id", customer_id="x" * 101, provider="inveterate")


def test_missing_customer_id_is_refused() -> None:
    body = grant()
    del body["customer_id"]
    with pytest.raises(InvalidGrant, match="^customer_id: is required$"):
        CreditGrant.parse(body)


@pytest.mark.parametrize(
    "key", ["", " ", "a b", "tab\there", "nl\n", "\x07bell", "k" * (IDEMPOTENCY_KEY_MAX + 1), 7]
)
def test_empty_unprintable_or_unbounded_key_is_refused(key: Any) -> None:
    refused("idempotency_key", idempotency_key=key)


def test_unknown_provider_is_refused() -> None:
    assert "inveterate, chargebee" in str(refused("provider", provider="stripe"))


def test_oversized_or_control_note_is_refused() -> None:
    refused("note", note="n" * (NOTE_MAX + 1))
    refused("note", note="bad\x1bnote")
    assert CreditGrant.parse(grant(note="n" * NOTE_MAX)).note


def test_credit_type_must_be_a_chargebee_type() -> None:
    refused("credit_type", credit_type="cashback")
    got = CreditGrant.parse(grant(credit_type="loyalty_credits")).credit_type
    assert got is CreditType.LOYALTY_CREDITS
    refused("credit_type", provider="inveterate", credit_type="general")


def test_force_applies_to_inveterate_only_and_is_a_boolean() -> None:
    refused("force", force=True)
    refused("force", provider="inveterate", force="yes")


@pytest.mark.parametrize("code", ["US", "USDX", "U5D", "€€€"])
def test_currency_code_must_have_iso_4217_shape(code: str) -> None:
    refused("currency_code", currency_code=code)


def test_lowercase_currency_code_is_normalised() -> None:
    assert CreditGrant.parse(grant(currency_code="eur")).currency_code == "EUR"


def test_unknown_field_is_refused() -> None:
    refused("amount_cents", amount_cents=1050)


def test_direct_construction_and_model_validate_raise_the_same_one_line_error() -> None:
    with pytest.raises(InvalidGrant, match="^amount: must not be zero$"):
        CreditGrant(**grant(amount="0"))
    with pytest.raises(InvalidGrant, match="^amount: must not be zero$"):
        CreditGrant.model_validate(grant(amount="0"))


def test_fingerprint_ignores_the_spelling_of_the_amount_but_not_its_value() -> None:
    a = CreditGrant.parse(grant(amount="10.5"))
    b = CreditGrant.parse(grant(amount="10.50"))
    c = CreditGrant.parse(grant(amount="10.51"))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert a.fingerprint() != CreditGrant.parse(grant(amount="10.5", note="x")).fingerprint()


def test_marker_is_short_stable_and_differs_per_key() -> None:
    assert marker_for("k1") == marker_for("k1") != marker_for("k2")
    assert len(marker_for("k1")) == 19 and marker_for("k1").startswith("cq-")


def test_minor_units_follow_iso_4217() -> None:
    assert (minor_units("USD"), minor_units("JPY"), minor_units("KWD")) == (2, 0, 3)


def test_message_round_trips_through_json_fields() -> None:
    g = CreditGrant.parse(grant(note="thanks", credit_type="referral_rewards"))
    assert CreditGrant.parse(g.to_message()) == g


junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=300),
    st.binary(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(FIELDS), value=junk)
def test_junk_in_any_field_is_accepted_valid_or_refused_with_one_line(
    field: str, value: Any
) -> None:
    try:
        g = CreditGrant.parse(grant(**{field: value}))
    except InvalidGrant as exc:
        assert "\n" not in str(exc) and exc.field
        return
    # Whatever got through is a grant that obeys every rule.
    assert g.amount.is_finite() and not g.amount.is_zero()
    assert g.customer_id and "/" not in g.customer_id and ".." not in g.customer_id
    assert g.idempotency_key.isprintable()


@settings(max_examples=200, deadline=None)
@given(
    st.decimals(
        allow_nan=False, allow_infinity=False, places=2, min_value=-(10**4), max_value=10**4
    ).filter(lambda d: d > 0)
)
def test_any_valid_amount_survives_exactly(amount: Decimal) -> None:
    g = CreditGrant.parse(grant(amount=str(amount)))
    assert g.amount == amount and Decimal(g.to_message()["amount"]) == amount


def test_priority_is_interactive_unless_bulk_and_nothing_else() -> None:
    assert CreditGrant.parse(grant()).priority is Priority.INTERACTIVE
    assert CreditGrant.parse(grant(priority="bulk")).priority is Priority.BULK
    assert CreditGrant.parse(grant(priority="bulk")).to_message()["priority"] == "bulk"
    error = refused("priority", priority="urgent")
    assert str(error) == "priority: must be one of interactive, bulk"
    refused("priority", priority=1)


def test_the_same_grant_in_another_lane_is_the_same_grant() -> None:
    """A retried webhook that now says bulk is a duplicate, never a 409: the money is the
    same, and grants accepted before priorities existed keep their fingerprint."""
    interactive = CreditGrant.parse(grant())
    assert CreditGrant.parse(grant(priority="bulk")).fingerprint() == interactive.fingerprint()
    assert CreditGrant.parse(grant(amount="10.51")).fingerprint() != interactive.fingerprint()
