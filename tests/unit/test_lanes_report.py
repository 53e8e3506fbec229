"""What waits in each lane (``worker.lanes``): the drain estimate and the rows stats, metrics
and the console show."""

from __future__ import annotations

import pytest

from worker.budget import HEADROOM
from worker.lanes import FALLBACK_CALLS_PER_GRANT, drain_seconds, lanes_of

NOW = 1_800_000_000.0


def budget(provider: str, per_minute: int = 60, per_grant: float | None = 1.5) -> dict:
    return {
        "provider": provider,
        "limit_per_minute": per_minute,
        "calls_per_confirmed_grant": per_grant,
        "paused_for_seconds": 0.0,
    }


def test_a_lane_drains_at_the_budget_s_pace_after_any_pause() -> None:
    assert drain_seconds(0, 2.0, 60) == 0.0
    assert drain_seconds(10, 1.5, 60) == pytest.approx(15 / HEADROOM, abs=0.1)
    assert drain_seconds(10, 1.5, 60, paused=30.0) == pytest.approx(30 + 15 / HEADROOM, abs=0.1)
    fallback = drain_seconds(10, None, 60)
    assert fallback == pytest.approx(10 * FALLBACK_CALLS_PER_GRANT / HEADROOM, abs=0.1)


def test_a_bulk_lane_drains_after_the_interactive_one_of_its_provider() -> None:
    counts = {
        "inveterate": {"interactive": (4, NOW - 2.0), "bulk": (40, NOW - 90.0)},
        "chargebee": {"interactive": (0, None), "bulk": (0, None)},
    }
    rows = lanes_of(counts, [budget("inveterate"), budget("chargebee")], NOW)
    by = {(r.provider, r.lane): r for r in rows}
    fast, slow = by["inveterate", "interactive"], by["inveterate", "bulk"]
    assert (fast.waiting, fast.oldest_age_seconds) == (4, 2.0)
    assert fast.drain_seconds == drain_seconds(4, 1.5, 60)
    assert slow.drain_seconds == drain_seconds(44, 1.5, 60)  # behind the 4 interactive ones
    assert slow.oldest_age_seconds == 90.0
    idle = by["chargebee", "bulk"]
    assert (idle.waiting, idle.oldest_age_seconds, idle.drain_seconds) == (0, None, 0.0)
