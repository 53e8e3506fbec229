"""When the absence of a credit from a listing proves that a POST did not apply: pure policy.

After an ambiguous answer (a 500, a timeout, a worker killed mid-POST) the credit may exist,
lagging in the listing, or not at all. POSTing again pays twice in the first case, so
creditq POSTs again only when the listing has provably had time to show the first attempt,
and ``CREDITQ_SETTLE_SECONDS`` is never the only thing that says so:

- the read was complete back to the job's first POST (``ListingRead.complete``), and no
  entry there could be the credit without saying so (``matching.could_be_its``);
- a **witness**: a credit the provider accepted *after* the attempt ended has since shown in
  a listing, so the provider is showing writes at least that late (``Visibility.witness_at``);
- the attempt ended at least ``max(settle, LAG_MARGIN x the longest lag measured lately)``
  ago: a listing that takes 6 s to show a credit is given 12, whatever the setting says.

Anything short of that keeps the outcome unknown: the job reads the listing again later, and
past the confirm deadline it goes to the DLQ as ``outcome_unknown`` for a person to settle.
That is the trade-off chosen: on a quiet provider (no later credit to witness) a POST that
failed without applying waits for the deadline instead of being retried; no credit is paid
twice for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.store.jobs import Visibility

# How many times the longest lag measured lately an absence must outlast.
LAG_MARGIN = 2.0


@dataclass(frozen=True)
class Absence:
    """Whether an absence proves the attempt did not apply, and if not, why not."""

    proven: bool
    why: str


def absence_proves(attempt_end: float, now: float, settle: float, seen: Visibility) -> Absence:
    """Judge a complete read without the credit (see the module docstring)."""
    if seen.witness_at is None or seen.witness_at < attempt_end:
        return Absence(False, "no credit accepted after that attempt has shown in a listing yet")
    needed = max(settle, LAG_MARGIN * (seen.lag or 0.0))
    waited = now - attempt_end
    if waited < needed:
        return Absence(False, f"the listing has had {waited:.1f}s of the {needed:.1f}s it needs")
    return Absence(True, f"not in the listing {waited:.1f}s after the attempt ({needed:.1f}s)")


def poll_delay(waited: float, first: float, ceiling: float) -> float:
    """When to read again for an unknown outcome: about half the time already waited,
    between the first poll and the poll cap, so a late credit costs few reads."""
    return min(ceiling, max(first, waited / 2))
