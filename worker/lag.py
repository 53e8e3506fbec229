"""How long a provider's listing takes to show a credit, learned by the fleet."""

from __future__ import annotations

from collections.abc import Callable

from worker.job import Job
from worker.models import Provider
from worker.store import JobStore


class LearnedLag:
    """When to read a listing first after a 2xx: the provider's typical lag, learned.

    Reading before the credit shows spends a call for nothing; reading long after delays
    every confirmation. After each listing read of a sweep the delay moves: a read that missed a
    due job (too early) lengthens it by 30%, a read that found every due job shortens it
    by 5%. It settles just above the lag, with about one early read in six. One value per
    provider, shared by the fleet in Redis (a lost update between workers is harmless),
    cached here for a few seconds.
    """

    GROW, SHRINK, FLOOR, CACHE_SECONDS = 1.3, 0.95, 0.2, 5.0

    def __init__(self, store: JobStore, initial: float, ceiling: float,
                 clock: Callable[[], float]) -> None:  # fmt: skip
        self.store = store
        self.initial = initial
        self.ceiling = ceiling
        self.clock = clock
        self._cache: dict[Provider, tuple[float, float]] = {}

    def delay(self, provider: Provider) -> float:
        cached = self._cache.get(provider)
        now = self.clock()
        if cached is not None and now - cached[1] < self.CACHE_SECONDS:
            return cached[0]
        value = self.store.learned_delay(provider.value)
        value = self.initial if value is None else value
        self._cache[provider] = (value, now)
        return value

    def learn(self, provider: Provider, reads: list[tuple[int, list[Job]]]) -> None:
        """Move the delay once for each listing read: (jobs found, due jobs missed) per
        read, as one sweep reads several listings; written back once."""
        current = value = self.delay(provider)
        now = self.clock()
        for found, missed in reads:
            young = [j for j in missed
                     if now - (j.number("submitted_at") or j.state_at) < self.ceiling]  # fmt: skip
            if young:
                value = min(value * self.GROW, self.ceiling)
            elif not missed and found:
                value = max(value * self.SHRINK, self.FLOOR)
            # only old, never-visible credits missed: they say nothing of the lag
        if value != current:
            self.store.set_learned_delay(provider.value, value)
            self._cache[provider] = (value, self.clock())
