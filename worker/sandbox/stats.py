"""Counters tests read to prove what reached the provider: calls, writes, throttles, faults.

Kept apart from the ledger because a test often asks "how many POSTs arrived"
rather than "how many credits exist" (a replay or an injected 500 differs).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class Stats:
    """Thread-safe counters per provider.

    calls[op]     every routed call by operation (submit, list, health), whatever its fate
    status[code]  answers by HTTP status; "closed" for a connection dropped unanswered
    applied       credits written to the ledger (replays excluded)
    rate_limited  429s answered (enforced budget or injected)
    faults[kind]  injected faults
    replays       Chargebee idempotent replays; conflicts: same key, different body (409)
    """

    def __init__(self, providers: tuple[str, ...] = ()) -> None:
        self._lock = threading.Lock()
        self._providers = providers  # always shown, so a test can read zeros without KeyError
        self._counts: dict[str, Counter[str]] = {}

    def bump(self, provider: str, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts.setdefault(provider, Counter())[name] += amount

    def snapshot(self) -> dict[str, Any]:
        """``{provider: {"calls": {op: n}, "status": {code: n}, "faults": {kind: n},
        "applied": n, "rate_limited": n, "replays": n, "conflicts": n, "unauthorized": n}}``."""
        with self._lock:
            counts: dict[str, Counter[str]] = {p: Counter() for p in self._providers}
            counts.update((provider, Counter(c)) for provider, c in self._counts.items())
        result: dict[str, Any] = {}
        for provider, counter in counts.items():
            view: dict[str, Any] = {"calls": {}, "status": {}, "faults": {}}
            view.update(applied=0, rate_limited=0, replays=0, conflicts=0, unauthorized=0)
            for name, value in sorted(counter.items()):
                group, _, key = name.partition(":")
                if key:
                    view[group][key] = value
                else:
                    view[name] = value
            result[provider] = view
        return result

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
