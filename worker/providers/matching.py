"""Which listing entry is which job's credit: pure matching, plus one paging helper.

A marker (``cq-`` + 16 hex of the key) in the entry settles it. When the listing does not
echo the note (Inveterate may drop it), the fallback is the same customer, the same amount
and a creation time near the submission, and then each entry may be claimed by ONE job only:
otherwise three 5.00 grants for one customer would all "confirm" against a single 5.00
credit, and two of them would never be paid.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from worker.models import CreditGrant
from worker.providers.base import LedgerEntry, ProviderClient


class Pending(Protocol):
    """What matching needs to know about a job waiting for confirmation."""

    @property
    def idempotency_key(self) -> str: ...
    @property
    def customer_id(self) -> str: ...
    @property
    def amount(self) -> Decimal: ...
    @property
    def marker(self) -> str: ...
    @property
    def submitted_at(self) -> datetime: ...


@dataclass(frozen=True)
class PendingGrant:
    idempotency_key: str
    customer_id: str
    amount: Decimal
    marker: str
    submitted_at: datetime

    @classmethod
    def of(cls, grant: CreditGrant, submitted_at: datetime) -> PendingGrant:
        return cls(
            grant.idempotency_key, grant.customer_id, grant.amount, grant.marker, submitted_at
        )


@dataclass(frozen=True)
class MatchWindow:
    """Where a grant's unmarked entry may sit, relative to when the grant was submitted.

    ``before`` (default 60 s) absorbs clock skew between us and the provider; ``after``
    (default 1 h, the default confirm deadline) covers a slow backend. A wider window finds
    late credits but lets more unrelated equal-amount credits compete.
    """

    before: timedelta = timedelta(seconds=60)
    after: timedelta = timedelta(seconds=3600)

    def admits(self, grant: Pending, created_at: datetime) -> bool:
        return grant.submitted_at - self.before <= created_at <= grant.submitted_at + self.after


DEFAULT_WINDOW = MatchWindow()


def match_entries(
    grants: Iterable[Pending],
    entries: Iterable[LedgerEntry],
    claimed: Collection[str] = frozenset(),
    window: MatchWindow = DEFAULT_WINDOW,
) -> dict[str, LedgerEntry]:
    """``{idempotency_key: entry}`` for every grant whose credit is in ``entries``.

    1. Marker: an entry carrying a grant's marker is that grant's (the oldest such entry,
       if the listing shows it twice). An entry with someone else's marker is never
       anyone else's fallback.
    2. Fallback, for entries with no marker at all: grants oldest-submitted first each take
       the oldest free entry of the same customer and equal amount inside the window.
       Deterministic, and since every grant has the same window, oldest-to-oldest assigns
       as many entries as any assignment could.
    Entries in ``claimed`` (taken by other jobs) and entries without a time (no window
    check possible) are never used by the fallback; claimed ones not by markers either.
    """
    pending = sorted(grants, key=lambda g: (g.submitted_at, g.idempotency_key))
    free = sorted(
        (e for e in entries if e.ref not in claimed),
        key=lambda e: (e.created_at is None, e.created_at or datetime.min, e.ref),
    )
    by_marker = {g.marker: g for g in pending}
    found: dict[str, LedgerEntry] = {}
    for entry in free:
        grant = by_marker.get(entry.marker) if entry.marker else None
        if grant is not None and grant.idempotency_key not in found:
            found[grant.idempotency_key] = entry
    taken = {entry.ref for entry in found.values()}
    unmarked = [e for e in free if e.marker is None and e.created_at is not None]
    for grant in pending:
        if grant.idempotency_key in found:
            continue
        for entry in unmarked:
            if (
                entry.ref not in taken
                and entry.customer_id == grant.customer_id
                and entry.amount == grant.amount
                and entry.created_at is not None
                and window.admits(grant, entry.created_at)
            ):
                found[grant.idempotency_key] = entry
                taken.add(entry.ref)
                break
    return found


def collect_entries(
    client: ProviderClient,
    customer_id: str,
    grants: Collection[Pending],
    *,
    claimed: Collection[str] = frozenset(),
    window: MatchWindow = DEFAULT_WINDOW,
    max_pages: int = 10,
    page_size: int = 100,
) -> list[LedgerEntry]:
    """Read one customer's listing (newest first) only as far as these grants need.

    Stops when every grant matched, when the page's oldest entry is older than the oldest
    grant's submission minus ``window.before`` (none of these credits can sit further
    back), on the last page, or after ``max_pages``: every page spends the provider's shared
    request budget. Raises ``ProviderError`` from the client.
    """
    cutoff = min(g.submitted_at for g in grants) - window.before
    seen: list[LedgerEntry] = []
    cursor: str | None = None
    for _ in range(max_pages):
        page = client.list_page(customer_id, cursor, page_size)
        seen.extend(page.entries)
        if len(match_entries(grants, seen, claimed, window)) == len(grants):
            break
        if not page.next_cursor:
            break
        times = [e.created_at for e in page.entries if e.created_at is not None]
        if times and min(times) < cutoff:
            break
        cursor = page.next_cursor
    return seen


def find_in_listing(
    client: ProviderClient,
    grants: Iterable[Pending],
    max_pages: int = 10,
    *,
    claimed: Collection[str] = frozenset(),
    window: MatchWindow = DEFAULT_WINDOW,
    page_size: int = 100,
) -> dict[str, LedgerEntry]:
    """``{idempotency_key: entry}`` for the grants found, reading each customer's listing."""
    by_customer: dict[str, list[Pending]] = {}
    for grant in grants:
        by_customer.setdefault(grant.customer_id, []).append(grant)
    found: dict[str, LedgerEntry] = {}
    for customer_id, group in sorted(by_customer.items()):
        seen = collect_entries(client, customer_id, group, claimed=claimed, window=window,
                               max_pages=max_pages, page_size=page_size)  # fmt: skip
        found.update(match_entries(group, seen, claimed, window))
    return found
