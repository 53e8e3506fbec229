"""The sandbox's ledger: every credit either provider applied, with exact amounts and balances.

One lock guards it because Celery workers hit the sandbox from many threads at
once; a sequence number orders entries so listings and cursors stay stable while
new credits arrive (a new entry always sorts above every cursor already handed out).

Every entry records its ``origin``: ``api`` for a credit a client wrote through a
provider API, ``admin`` for one the control API wrote as a person in the provider's
admin (or another system) would. Listings show both alike; only inspection tells
them apart, so a test can count creditq's own credits.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from worker.domain.grant import MARKER_PREFIX, Provider

_MARKER = re.compile(re.escape(MARKER_PREFIX) + r"[0-9a-f]{16}")
_ID_PREFIX = {Provider.INVETERATE.value: "cr_sbx", Provider.CHARGEBEE.value: "pc_sbx"}
ORIGINS = ("api", "admin")


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
    origin: str = "api"

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
            "origin": self.origin,
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
        origin: str = "api",
    ) -> LedgerEntry:
        """Record a credit now; listings show it ``lag`` seconds later."""
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {', '.join(ORIGINS)}")
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
                origin=origin,
            )
            self._entries.append(entry)
            return entry

    def balance(self, provider: str, customer_id: str, currency: str = "USD") -> Decimal:
        with self._lock:
            return self._balances.get((provider, customer_id, currency), Decimal(0))

    def page(
        self,
        provider: str,
        customer_id: str | None,
        *,
        before_seq: int | None,
        limit: int,
        where: Callable[[LedgerEntry], bool] | None = None,
    ) -> Page:
        """Visible entries newest first, strictly older than ``before_seq`` (the cursor).

        ``customer_id=None`` spans every customer, as Chargebee's unfiltered listing does;
        ``where`` narrows further (Chargebee's ``created_at`` filters) before the limit counts.
        """
        now = self._clock()
        found: list[LedgerEntry] = []
        with self._lock:
            for entry in reversed(self._entries):
                if not self._listed(entry, provider, customer_id, now, where):
                    continue
                if before_seq is not None and entry.seq >= before_seq:
                    continue
                if len(found) == limit:
                    return Page(found, has_more=True)
                found.append(entry)
        return Page(found, has_more=False)

    def page_oldest_first(
        self, provider: str, customer_id: str | None, *, after_seq: int | None, limit: int
    ) -> Page:
        """Visible entries oldest first, in the order they became visible, strictly after
        the entry ``after_seq`` (the cursor).

        Ordering by (``visible_at``, ``seq``) makes this listing grow only at its end: an
        entry that turns visible later (the lag, a lagged fault) sorts after every entry a
        cursor already passed, so a forward walk meets it on a later page instead of
        skipping it, and never sees an entry twice. For credits without lag this is plain
        creation order. Raises ``LookupError`` for a cursor naming no entry (e.g. after a reset).
        """
        now = self._clock()
        with self._lock:
            start: tuple[float, int] | None = None
            if after_seq is not None:
                if not 1 <= after_seq <= len(self._entries):
                    raise LookupError(f"no entry {after_seq}")
                start = _visible_order(self._entries[after_seq - 1])
            listed = sorted(
                (e for e in self._entries if self._listed(e, provider, customer_id, now, None)),
                key=_visible_order,
            )
        if start is not None:
            listed = [entry for entry in listed if _visible_order(entry) > start]
        return Page(listed[:limit], has_more=len(listed) > limit)

    @staticmethod
    def _listed(
        entry: LedgerEntry,
        provider: str,
        customer_id: str | None,
        now: float,
        where: Callable[[LedgerEntry], bool] | None,
    ) -> bool:
        """Whether a listing of ``provider`` (and ``customer_id``) shows ``entry`` at ``now``."""
        return (
            entry.provider == provider
            and entry.visible(now)
            and (customer_id is None or entry.customer_id == customer_id)
            and (where is None or where(entry))
        )

    def entries(
        self, provider: str | None = None, customer_id: str | None = None, origin: str | None = None
    ) -> list[LedgerEntry]:
        """Every entry, visible or not, oldest first: what tests inspect."""
        with self._lock:
            return [
                entry
                for entry in self._entries
                if (provider is None or entry.provider == provider)
                and (customer_id is None or entry.customer_id == customer_id)
                and (origin is None or entry.origin == origin)
            ]

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()
            self._balances.clear()
            self._seq = 0


def _visible_order(entry: LedgerEntry) -> tuple[float, int]:
    return (entry.visible_at, entry.seq)
