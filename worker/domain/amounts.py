"""Amounts are money: one plain spelling, bounded digits, exact arithmetic or a refusal.

Python's ``Decimal`` reads far more than money: ``1_000``, Arabic-Indic digits, ``1e-1000030``
(whose normalised value underflows to 0), ``1e999999999`` (which overflows on the first
arithmetic), and 31 significant digits that the default 28-digit context rounds to the next
unit. Each of those once reached a provider or a traceback. So:

* text must be the plain spelling ``-?[0-9]+(.[0-9]+)?``: ASCII digits, at most one point
  with digits on both sides, an optional leading minus (whether a negative amount is allowed
  is the provider's rule, ``models.check_amount``), nothing else: no exponent, underscore,
  plus sign, whitespace or other script's digits;
* every value (text, ``int`` or ``Decimal``) has at most ``MAX_INTEGER_DIGITS`` digits before
  the point and ``MAX_FRACTION_DIGITS`` after it. Together they stay below the default
  context's 28 digits, so every later step (comparison, quantize, ``scaleb`` to minor units,
  ``normalize`` for the fingerprint) is exact and cannot trap;
* a float is refused: ``0.1`` is not the money anyone meant.

Every function here is pure; each failure is an ``InvalidGrant`` naming ``amount``.
"""

from __future__ import annotations

import re
from decimal import Decimal

from worker.errors import InvalidGrant

FIELD = "amount"
# A quadrillion: far above any CREDITQ_MAX_AMOUNT a shop would set (that ceiling is the
# business rule; this one only keeps the arithmetic exact).
MAX_INTEGER_DIGITS = 15
# ISO 4217 currencies have at most 4 decimals; the rest is room for trailing zeros
# ("10.500000") that do not change the money. 15 + 12 < 28, the default precision.
MAX_FRACTION_DIGITS = 12

PLAIN_AMOUNT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_SPELLING_HINT = "write ASCII digits with at most one '.', e.g. 10.50"
_TOO_LARGE = f"has more than {MAX_INTEGER_DIGITS} digits before the point"
_TOO_FINE = f"has more than {MAX_FRACTION_DIGITS} digits after the point"


def parse_amount(value: object) -> Decimal:
    """The amount as an exact, bounded, finite ``Decimal``; ``InvalidGrant`` otherwise.

    Accepts a ``Decimal``, an ``int`` or a string in the plain spelling (``PLAIN_AMOUNT``).
    Zero and the sign are judged later (``models.check_amount``) because their rules depend
    on the provider.
    """
    if isinstance(value, bool) or value is None:
        raise InvalidGrant(FIELD, "is required and must be a decimal number")
    if isinstance(value, float):
        raise InvalidGrant(FIELD, "must be a Decimal, an int or a string, never a float")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidGrant(FIELD, "must be a finite number")
        return check_digits(value)
    if isinstance(value, int):
        # Bounded before conversion: a huge int is refused without building its Decimal.
        if abs(value) >= 10**MAX_INTEGER_DIGITS:
            raise InvalidGrant(FIELD, _TOO_LARGE)
        return Decimal(value)
    if isinstance(value, str):
        return check_digits(Decimal(plain_text(value)))
    raise InvalidGrant(FIELD, f"must be a decimal number, got {type(value).__name__}")


def plain_text(text: str) -> str:
    """``text`` itself if it is the plain spelling of a decimal number; ``InvalidGrant`` if not.

    Decimal's own parser is far more lenient (``Infinity``, ``1e5``, ``1_000``, any script's
    digits, surrounding whitespace): each of those is a different spelling of money that no
    shop types on purpose, so only one is accepted.
    """
    if PLAIN_AMOUNT.fullmatch(text) is None:
        shown = repr(text[:40]) + ("..." if len(text) > 40 else "")
        raise InvalidGrant(FIELD, f"{shown} is not a plain decimal number: {_SPELLING_HINT}")
    return text


def check_digits(amount: Decimal) -> Decimal:
    """``amount`` if its digits fit the bounds (see the module docstring); else ``InvalidGrant``.

    Reads the digits and the exponent as stored, without arithmetic: no context can round,
    underflow or overflow here.
    """
    _, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int), "finite amounts only"
    if -exponent > MAX_FRACTION_DIGITS:
        raise InvalidGrant(FIELD, _TOO_FINE)
    if len(digits) + exponent > MAX_INTEGER_DIGITS:
        raise InvalidGrant(FIELD, _TOO_LARGE)
    return amount


def decimal_places(amount: Decimal) -> int:
    """Decimals that carry value: 2 for ``10.25``, 1 for ``10.50`` (it is 10.5), 0 for ``100``.

    Counted from the digits, not from ``normalize()``, which rounds to the context's
    precision (it turned 31 significant digits into the next whole unit).
    """
    _, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int), "finite amounts only"
    places = -exponent
    for digit in reversed(digits):
        if places <= 0 or digit != 0:
            break
        places -= 1
    return max(places, 0)
