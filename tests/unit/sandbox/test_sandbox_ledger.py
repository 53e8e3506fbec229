"""Ledger (lag, order, pages, balances) and Chargebee's idempotency record, on a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from worker.sandbox.idempotency import IdempotencyStore, Verdict
from worker.sandbox.ledger import Ledger
from worker.sandbox.options import SandboxOptions
from worker.sandbox.wire import Reply


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_entry_shows_only_after_the_lag() -> None:
    clock = Clock()
    ledger = Ledger(clock)
    ledger.apply("inveterate", "c1", Decimal("5"), lag=2.0)
    assert ledger.page("inveterate", "c1", before_seq=None, limit=10).entries == []
    assert len(ledger.entries("inveterate", "c1")) == 1  # inspection sees it at once
    clock.now += 2.0
    assert len(ledger.page("inveterate", "c1", before_seq=None, limit=10).entries) == 1


def test_pages_run_newest_first_without_gaps_or_repeats() -> None:
    clock = Clock()
    ledger = Ledger(clock)
    for n in range(7):
        clock.now += 1
        ledger.apply("chargebee", "c1", Decimal(n + 1))
        ledger.apply("chargebee", "c2", Decimal(100))
        ledger.apply("inveterate", "c1", Decimal(200))
    seen, before = [], None
    while True:
        page = ledger.page("chargebee", "c1", before_seq=before, limit=3)
        seen += [entry.amount for entry in page.entries]
        if not page.has_more:
            break
        before = page.entries[-1].seq
    assert seen == [Decimal(n) for n in range(7, 0, -1)]


def _walk_oldest_first(
    ledger: Ledger, limit: int, between: list[Callable[[], object]]
) -> list[Decimal]:
    """Every page of customer c1's oldest-first listing; ``between`` runs one callable after
    each page (to change the ledger while the walk is under way)."""
    seen: list[Decimal] = []
    after: int | None = None
    while True:
        page = ledger.page_oldest_first("inveterate", "c1", after_seq=after, limit=limit)
        seen += [entry.amount for entry in page.entries]
        if between:
            between.pop(0)()
        if not page.has_more:
            return seen
        after = page.entries[-1].seq


def test_oldest_first_pages_run_forward_without_gaps_or_repeats() -> None:
    clock = Clock()
    ledger = Ledger(clock)
    for n in range(1, 8):
        clock.now += 1
        ledger.apply("inveterate", "c1", Decimal(n))
        ledger.apply("inveterate", "c2", Decimal(100))
    assert _walk_oldest_first(ledger, 3, []) == [Decimal(n) for n in range(1, 8)]


def test_oldest_first_walk_meets_a_credit_written_during_it_on_a_later_page() -> None:
    clock = Clock()
    ledger = Ledger(clock)
    for n in range(1, 5):
        ledger.apply("inveterate", "c1", Decimal(n))
    seen = _walk_oldest_first(ledger, 2, [lambda: ledger.apply("inveterate", "c1", Decimal(5))])
    assert seen == [Decimal(n) for n in range(1, 6)]


def test_oldest_first_walk_meets_a_lagged_credit_once_it_shows_instead_of_skipping_it() -> None:
    clock = Clock()
    ledger = Ledger(clock)
    ledger.apply("inveterate", "c1", Decimal(1))
    ledger.apply("inveterate", "c1", Decimal(2), lag=5)  # written early, shows late
    for n in range(3, 6):
        ledger.apply("inveterate", "c1", Decimal(n))

    def later() -> None:
        clock.now += 5

    seen = _walk_oldest_first(ledger, 2, [later])
    assert sorted(seen) == [Decimal(n) for n in range(1, 6)] and len(seen) == 5
    assert seen[-1] == Decimal(2)  # listed where it became visible: at the end


def test_oldest_first_cursor_naming_no_entry_is_refused() -> None:
    ledger = Ledger(Clock())
    with pytest.raises(LookupError):
        ledger.page_oldest_first("inveterate", "c1", after_seq=3, limit=5)


def test_where_narrows_before_the_limit_counts() -> None:
    ledger = Ledger(Clock())
    for n in range(1, 7):
        ledger.apply("chargebee", "c1", Decimal(n))
    odd = ledger.page(
        "chargebee", "c1", before_seq=None, limit=2, where=lambda e: e.amount % 2 == 1
    )
    assert [entry.amount for entry in odd.entries] == [Decimal(5), Decimal(3)] and odd.has_more


def test_origin_is_recorded_shown_and_filterable() -> None:
    ledger = Ledger(Clock())
    ours = ledger.apply("chargebee", "c", Decimal(1))
    theirs = ledger.apply("chargebee", "c", Decimal(1), origin="admin")
    assert (ours.origin, theirs.origin) == ("api", "admin")
    assert theirs.to_json(0)["origin"] == "admin"
    assert ledger.entries(origin="api") == [ours]
    assert ledger.entries("chargebee", "c", "admin") == [theirs]
    with pytest.raises(ValueError):
        ledger.apply("chargebee", "c", Decimal(1), origin="robot")


def test_unfiltered_listing_spans_customers_of_one_provider() -> None:
    ledger = Ledger(Clock())
    ledger.apply("chargebee", "a", Decimal(1))
    ledger.apply("inveterate", "a", Decimal(2))
    ledger.apply("chargebee", "b", Decimal(3))
    page = ledger.page("chargebee", None, before_seq=None, limit=10)
    assert [entry.customer_id for entry in page.entries] == ["b", "a"]


def test_balance_is_exact_and_per_customer_and_currency() -> None:
    ledger = Ledger(Clock())
    for amount in ("0.10", "0.20", "-0.05"):
        entry = ledger.apply("inveterate", "c1", Decimal(amount))
    assert entry.balance == Decimal("0.25")
    ledger.apply("chargebee", "c1", Decimal("3"), currency="EUR")
    assert ledger.balance("inveterate", "c1") == Decimal("0.25")
    assert ledger.balance("chargebee", "c1", "EUR") == Decimal("3")
    assert ledger.balance("chargebee", "c1", "USD") == Decimal("0")


def test_marker_is_found_in_reference_or_note() -> None:
    ledger = Ledger(Clock())
    noted = ledger.apply("inveterate", "c", Decimal(1), note="thanks [cq-00112233445566ff]")
    referenced = ledger.apply(
        "chargebee", "c", Decimal(1), description="x", reference="cq-aabbccddeeff0011"
    )
    plain = ledger.apply("inveterate", "c", Decimal(1), note="no marker")
    assert noted.marker == "cq-00112233445566ff"
    assert referenced.marker == "cq-aabbccddeeff0011"
    assert plain.marker is None


def test_reset_empties_and_restarts_ids() -> None:
    ledger = Ledger(Clock())
    ledger.apply("inveterate", "c", Decimal(1))
    ledger.reset()
    assert ledger.entries() == []
    assert ledger.apply("chargebee", "c", Decimal(1)).id == "pc_sbx00000001"


def _store() -> tuple[IdempotencyStore, Clock]:
    clock = Clock()
    return IdempotencyStore(clock), clock


def test_same_key_same_request_replays_without_running() -> None:
    store, _ = _store()
    runs: list[int] = []

    def action() -> tuple[Reply, bool]:
        runs.append(1)
        return Reply(200, b"ok"), True

    first = store.run_once("k", "fp", 1800, action)
    second = store.run_once("k", "fp", 1800, action)
    assert (first.verdict, second.verdict) == (Verdict.FRESH, Verdict.REPLAYED)
    assert second.reply == first.reply and len(runs) == 1
    assert store.run_once("k", "other", 1800, action).verdict is Verdict.CONFLICT


def test_record_expires_after_its_lifetime() -> None:
    store, clock = _store()
    store.run_once("k", "fp", 1800, lambda: (Reply(200), True))
    clock.now += 1800
    assert store.run_once("k", "other", 1800, lambda: (Reply(200), True)).verdict is Verdict.FRESH


def test_calls_that_took_no_effect_leave_the_key_free() -> None:
    store, _ = _store()
    store.run_once("k", "fp", 1800, lambda: (Reply(400), False))
    assert store.run_once("k", "fp2", 1800, lambda: (Reply(200), True)).verdict is Verdict.FRESH


def test_expire_all_frees_every_key_at_once() -> None:
    store, clock = _store()
    for key in ("a", "b"):
        store.run_once(key, "fp", 1800, lambda: (Reply(200), True))
    store.run_once("old", "fp", 10, lambda: (Reply(200), True))
    clock.now += 10  # "old" is dead already: not counted
    assert store.expire_all() == 2
    assert store.run_once("a", "fp", 1800, lambda: (Reply(200), True)).verdict is Verdict.FRESH
    assert store.expire_all() == 1


def test_zero_lifetime_records_nothing() -> None:
    store, _ = _store()
    store.run_once("k", "fp", 0, lambda: (Reply(200), True))
    assert store.run_once("k", "fp", 0, lambda: (Reply(200), True)).verdict is Verdict.FRESH


@pytest.mark.parametrize(
    "options",
    [{"lag": -1}, {"rate_window": 0}, {"page_size": 0}, {"rate_limit": 0}, {"chargebee_key": ""}],
)
def test_nonsense_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SandboxOptions(**options)  # type: ignore[arg-type]
