"""Credits written by others: a person in the provider's admin, or another system on the account.

creditq shares each customer's ledger with them, so its matching must not mistake their
credit for its own: same customer, same amount, any text, even one quoting a marker. And
other customers' credits pile up above creditq's in an unfiltered listing ("deep
listings"). These credits go straight into the ledger as the admin would write them: no
key, no budget, no fault, no call counted; inspection marks them ``origin="admin"``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from worker.domain.grant import CreditType, Provider
from worker.sandbox.chargebee import DESCRIPTION_MAX
from worker.sandbox.ledger import LedgerEntry
from worker.sandbox.money import to_minor
from worker.sandbox.state import PROVIDERS, SandboxState

# What Chargebee's admin puts when the person types nothing (the API requires a description).
MANUAL_DESCRIPTION = "Manual credit"
# Enough for hundreds of entries above creditq's, small enough that a typo cannot stall a test.
MAX_COUNT = 10_000
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def add_credits(
    state: SandboxState,
    provider: str,
    customer_id: str,
    amount: Decimal | str | int,
    *,
    note: str | None = None,
    description: str | None = None,
    reference: str | None = None,
    currency: str = "USD",
    count: int = 1,
    lag: float | None = None,
) -> list[LedgerEntry]:
    """Write ``count`` credits of ``amount`` for ``customer_id``; listings show them after
    ``lag`` seconds (None: the sandbox's ``lag`` option). Raises ValueError for a credit the
    provider's admin would not take: Inveterate credits carry a note only, Chargebee
    credits a description (default "Manual credit") and an optional reference."""
    value = _amount(amount)
    _check(provider, customer_id, currency, count, lag)
    credit_type: str | None = None
    if provider == Provider.INVETERATE.value:
        if description is not None or reference is not None:
            raise ValueError("inveterate credits carry only a note")
    else:
        description = _chargebee_description(value, currency, note, description)
        credit_type = CreditType.GENERAL.value
    wait = state.options.lag if lag is None else lag
    return [
        state.ledger.apply(
            provider,
            customer_id,
            value,
            currency=currency,
            lag=wait,
            note=note,
            description=description,
            reference=reference,
            credit_type=credit_type,
            origin="admin",
        )
        for _ in range(count)
    ]


def _amount(amount: Decimal | str | int) -> Decimal:
    if isinstance(amount, bool):
        raise ValueError("amount must be a number")
    try:
        value = amount if isinstance(amount, Decimal) else Decimal(str(amount).strip())
    except InvalidOperation:
        raise ValueError(f"amount {amount!r} is not a number") from None
    if not value.is_finite() or value.is_zero():
        raise ValueError("amount must be a finite number other than zero")
    return value


def _check(provider: str, customer_id: str, currency: str, count: int, lag: float | None) -> None:
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}")
    if not isinstance(customer_id, str) or not customer_id:
        raise ValueError("customer_id must be a non-empty string")
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise ValueError("currency must be three capital letters, e.g. USD")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count must be a whole number from 1 to {MAX_COUNT}")
    if lag is not None and (isinstance(lag, bool) or lag < 0):
        raise ValueError("lag must be seconds, not negative (or null for the sandbox's lag)")


def _chargebee_description(
    amount: Decimal, currency: str, note: str | None, description: str | None
) -> str:
    """The description the credit gets, after the checks Chargebee's add would make."""
    if note is not None:
        raise ValueError("chargebee credits carry a description, not a note")
    to_minor(abs(amount), currency)  # raises ValueError for more decimals than the currency has
    shown = MANUAL_DESCRIPTION if description is None else description
    if not shown or len(shown) > DESCRIPTION_MAX:
        raise ValueError(f"description must be 1 to {DESCRIPTION_MAX} characters")
    return shown
