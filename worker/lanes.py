"""What waits in each lane: unfinished grants per provider and lane, how long the oldest has
waited, and when the lane should be through at the budget's pace (``creditq stats``,
``/metrics`` and the console read the same figures from here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from worker.budget import HEADROOM
from worker.domain.grant import Priority

# Calls a grant costs (a POST, and its share of listing reads) when the last hour has no
# figure yet: a POST and a read of its own, the most a grant needs when nothing fails.
FALLBACK_CALLS_PER_GRANT = 2.0


@dataclass(frozen=True)
class Lane:
    """One provider's lane: ``drain_seconds`` is when its last grant should be through."""

    provider: str
    lane: str
    waiting: int
    oldest_age_seconds: float | None
    drain_seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def drain_seconds(
    grants: int, calls_per_grant: float | None, per_minute: int, paused: float = 0.0
) -> float:
    """Seconds until ``grants`` grants are through at ``per_minute`` calls (the fleet spends
    ``HEADROOM`` of it), each costing ``calls_per_grant`` calls, after a pause in force.

    An estimate: retries, and a bulk grant's one slot in ten while interactive ones wait,
    are not counted."""
    if grants <= 0:
        return 0.0
    per_grant = calls_per_grant or FALLBACK_CALLS_PER_GRANT
    return round(paused + grants * per_grant * 60.0 / (per_minute * HEADROOM), 1)


def lanes_of(
    counts: Mapping[str, Mapping[str, tuple[int, float | None]]],
    budgets: list[dict[str, Any]],
    now: float,
) -> list[Lane]:
    """The lanes of every provider, from ``JobStore.lanes`` and ``Budgets.snapshots``: an
    interactive lane drains first; a bulk lane after it, so its estimate counts both."""
    by_provider = {b["provider"]: b for b in budgets}
    out: list[Lane] = []
    for provider, lanes in counts.items():
        budget = by_provider[provider]
        ahead = 0
        for lane in Priority:  # interactive first: the order their slots come in
            waiting, since = lanes.get(lane.value, (0, None))
            ahead += waiting
            out.append(
                Lane(
                    provider,
                    lane.value,
                    waiting,
                    None if since is None else round(max(now - since, 0.0), 3),
                    drain_seconds(
                        ahead if waiting else 0,
                        budget["calls_per_confirmed_grant"],
                        budget["limit_per_minute"],
                        budget["paused_for_seconds"],
                    ),
                )
            )
    return out
