"""Which listing entry is which job's credit: pure matching, and reading a listing back far
enough that an absence means something.

A confirmation is proof, so an entry is a job's only when it is provably its own:

1. **Marker.** The entry carries the job's marker where creditq writes it (an Inveterate
   note's bracketed tail, Chargebee's ``reference``; see the clients), for the job's
   customer and amount, and was created after the job's incarnation began (its first POST,
   less the clock skew the window allows). A marker on another amount or customer is not
   a match: it is a copy, and is reported (``Matches.suspicious``). The same marker twice
   is a duplicate payment, reported too (``Matches.duplicates``), never hidden behind one
   clean confirmation.
2. **Amount and time**, only for a job the provider surely accepted (a 2xx: ``accepted``)
   and only with an entry that says nothing of its author (the listing did not echo its
   note): the same customer, the same amount, a creation time inside the window, each entry
   claimed by ONE job only, or three 5.00 grants would all "confirm" against one 5.00
   credit. An entry whose text is someone else's (``LedgerEntry.foreign``) is never taken,
   and a job whose POST may never have applied is never settled this way: a person's credit
   of the same amount would otherwise confirm a grant that was never paid.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from worker.providers.base import Cursor, LedgerEntry, ListingPage

# Pages one read may take before it gives up on completeness: every page spends the
# provider's shared budget. A read cut short proves nothing by an absence.
MAX_PAGES = 50
# Past its first page a read is going deep (hundreds of newer credits above the grant's):
# full pages then cost the fewest calls. Chargebee's largest page.
DEEP_PAGE_SIZE = 100


@dataclass(frozen=True)
class PendingGrant:
    """What matching needs to know of a job waiting for its credit to show.

    ``submitted_at`` is when the job's incarnation first POSTed: nothing older can be its.
    ``accepted``: the provider answered 2xx, so a credit surely exists somewhere.
    """

    idempotency_key: str
    customer_id: str
    amount: Decimal
    marker: str
    submitted_at: datetime
    accepted: bool = True


@dataclass(frozen=True)
class MatchWindow:
    """Where a grant's entry may sit, relative to when the grant was first submitted.

    ``before`` (default 60 s) absorbs clock skew between us and the provider; ``after``
    (default 1 h, the default confirm deadline) covers a slow backend. A wider window finds
    late credits but lets more unrelated equal-amount credits compete.
    """

    before: timedelta = timedelta(seconds=60)
    after: timedelta = timedelta(seconds=3600)

    def admits(self, grant: PendingGrant, created_at: datetime) -> bool:
        return grant.submitted_at - self.before <= created_at <= grant.submitted_at + self.after

    def too_old(self, grant: PendingGrant, created_at: datetime | None) -> bool:
        """Created before the grant's incarnation could have written anything."""
        return created_at is not None and created_at < grant.submitted_at - self.before


DEFAULT_WINDOW = MatchWindow()


@dataclass
class Matches:
    """What one listing showed of a set of pending grants.

    ``found``: key -> its entry. ``duplicates``: key -> further entries carrying its marker
    for its customer and amount (a second payment). ``suspicious``: key -> entries carrying
    its marker that are not its credit (another amount or customer: a copied marker).
    """

    found: dict[str, LedgerEntry] = field(default_factory=dict)
    duplicates: dict[str, list[LedgerEntry]] = field(default_factory=dict)
    suspicious: dict[str, list[LedgerEntry]] = field(default_factory=dict)


def _own(grant: PendingGrant, entry: LedgerEntry, window: MatchWindow) -> bool:
    """An entry carrying the grant's marker is its credit only if everything else agrees."""
    return (
        entry.customer_id in (None, grant.customer_id)
        and entry.amount == grant.amount
        and not window.too_old(grant, entry.created_at)
    )


def _by_age(entries: Iterable[LedgerEntry]) -> list[LedgerEntry]:
    return sorted(
        entries, key=lambda e: (e.created_at is None, e.created_at or datetime.min, e.ref)
    )


def match(
    grants: Iterable[PendingGrant],
    entries: Iterable[LedgerEntry],
    claimed: Collection[str] = frozenset(),
    window: MatchWindow = DEFAULT_WINDOW,
) -> Matches:
    """Place every grant whose credit ``entries`` show (see the module docstring).

    Entries in ``claimed`` (taken by other jobs) are never used. Deterministic: grants
    oldest-submitted first each take the oldest free entry, which assigns as many entries
    as any assignment could, since every grant has the same window.
    """
    pending = sorted(grants, key=lambda g: (g.submitted_at, g.idempotency_key))
    entries = _by_age(entries)
    by_marker = {g.marker: g for g in pending}
    out = Matches()
    for entry in entries:
        grant = by_marker.get(entry.marker) if entry.marker else None
        if grant is None:
            continue
        key = grant.idempotency_key
        if not _own(grant, entry, window):
            out.suspicious.setdefault(key, []).append(entry)
        elif key in out.found:
            out.duplicates.setdefault(key, []).append(entry)
        elif entry.ref not in claimed:
            out.found[key] = entry
    taken = set(claimed) | {entry.ref for entry in out.found.values()}
    anonymous = [
        e for e in entries if e.marker is None and not e.foreign and e.created_at is not None
    ]
    for grant in pending:
        if grant.idempotency_key in out.found or not grant.accepted:
            continue
        for entry in anonymous:
            if (
                entry.ref not in taken
                and entry.customer_id == grant.customer_id
                and entry.amount == grant.amount
                and entry.created_at is not None
                and window.admits(grant, entry.created_at)
            ):
                out.found[grant.idempotency_key] = entry
                taken.add(entry.ref)
                break
    return out


def match_entries(
    grants: Iterable[PendingGrant],
    entries: Iterable[LedgerEntry],
    claimed: Collection[str] = frozenset(),
    window: MatchWindow = DEFAULT_WINDOW,
) -> dict[str, LedgerEntry]:
    """``{idempotency_key: entry}`` for every grant whose credit is in ``entries``."""
    return match(grants, entries, claimed, window).found


def could_be_its(grant: PendingGrant, entry: LedgerEntry, window: MatchWindow) -> bool:
    """Whether ``entry`` might be the grant's credit without saying so: no note echoed, the
    same customer and amount, inside the window. While such an entry stands, a listing
    cannot prove that the grant's POST did not apply."""
    return (
        entry.marker is None
        and not entry.foreign
        and entry.customer_id in (None, grant.customer_id)
        and entry.amount == grant.amount
        and (entry.created_at is None or window.admits(grant, entry.created_at))
    )


class PagedListing(Protocol):
    def list_page(
        self, customer_id: str | None, cursor: Cursor, limit: int, *, since: datetime | None = None
    ) -> ListingPage: ...


@dataclass(frozen=True)
class ListingRead:
    """The entries one read saw, and whether it saw every entry back to the cutoff.

    Only a ``complete`` read proves anything by an absence: the listing's end was reached,
    or its entries were shown (by their own timestamps) to run newest first and the read
    went past the cutoff. Nothing is assumed about which end a listing starts from.
    """

    entries: list[LedgerEntry]
    complete: bool


class _Order:
    """What the timestamps read so far say of the listing's order."""

    def __init__(self) -> None:
        self.last: datetime | None = None
        self.descending = False  # a strictly older entry followed a newer one
        self.broken = False  # an entry without a time, or a newer one after an older one

    def see(self, entries: Iterable[LedgerEntry]) -> None:
        for entry in entries:
            if entry.created_at is None:
                self.broken = True
                continue
            if self.last is not None:
                if entry.created_at > self.last:
                    self.broken = True
                elif entry.created_at < self.last:
                    self.descending = True
            self.last = entry.created_at

    @property
    def newest_first(self) -> bool:
        return self.descending and not self.broken


def read_back(
    client: PagedListing,
    customer_id: str | None,
    grants: Collection[PendingGrant],
    *,
    claimed: Collection[str] = frozenset(),
    window: MatchWindow = DEFAULT_WINDOW,
    max_pages: int = MAX_PAGES,
    page_size: int = 100,
) -> ListingRead:
    """Read one listing only as far as these grants need, and say whether it was complete.

    Asks the provider for entries since the cutoff (the oldest grant's first POST, less the
    window's skew) where it can filter by time (Chargebee), the first page ``page_size``
    long and any further one full, and stops early only when every grant matched, when the
    listing ends, or when entries proven newest first pass the cutoff. ``max_pages`` bounds
    the budget one read may take; a read that hits it is not complete. Raises
    ``ProviderError`` from the client.
    """
    cutoff = min(g.submitted_at for g in grants) - window.before
    seen: list[LedgerEntry] = []
    order = _Order()
    cursor: str | None = None
    for n in range(max_pages):
        size = page_size if n == 0 else max(page_size, DEEP_PAGE_SIZE)
        page = client.list_page(customer_id, cursor, size, since=cutoff)
        seen.extend(page.entries)
        order.see(page.entries)
        if not page.next_cursor:
            return ListingRead(seen, complete=True)
        if len(match_entries(grants, seen, claimed, window)) == len(grants):
            return ListingRead(seen, complete=False)
        times = [e.created_at for e in page.entries if e.created_at is not None]
        if order.newest_first and times and min(times) < cutoff:
            return ListingRead(seen, complete=True)
        cursor = page.next_cursor
    return ListingRead(seen, complete=False)


def find_in_listing(
    client: PagedListing,
    grants: Iterable[PendingGrant],
    max_pages: int = MAX_PAGES,
    *,
    claimed: Collection[str] = frozenset(),
    window: MatchWindow = DEFAULT_WINDOW,
    page_size: int = 100,
) -> dict[str, LedgerEntry]:
    """``{idempotency_key: entry}`` for the grants found, reading each customer's listing."""
    by_customer: dict[str, list[PendingGrant]] = {}
    for grant in grants:
        by_customer.setdefault(grant.customer_id, []).append(grant)
    found: dict[str, LedgerEntry] = {}
    for customer_id, group in sorted(by_customer.items()):
        read = read_back(
            client,
            customer_id,
            group,
            claimed=claimed,
            window=window,
            max_pages=max_pages,
            page_size=page_size,
        )
        found.update(match_entries(group, read.entries, claimed, window))
    return found
