"""Matching listing entries to jobs: marker first, then amount+time, one entry per job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from worker.domain.grant import CreditGrant, Provider, marker_for
from worker.providers.base import Cursor, LedgerEntry, ListingPage, ProviderClient, SubmitResult
from worker.providers.matching import (
    MatchWindow,
    PendingGrant,
    find_in_listing,
    match,
    match_entries,
    read_back,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def pending(key: str, at: int = 0, amount: str = "5.00", customer: str = "c1") -> PendingGrant:
    return PendingGrant(key, customer, Decimal(amount), marker_for(key), T0 + timedelta(seconds=at))


def entry(
    ref: str, at: int = 0, amount: str = "5", customer: str = "c1", marker: str | None = None
) -> LedgerEntry:
    return LedgerEntry(ref, customer, Decimal(amount), T0 + timedelta(seconds=at), None, marker)


def test_marker_matches_whatever_the_time_after_the_first_post() -> None:
    g = pending("a")
    found = match_entries([g], [entry("e1", at=99_999, marker=g.marker)])
    assert found["a"].ref == "e1"


def test_a_marker_on_another_amount_or_customer_is_a_copy_not_a_match() -> None:
    """A person copying a note (and its marker) onto another credit never confirms a job."""
    g = pending("a")
    copies = [
        entry("amount", 5, amount="50", marker=g.marker),
        entry("customer", 6, customer="c9", marker=g.marker),
    ]
    found = match(([g]), copies)
    assert found.found == {} and [e.ref for e in found.suspicious["a"]] == ["amount", "customer"]


def test_a_marker_older_than_the_jobs_first_post_is_not_its_credit() -> None:
    """Last life's credit (a key reused, a store that lost its jobs) is older than this life."""
    g = pending("a", at=0)
    assert match_entries([g], [entry("old", -3600, marker=g.marker)]) == {}


def test_the_same_marker_twice_is_reported_as_a_duplicate() -> None:
    g = pending("a")
    found = match([g], [entry("e2", 9, marker=g.marker), entry("e1", 5, marker=g.marker)])
    assert found.found["a"].ref == "e1" and [e.ref for e in found.duplicates["a"]] == ["e2"]


def test_an_entry_whose_text_is_someone_elses_is_never_a_fallback() -> None:
    person = LedgerEntry("p1", "c1", Decimal("5"), T0, "goodwill credit", None, foreign=True)
    assert match_entries([pending("a")], [person]) == {}


def test_a_job_whose_post_may_not_have_applied_never_takes_an_anonymous_entry() -> None:
    doubtful = PendingGrant("a", "c1", Decimal("5.00"), marker_for("a"), T0, accepted=False)
    assert match_entries([doubtful], [entry("e1", 5)]) == {}
    assert match_entries([doubtful], [entry("e2", 5, marker=doubtful.marker)])["a"].ref == "e2"


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
    ("at", "matched"), [(-61, False), (-60, True), (0, True), (3600, True), (3601, False)]
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


class FakeListing(ProviderClient):
    """Serves pages newest first from a fixed ledger, counting calls."""

    name = Provider.INVETERATE

    def __init__(
        self, entries: list[LedgerEntry], page_size: int = 2, oldest_first: bool = False
    ) -> None:
        self.entries = sorted(entries, key=lambda e: e.created_at or T0, reverse=not oldest_first)
        self.page_size = page_size
        self.calls: list[tuple[str | None, str | None]] = []

    def list_page(
        self, customer_id: str | None, cursor: Cursor, limit: int, *, since: datetime | None = None
    ) -> ListingPage:
        self.calls.append((customer_id, cursor))
        mine = [e for e in self.entries if e.customer_id == customer_id]
        start = int(cursor or 0)
        end = start + self.page_size
        return ListingPage(mine[start:end], str(end) if end < len(mine) else None)

    def submit(self, grant: CreditGrant, marker: str) -> SubmitResult:  # pragma: no cover
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


def test_an_oldest_first_listing_is_read_to_its_end_before_an_absence_counts() -> None:
    """The docs never say which end a listing starts from: an old first page must not be
    taken for the end of the window."""
    g = pending("a", 0)
    ledger = [entry(f"old{i}", -1000 - i, amount="1") for i in range(5)]
    ledger.append(entry("new", 3600, amount="1"))
    read = read_back(FakeListing(ledger, oldest_first=True), "c1", [g])
    assert read.complete and [e.ref for e in read.entries][-1] == "new"
    newest_first = FakeListing(ledger)
    read = read_back(newest_first, "c1", [g])
    assert read.complete and len(newest_first.calls) == 1  # proven newest first, past cutoff


def test_a_read_cut_short_by_its_page_cap_is_not_complete() -> None:
    ledger = [entry(f"x{i}", 10 + i, amount="1") for i in range(20)]
    assert not read_back(FakeListing(ledger), "c1", [pending("a")], max_pages=3).complete
