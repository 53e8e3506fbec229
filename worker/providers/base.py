"""The shared interface every provider client implements, and the values it trades in.

Tasks only see this module: ``submit`` a grant, read a ``ListingPage``, ``check`` a key.
A failure is always a ``ProviderError`` whose ``outcome`` says what the task may do next
(the table lives in ``worker.providers.errors``), so no task ever inspects HTTP itself.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Self

from worker.domain.grant import CreditGrant, Provider


@dataclass(frozen=True)
class LedgerEntry:
    """One credit as the provider's listing shows it, normalised across providers.

    ``ref`` is the provider's entry id, or a stable synthetic one when the listing has no id,
    so that "claimed by one job only" can be recorded. ``marker`` is creditq's tag, read only
    where and in the form creditq writes it (an Inveterate note's bracketed tail, Chargebee's
    ``reference``), or None. ``foreign``: the entry's own text says it is not creditq's (a
    note or reference without the marker), so it never confirms a grant; an entry whose note
    the listing does not echo is not foreign, only unproven.
    """

    ref: str
    customer_id: str | None
    amount: Decimal
    created_at: datetime | None
    text: str | None = None
    marker: str | None = None
    foreign: bool = False


# Where a listing read goes on: the provider's cursor for the next page, None for the first.
Cursor = str | None


@dataclass(frozen=True)
class ListingPage:
    """One page of a listing, in the provider's order (not assumed: see
    ``matching.read_back``); ``next_cursor`` is None on the last page."""

    entries: list[LedgerEntry] = field(default_factory=list)
    next_cursor: str | None = None


@dataclass(frozen=True)
class SubmitResult:
    """A 2xx answer to a grant. ``replayed``: the provider answered from its idempotency
    record (Chargebee), so this call applied nothing new."""

    status: int
    provider_ref: str | None
    replayed: bool
    summary: str


class ProviderClient(abc.ABC):
    """One provider account over one pooled HTTP client. Use it as a context manager."""

    name: Provider

    @abc.abstractmethod
    def submit(self, grant: CreditGrant, marker: str) -> SubmitResult:
        """Send the grant once, tagged with its job's ``marker``. Raises ``ProviderError``
        whose outcome says what to do next."""

    @abc.abstractmethod
    def list_page(
        self, customer_id: str | None, cursor: Cursor, limit: int, *, since: datetime | None = None
    ) -> ListingPage:
        """One page of the credit listing; cursor None for the first page. ``since``: the
        provider may leave out entries created before it, where it can filter by time (a
        filter it lacks is simply not applied: the reader never relies on it)."""

    @abc.abstractmethod
    def check(self) -> str:
        """Prove the key works with a cheap read; return a verdict, raise ``ProviderError``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release pooled connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
