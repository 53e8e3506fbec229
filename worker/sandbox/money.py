"""Chargebee's minor units, exact both ways (``domain.grant.minor_units``: the one table)."""

from __future__ import annotations

from decimal import Decimal

from worker.domain.grant import minor_units


def to_minor(amount: Decimal, currency_code: str) -> int:
    """``Decimal("10.50")``, USD -> ``1050``; refuses an amount finer than the currency allows."""
    scaled = amount.scaleb(minor_units(currency_code))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} has more decimals than {currency_code} allows")
    return int(scaled)


def from_minor(units: int, currency_code: str) -> Decimal:
    """``1050``, USD -> ``Decimal("10.50")`` (scale kept, so it prints as money)."""
    return Decimal(units).scaleb(-minor_units(currency_code))
