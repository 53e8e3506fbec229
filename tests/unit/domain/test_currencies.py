"""Currencies: ISO 4217's list and minor units, without the codes that are not a shop's money."""

from __future__ import annotations

from decimal import Decimal

import iso4217
import pytest

from tests.fixtures.celery import PublishRecorder
from tests.fixtures.grants import raw_grant
from tests.fixtures.refusals import refused_at_enqueue
from worker.domain.currencies import check_currency, credited_currencies, minor_units
from worker.domain.grant import CreditGrant
from worker.errors import InvalidGrant
from worker.store.jobs import JobStore


@pytest.mark.parametrize("code", ["ZZZ", "ABC", "QQQ", "EUX"])
def test_three_letters_that_are_no_iso_4217_code_are_refused_at_enqueue(
    store: JobStore, recorder: PublishRecorder, code: str
) -> None:
    message = refused_at_enqueue(store, recorder, "currency_code", currency_code=code)
    assert message == f"currency_code: {code!r} is not an ISO 4217 currency code"


@pytest.mark.parametrize(
    "code",
    ["XXX", "XTS", "XAU", "XAG", "XPD", "XPT", "XDR", "XBA", "XBB", "XBC", "XBD", "XSU", "XUA"],
)
def test_codes_without_minor_units_are_not_money_and_are_refused(
    store: JobStore, recorder: PublishRecorder, code: str
) -> None:
    message = refused_at_enqueue(store, recorder, "currency_code", currency_code=code)
    assert message == (
        f"currency_code: {code!r} is not money a shop credits (ISO 4217 gives it no minor units)"
    )


@pytest.mark.parametrize("code", ["USN", "CLF", "MXV", "BOV", "CHE", "CHW", "COU", "UYI"])
def test_fund_codes_are_refused(store: JobStore, recorder: PublishRecorder, code: str) -> None:
    message = refused_at_enqueue(store, recorder, "currency_code", currency_code=code)
    assert message == (
        f"currency_code: {code!r} is an ISO 4217 fund code, not a currency a shop credits in"
    )


@pytest.mark.parametrize(
    ("code", "ok", "too_precise"),
    [
        ("USD", "1.25", "1.255"),
        ("EUR", "0.01", "0.001"),
        ("JPY", "500", "500.5"),
        ("ISK", "12", "12.1"),
        ("KWD", "1.250", "1.2501"),
        ("TND", "0.001", "0.0001"),
        ("UYW", "1.2345", "1.23456"),
        ("XAF", "100", "100.5"),
    ],
)
def test_every_currency_keeps_its_own_decimals_rule(code: str, ok: str, too_precise: str) -> None:
    assert CreditGrant.parse(raw_grant(amount=ok, currency_code=code)).amount == Decimal(ok)
    with pytest.raises(InvalidGrant, match=f"^amount: has more than .* the most {code} allows$"):
        CreditGrant.parse(raw_grant(amount=too_precise, currency_code=code))


def test_the_list_is_iso_4217_less_the_codes_without_minor_units_and_the_funds() -> None:
    listed = {c.code: c.exponent for c in iso4217.Currency if c.exponent is not None}
    credited = credited_currencies()
    assert set(credited) < set(listed)
    assert {code: listed[code] for code in credited} == dict(credited)
    assert set(listed) - set(credited) == {"BOV", "CHE", "CHW", "CLF", "COU", "MXV", "USN", "UYI"}
    assert {"USD", "EUR", "GBP", "JPY", "KWD", "CHF", "XOF", "XCD"} <= set(credited)


def test_every_credited_currency_is_accepted_by_a_grant() -> None:
    for code, units in credited_currencies().items():
        amount = "1" if units == 0 else "1." + "0" * (units - 1) + "1"
        grant = CreditGrant.parse(raw_grant(amount=amount, currency_code=code.lower()))
        assert grant.currency_code == code and check_currency(code) == units


def test_minor_units_of_a_code_outside_the_list_fall_back_for_provider_listings() -> None:
    # Only a provider's listing (or the sandbox) can bring such a code; grants never do.
    assert (minor_units("USD"), minor_units("JPY"), minor_units("KWD")) == (2, 0, 3)
    assert minor_units("ZZZ") == 2
