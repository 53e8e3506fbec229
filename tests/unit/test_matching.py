"""Matching listing entries to jobs: marker first, then amount+time, one entry per job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from worker.models import CreditGrant, Provider, marker_for
from worker.providers.base import LedgerEntry, ListingPage, ProviderClient, SubmitResult
from worker.providers.matching import MatchWindow, PendingGrant, find_in_listing, match_entries

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def pending(key: str, at: int = 0, amount: str = "5.00", customer: str = "c1") -> PendingGrant:
    return PendingGrant(key, customer, Decimal(amount), marker_for(key), T0 + timedelta(seconds=at))


def entry(
    ref: str, at: int = 0, amount: str = "5", customer: str = "c1", marker: str | None = None
) -> LedgerEntry:
    return LedgerEntry(ref, customer, Decimal(amount), T0 + timedelta(seconds=at), None, marker)


def test_marker_matches_whatever_the_amount_or_time() -> None:
    g = pending("a")
    found = match_entries([g], [entry("e1", at=99_999, amount="1", marker=g.marker)])
    assert found["a"].ref == "e1"


def test_three_equal_grants_get_three_distinct_entries() -> None:
    grants = [pending("a", 0), pending("b", 1), pending("c", 2)]
    entries = [entry("e3", 12), entry("e1", 10), entry("e2", 11)]
    found = match_entries(grants, entries)
    assert {k: e.ref for k, e in found.items()} == {"a": "e1", "b": "e2", "c": "e3"}


def test_two_grants_one_entry_matches_only_the_oldest_grant() -> None:
    found = match_entries([pending("late", 5), pending("early", 0)], [entry("e1", 10)])
    assert {k: e.ref for k, e in found.items()} == {"early": "e1"}


def test_marker_beats_fallback() -> None:
    a, b = pending("a", 0), pending("b", 1)
    # e1 is older and unmarked; e2 carries b's marker. a must not take e2, b must not take e1.
    found = match_entries([a, b], [entry("e1", 5), entry("e2", 6, marker=b.marker)])
    assert {k: e.ref for k, e in found.items()} == {"a": "e1", "b": "e2"}


def test_entry_marked_for_another_job_is_never_a_fallback() -> None:
    found = match_entries([pending("a")], [entry("e1", 5, marker=marker_for("someone-else"))])
    assert found == {}


def test_claimed_refs_are_skipped() -> None:
    g = pending("a")
    entries = [entry("e1", 5), entry("e2", 6), entry("e3", 7, marker=g.marker)]
    assert match_entries([g], entries, claimed={"e3"})["a"].ref == "e1"
    assert match_entries([g], entries, claimed={"e3", "e1"})["a"].ref == "e2"
    assert match_entries([g], entries, claimed={"e1", "e2", "e3"}) == {}


@pytest.mark.parametrize(
    ("at", "matched"),
    [(-61, False), (-60, True), (0, True), (3600, True), (3601, False)],
)
def test_fallback_window(at: int, matched: bool) -> None:
    found = match_entries([pending("a")], [entry("e1", at)])
    assert ("a" in found) is matched


def test_window_is_configurable() -> None:
    narrow = MatchWindow(before=timedelta(0), after=timedelta(seconds=10))
    assert match_entries([pending("a")], [entry("e1", 11)], window=narrow) == {}
    assert match_entries([pending("a")], [entry("e1", -1)], window=narrow) == {}


def test_fallback_needs_same_customer_amount_and_a_time() -> None:
    g = pending("a")
    entries = [
        entry("other-customer", 1, customer="c2"),
        entry("other-amount", 2, amount="5.01"),
        LedgerEntry("no-time", "c1", Decimal(5), None),
    ]
    assert match_entries([g], entries) == {}
    assert match_entries([g], [entry("ok", 3, amount="5.0")])["a"].ref == "ok"


def test_matching_is_deterministic_whatever_the_input_order() -> None:
    grants = [pending(k, i) for i, k in enumerate("abcd")]
    entries = [entry(f"e{i}", 10 + i) for i in range(3)]
    first = match_entries(grants, entries)
    again = match_entries(list(reversed(grants)), list(reversed(entries)))
    assert first == again
    assert sorted(first) == ["a", "b", "c"]


def test_pending_from_grant() -> None:
    grant = CreditGrant(
        idempotency_key="k", provider="inveterate", customer_id="c1", amount=Decimal("3")
    )
    p = PendingGrant.of(grant, T0)
    assert (p.marker, p.amount, p.customer_id) == (grant.marker, Decimal(3), "c1")


class FakeListing(ProviderClient):
    """Serves pages newest first from a fixed ledger, counting calls."""

    name = Provider.INVETERATE

    def __init__(self, entries: list[LedgerEntry], page_size: int = 2) -> None:
        self.entries = sorted(entries, key=lambda e: e.created_at or T0, reverse=True)
        self.page_size = page_size
        self.calls: list[tuple[str | None, str | None]] = []

    def list_page(self, customer_id: str | None, cursor: str | None, limit: int) -> ListingPage:
        self.calls.append((customer_id, cursor))
        mine = [e for e in self.entries if e.customer_id == customer_id]
        start = int(cursor or 0)
        end = start + self.page_size
        return ListingPage(mine[start:end], str(end) if end < len(mine) else None)

    def submit(self, grant: CreditGrant) -> SubmitResult:  # pragma: no cover - unused
        raise NotImplementedError

    def check(self) -> str:  # pragma: no cover - unused
        return "ok"

    def close(self) -> None:
        pass


def test_find_stops_once_every_grant_is_matched() -> None:
    g = pending("a", 0)
    ledger = (
        [entry(f"n{i}", 100 + i, amount="1") for i in range(3)]
        + [entry("mine", 50, marker=g.marker)]
        + [entry(f"old{i}", -1000 - i, amount="1") for i in range(10)]
    )
    client = FakeListing(ledger)
    found = find_in_listing(client, [g], max_pages=50)
    assert found["a"].ref == "mine"
    assert len(client.calls) == 2


def test_find_stops_past_the_window() -> None:
    ledger = [entry(f"old{i}", -100 - i, amount="1") for i in range(20)]
    client = FakeListing(ledger)
    assert find_in_listing(client, [pending("a")], max_pages=50) == {}
    assert len(client.calls) == 1


def test_find_respects_max_pages_and_pages_each_customer() -> None:
    ledger = [entry(f"x{i}", 10 + i, amount="1") for i in range(20)] + [
        entry("c2-e", 5, customer="c2")
    ]
    client = FakeListing(ledger)
    found = find_in_listing(client, [pending("a"), pending("b", customer="c2")], max_pages=3)
    assert {k: e.ref for k, e in found.items()} == {"b": "c2-e"}
    assert [c for c, _ in client.calls] == ["c1", "c1", "c1", "c2"]
    assert [cur for c, cur in client.calls if c == "c1"] == [None, "2", "4"]


def test_find_equal_amounts_across_pages() -> None:
    grants = [pending("a", 0), pending("b", 1), pending("c", 2)]
    client = FakeListing([entry("e1", 10), entry("e2", 11), entry("e3", 12)], page_size=1)
    found = find_in_listing(client, grants)
    assert {k: e.ref for k, e in found.items()} == {"a": "e1", "b": "e2", "c": "e3"}
