"""The sandbox's ledger: every credit either provider applied, with exact amounts and balances.

One lock guards it because Celery workers hit the sandbox from many threads at
once; a sequence number orders entries so listings and cursors stay stable while
new credits arrive (a new entry always sorts above every cursor already handed out).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from worker.models import MARKER_PREFIX, Provider

_MARKER = re.compile(re.escape(MARKER_PREFIX) + r"[0-9a-f]{16}")
_ID_PREFIX = {Provider.INVETERATE.value: "cr_sbx", Provider.CHARGEBEE.value: "pc_sbx"}


@dataclass(frozen=True)
class LedgerEntry:
    """One applied credit. ``visible_at`` is when listings start to show it (the lag)."""

    seq: int
    id: str
    provider: str
    customer_id: str
    amount: Decimal
    currency: str
    created_at: float
    visible_at: float
    balance: Decimal
    note: str | None = None
    description: str | None = None
    reference: str | None = None
    credit_type: str | None = None
    force: bool = False

    @property
    def marker(self) -> str | None:
        """The creditq marker the client put in the reference or the note, if any."""
        for text in (self.reference, self.note, self.description):
            found = _MARKER.search(text) if text else None
            if found:
                return found.group(0)
        return None

    def visible(self, now: float) -> bool:
        return now >= self.visible_at

    def to_json(self, now: float) -> dict[str, Any]:
        """The inspection view (control API): everything, including what listings hide."""
        return {
            "seq": self.seq,
            "id": self.id,
            "provider": self.provider,
            "customer_id": self.customer_id,
            "amount": str(self.amount),
            "currency": self.currency,
            "created_at": self.created_at,
            "visible_at": self.visible_at,
            "visible": self.visible(now),
            "balance": str(self.balance),
            "note": self.note,
            "description": self.description,
            "reference": self.reference,
            "credit_type": self.credit_type,
            "force": self.force,
            "marker": self.marker,
        }


@dataclass(frozen=True)
class Page:
    entries: list[LedgerEntry]
    has_more: bool


class Ledger:
    """Thread-safe store of ``LedgerEntry`` per provider and customer.

    ``clock`` is injectable so unit tests can move time instead of sleeping.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: list[LedgerEntry] = []  # seq order, i.e. oldest first
        self._balances: dict[tuple[str, str, str], Decimal] = {}
        self._seq = 0

    def now(self) -> float:
        return self._clock()

    def apply(
        self,
        provider: str,
        customer_id: str,
        amount: Decimal,
        *,
        currency: str = "USD",
        lag: float = 0.0,
        note: str | None = None,
        description: str | None = None,
        reference: str | None = None,
        credit_type: str | None = None,
        force: bool = False,
    ) -> LedgerEntry:
        """Record a credit now; listings show it ``lag`` seconds later."""
        with self._lock:
            self._seq += 1
            now = self._clock()
            account = (provider, customer_id, currency)
            balance = self._balances.get(account, Decimal(0)) + amount
            self._balances[account] = balance
            entry = LedgerEntry(
                seq=self._seq,
                id=f"{_ID_PREFIX.get(provider, 'sbx')}{self._seq:08d}",
                provider=provider,
                customer_id=customer_id,
                amount=amount,
                currency=currency,
                created_at=now,
                visible_at=now + lag,
                balance=balance,
                note=note,
                description=description,
                reference=reference,
                credit_type=credit_type,
                force=force,
            )
            self._entries.append(entry)
            return entry

    def balance(self, provider: str, customer_id: str, currency: str = "USD") -> Decimal:
        with self._lock:
            return self._balances.get((provider, customer_id, currency), Decimal(0))

    def page(
        self, provider: str, customer_id: str | None, *, before_seq: int | None, limit: int
    ) -> Page:
        """Visible entries newest first, strictly older than ``before_seq`` (the cursor).

        ``customer_id=None`` spans every customer, as Chargebee's unfiltered listing does.
        """
        now = self._clock()
        found: list[LedgerEntry] = []
        with self._lock:
            for entry in reversed(self._entries):
                if entry.provider != provider or not entry.visible(now):
                    continue
                if customer_id is not None and entry.customer_id != customer_id:
                    continue
                if before_seq is not None and entry.seq >= before_seq:
                    continue
                if len(found) == limit:
                    return Page(found, has_more=True)
                found.append(entry)
        return Page(found, has_more=False)

    def entries(
        self, provider: str | None = None, customer_id: str | None = None
    ) -> list[LedgerEntry]:
        """Every entry, visible or not, oldest first: what tests inspect."""
        with self._lock:
            return [
                entry
                for entry in self._entries
                if (provider is None or entry.provider == provider)
                and (customer_id is None or entry.customer_id == customer_id)
            ]

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()
            self._balances.clear()
            self._seq = 0
