"""Cursors, minor units and exact JSON: the small pure pieces of the sandbox's wire."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import quote, unquote_plus

import pytest

from worker.sandbox.cursors import (
    BadCursor,
    decode_chargebee,
    decode_inveterate,
    encode_chargebee,
    encode_inveterate,
)
from worker.sandbox.money import from_minor, to_minor
from worker.sandbox.wire import dumps, loads


@pytest.mark.parametrize("seq", [1, 42, 10**9])
def test_inveterate_cursor_round_trips(seq: int) -> None:
    assert decode_inveterate(encode_inveterate(seq)) == seq


def test_inveterate_cursor_holds_every_character_that_breaks_unencoded() -> None:
    cursor = encode_inveterate(7)
    assert set("+/=&#\"' ") <= set(cursor)


def test_inveterate_cursor_survives_percent_encoding() -> None:
    cursor = encode_inveterate(12)
    assert decode_inveterate(unquote_plus(quote(cursor, safe=""))) == 12


@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: c.replace("+", " "),  # sent unencoded: "+" decoded as a space
        lambda c: c.split("&")[0],  # "&" split the parameter
        lambda c: c.split("#")[0],  # "#" cut the URL
        lambda c: "",
        lambda c: "13" + c[c.index("+") :],  # a forged sequence number
    ],
)
def test_mangled_inveterate_cursor_is_refused(mangle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadCursor, match="percent-encoded"):
        decode_inveterate(mangle(encode_inveterate(12)))


def test_chargebee_offset_round_trips_and_looks_like_chargebee() -> None:
    offset = encode_chargebee(99, 1_700_000_000.25)
    assert offset == '["1700000000250","99"]'
    assert decode_chargebee(offset) == 99


@pytest.mark.parametrize("offset", ["", "99", "[1,2]", '["a","1"]', '["1"]', "not json"])
def test_bad_chargebee_offset_is_refused(offset: str) -> None:
    with pytest.raises(BadCursor):
        decode_chargebee(offset)


@pytest.mark.parametrize(
    ("amount", "currency", "units"),
    [
        ("10.50", "USD", 1050),
        ("10.5", "USD", 1050),
        ("0.01", "EUR", 1),
        ("1500", "JPY", 1500),
        ("1.234", "KWD", 1234),
        ("1E+2", "USD", 10000),
    ],
)
def test_minor_units_follow_the_currency(amount: str, currency: str, units: int) -> None:
    assert to_minor(Decimal(amount), currency) == units
    assert from_minor(units, currency) == Decimal(amount)


def test_minor_units_keep_the_scale_and_refuse_fractions() -> None:
    assert str(from_minor(1050, "USD")) == "10.50"
    assert str(from_minor(7, "JPY")) == "7"
    with pytest.raises(ValueError):
        to_minor(Decimal("0.001"), "USD")


def test_json_writes_decimals_verbatim_and_reads_them_exactly() -> None:
    text = dumps({"amount": Decimal("10.50"), "n": [1, True, None, 'x"y']})
    assert text == '{"amount":10.50,"n":[1,true,null,"x\\"y"]}'
    assert loads(text)["amount"] == Decimal("10.50")
    assert loads('{"amount": 0.1}')["amount"] == Decimal("0.1")
    with pytest.raises(ValueError):
        loads('{"amount": NaN}')
