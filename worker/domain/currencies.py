"""The currencies a grant may be in: ISO 4217's list and its minor units, from ``iso4217``.

The list comes from the maintained ``iso4217`` package (ISO's own table, republished with
every amendment), so a code withdrawn by ISO stops being accepted when the package is
upgraded, and nothing here repeats its rows.

Two kinds of ISO 4217 code are not money a shop credits, and are refused:

* codes without minor units ("N.A." in the table): precious metals (XAU, XAG, XPD, XPT),
  the IMF's SDR (XDR), bond-market units (XBA to XBD), XSU, XUA, the testing code XTS and
  XXX, "no currency". Their decimals are undefined, so the decimals rule could not hold.
* fund codes (ISO marks them ``IsFund``: BOV, CHE, CHW, CLF, COU, MXV, USN, UYI): units
  of account for indexation and settlement that circulate beside a country's currency.

Loaded on first use: ``from worker import CreditGrant`` stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

import iso4217

from worker.errors import InvalidGrant

FIELD = "currency_code"
# Chargebee's default and what an unlisted code is read as in a provider's listing.
DEFAULT_MINOR_UNITS = 2


@cache
def credited_currencies() -> Mapping[str, int]:
    """Every ISO 4217 code a grant may use, with its minor units (decimals)."""
    funds = {
        code.text.strip()
        for entry in iso4217.raw_xml.findall("CcyTbl/CcyNtry")
        if (name := entry.find("CcyNm")) is not None
        and name.get("IsFund", "").lower() == "true"
        and (code := entry.find("Ccy")) is not None
        and code.text
    }
    return {
        currency.code: currency.exponent
        for currency in iso4217.Currency
        if currency.exponent is not None and currency.code not in funds
    }


def minor_units(currency_code: str) -> int:
    """Decimals the currency allows (ISO 4217).

    A code outside the list gets ``DEFAULT_MINOR_UNITS``: grants are checked by
    ``check_currency`` first, so only a provider's listing (or the sandbox) reaches that.
    """
    return credited_currencies().get(currency_code, DEFAULT_MINOR_UNITS)


def check_currency(currency_code: str) -> int:
    """The minor units of ``currency_code``; ``InvalidGrant`` if a grant may not use it.

    The error's ``reason`` says why without the field name, for other callers (a setting).
    """
    units = credited_currencies().get(currency_code)
    if units is not None:
        return units
    known = {currency.code: currency for currency in iso4217.Currency}
    if currency_code not in known:
        raise InvalidGrant(FIELD, f"{currency_code!r} is not an ISO 4217 currency code")
    if known[currency_code].exponent is None:
        raise InvalidGrant(
            FIELD,
            f"{currency_code!r} is not money a shop credits (ISO 4217 gives it no minor units)",
        )
    raise InvalidGrant(
        FIELD, f"{currency_code!r} is an ISO 4217 fund code, not a currency a shop credits in"
    )
