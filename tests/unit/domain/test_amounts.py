"""Amounts are money: one plain spelling for text, bounded digits for every value, no rounding."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.fixtures.celery import PublishRecorder
from tests.fixtures.grants import raw_grant
from tests.fixtures.refusals import refused_at_enqueue
from worker.domain.amounts import (
    MAX_FRACTION_DIGITS,
    MAX_INTEGER_DIGITS,
    decimal_places,
    parse_amount,
)
from worker.domain.grant import CreditGrant
from worker.errors import InvalidGrant
from worker.providers.chargebee import to_minor_units
from worker.providers.inveterate import credit_body
from worker.store.jobs import JobStore

SPELLING = "is not a plain decimal number: write ASCII digits with at most one '.', e.g. 10.50"
TOO_LARGE = "amount: has more than 15 digits before the point"
TOO_FINE = "amount: has more than 12 digits after the point"
DIGITS = "0123456789"


# -- the cases of issue 15, at the producer ---------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "1_000",  # was credited as 1000.00
        "١٢",  # Arabic-Indic digits: was 12
        "1e-1000030",  # underflowed to 0 in the decimals check, sent as a 1 MB number
        "1e999999999",  # raised decimal.Overflow
        "1E+2",
        " 10",
        "10 ",
        "10\n",
        "+5",
        "--5",
        "−5",  # U+2212 MINUS SIGN
        "１２",  # fullwidth digits
        ".5",
        "5.",
        "1.2.3",
        "1,000",
        "0x10",
        "Infinity",
        "NaN",
        "",
    ],
)
def test_a_string_amount_in_any_but_the_plain_spelling_is_refused_at_enqueue(
    store: JobStore, recorder: PublishRecorder, text: str
) -> None:
    message = refused_at_enqueue(store, recorder, "amount", amount=text)
    assert message.endswith(SPELLING)


def test_the_refusal_of_a_spelling_quotes_it_in_one_line() -> None:
    with pytest.raises(InvalidGrant) as caught:
        CreditGrant.parse(raw_grant(amount="1_000"))
    assert str(caught.value) == f"amount: '1_000' {SPELLING}"
    with pytest.raises(InvalidGrant) as long_one:
        CreditGrant.parse(raw_grant(amount="1" * 1_000_000 + "x"))
    assert len(str(long_one.value)) < 200


def test_thirty_one_significant_digits_are_refused_not_rounded_to_the_next_unit(
    store: JobStore, recorder: PublishRecorder
) -> None:
    # Chargebee once credited 10000.00 for this.
    digits = "9999.999999999999999999999999999"
    assert refused_at_enqueue(store, recorder, "amount", amount=digits) == TOO_FINE
    assert refused_at_enqueue(store, recorder, "amount", amount=Decimal(digits)) == TOO_FINE


def test_within_the_digit_bounds_extra_decimals_are_counted_exactly() -> None:
    # 16 significant digits: the decimals rule sees every one of them.
    with pytest.raises(InvalidGrant, match="^amount: has more than 2 decimal places"):
        CreditGrant.parse(raw_grant(amount="9999.999999999999"))


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (Decimal("1e-1000030"), TOO_FINE),
        (Decimal("1e999999999"), TOO_LARGE),
        (Decimal("-1e999999999"), TOO_LARGE),
        (Decimal("1E+15"), TOO_LARGE),
        (Decimal("0.0000000000001"), TOO_FINE),
        ("1" * 16, TOO_LARGE),
        ("1." + "0" * 13, TOO_FINE),
        (10**MAX_INTEGER_DIGITS, TOO_LARGE),
        (-(10**MAX_INTEGER_DIGITS), TOO_LARGE),
        pytest.param(10**10_000, TOO_LARGE, id="10**10000"),
    ],
)
def test_an_amount_beyond_the_digit_bounds_is_refused_at_enqueue(
    store: JobStore, recorder: PublishRecorder, amount: Any, message: str
) -> None:
    assert refused_at_enqueue(store, recorder, "amount", amount=amount) == message


def test_a_float_is_still_refused(store: JobStore, recorder: PublishRecorder) -> None:
    assert "never a float" in refused_at_enqueue(store, recorder, "amount", amount=10.5)


def test_a_minus_sign_is_a_spelling_and_the_provider_decides_whether_it_may_be_used(
    store: JobStore, recorder: PublishRecorder
) -> None:
    assert CreditGrant.parse(raw_grant(provider="inveterate", amount="-5.25")).amount == Decimal(
        "-5.25"
    )
    message = refused_at_enqueue(store, recorder, "amount", amount="-5.25")
    assert message == "amount: must be positive for chargebee: creditq only adds credit"
    with pytest.raises(InvalidGrant, match="^amount: must not be zero$"):
        CreditGrant.parse(raw_grant(amount="-0.00"))


def test_the_largest_bounded_amount_reaches_both_wire_formats_digit_for_digit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.settings import get_settings

    monkeypatch.setenv("CREDITQ_MAX_AMOUNT", "1" + "0" * MAX_INTEGER_DIGITS)
    get_settings.cache_clear()
    text = "9" * MAX_INTEGER_DIGITS + ".99"
    grant = CreditGrant.parse(raw_grant(provider="inveterate", amount=text))
    assert credit_body(grant, "cq-0011223344556677").startswith(f'{{"amount": {text},'.encode())
    assert to_minor_units(grant.amount, "USD") == int("9" * (MAX_INTEGER_DIGITS + 2))


@pytest.mark.parametrize(
    ("amount", "places"),
    [
        ("10.25", 2),
        ("10.50", 1),
        ("10.500", 1),
        ("100", 0),
        ("1E+2", 0),
        ("0.001", 3),
        ("1.000000000000", 0),
        ("-0.0100", 2),
    ],
)
def test_decimal_places_count_the_digits_that_carry_value(amount: str, places: int) -> None:
    assert decimal_places(Decimal(amount)) == places


# -- properties -------------------------------------------------------------------------------


def is_plain(text: str) -> bool:
    """The plain spelling, written out without a regular expression (an independent oracle)."""
    body = text[1:] if text.startswith("-") else text
    whole, point, fraction = body.partition(".")
    if not whole or any(c not in DIGITS for c in whole):
        return False
    return not point or (bool(fraction) and all(c in DIGITS for c in fraction))


# Characters that Decimal(), int() or a person might take for part of a number.
NEAR_NUMBERS = st.text(
    alphabet=st.sampled_from([*DIGITS, *".-+_eE ,x\t\n", "١", "٢", "１", "−", "\u00a0"]),
    max_size=12,
)


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(NEAR_NUMBERS, st.text(max_size=30)))
@example(text="1e-1000030")
@example(text="1e999999999")
def test_any_string_that_is_not_the_plain_spelling_is_refused(text: str) -> None:
    try:
        amount = parse_amount(text)
    except InvalidGrant as exc:
        assert exc.field == "amount" and "\n" not in str(exc)
        if not is_plain(text):
            assert str(exc).endswith(SPELLING)
        return
    assert is_plain(text), f"{text!r} was accepted as {amount!r}"


def plain_spellings(
    integer_digits: int = MAX_INTEGER_DIGITS, fraction_digits: int = MAX_FRACTION_DIGITS
) -> st.SearchStrategy[str]:
    digits = st.text(alphabet=DIGITS, min_size=1, max_size=integer_digits)
    fraction = st.one_of(
        st.just(""), st.text(alphabet=DIGITS, min_size=1, max_size=fraction_digits)
    )
    return st.builds(
        lambda sign, whole, frac: sign + whole + (f".{frac}" if frac else ""),
        st.sampled_from(["", "-"]),
        digits,
        fraction,
    )


@settings(max_examples=500, deadline=None)
@given(text=plain_spellings())
def test_any_plain_spelling_within_the_bounds_parses_to_exactly_its_decimal(text: str) -> None:
    assert parse_amount(text).as_tuple() == Decimal(text).as_tuple()


@settings(max_examples=300, deadline=None)
@given(text=plain_spellings(integer_digits=4, fraction_digits=2))
def test_an_accepted_grant_keeps_its_amount_through_the_message(text: str) -> None:
    if Decimal(text) <= 0:
        return
    grant = CreditGrant.parse(raw_grant(amount=text))
    assert grant.amount == Decimal(text)
    again = CreditGrant.parse(grant.to_message())
    assert again.amount.as_tuple() == grant.amount.as_tuple() and again == grant


finite_decimals = st.builds(
    lambda sign, digits, exponent: Decimal((sign, tuple(digits), exponent)),
    st.integers(0, 1),
    st.lists(st.integers(0, 9), min_size=1, max_size=40),
    st.one_of(st.integers(-40, 40), st.integers(-(10**9), 10**9)),
)


@settings(max_examples=500, deadline=None)
@given(amount=finite_decimals)
def test_any_decimal_is_kept_exactly_or_refused_never_rounded_or_raised(amount: Decimal) -> None:
    try:
        kept = parse_amount(amount)
    except InvalidGrant as exc:
        _, digits, exponent = amount.as_tuple()
        assert isinstance(exponent, int)
        if -exponent > MAX_FRACTION_DIGITS:
            assert str(exc) == TOO_FINE
        else:
            assert str(exc) == TOO_LARGE and len(digits) + exponent > MAX_INTEGER_DIGITS
        return
    assert kept.as_tuple() == amount.as_tuple()


@settings(max_examples=300, deadline=None)
@given(amount=st.one_of(finite_decimals, st.integers(), NEAR_NUMBERS))
def test_no_amount_makes_grant_validation_raise_anything_but_invalid_grant(amount: Any) -> None:
    for provider in ("chargebee", "inveterate"):
        try:
            CreditGrant.parse(raw_grant(provider=provider, amount=amount))
        except InvalidGrant as exc:
            assert exc.field == "amount" and "\n" not in str(exc)
