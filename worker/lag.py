"""How long a provider's listing takes to show a credit, learned by the fleet."""

from __future__ import annotations

import math
from collections.abc import Callable

from worker.job import Job
from worker.models import Provider
from worker.store import JobStore


class LearnedLag:
    """When to read a listing first after a 2xx: the provider's typical lag, learned.

    Reading before the credit shows spends a call for nothing; reading long after delays
    every confirmation. Each listing read votes: one that missed a young due job (too
    early) for 30% longer, one that found every due job for 5% shorter. That settles just
    above the lag, with about one early read in six. A sweep (up to 25 reads) sums its
    votes, and grows the delay by one step at most: 25 early reads would otherwise
    multiply it by 1.3**25 and push every first read to the ceiling (measured: a 2 s lag
    learned as 60 s, the confirmations of a 6,000-grant run trailing by a minute). Reads
    that found everything still each shorten it, so a delay set too long comes down fast.
    One value per provider, shared by the fleet in Redis (a lost update between workers is
    harmless), cached here for a few seconds.
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
        """Move the delay once for a sweep's listing reads: (jobs found, due jobs missed)
        per read; written back once."""
        current = self.delay(provider)
        now = self.clock()
        votes = 0.0
        for found, missed in reads:
            young = [j for j in missed
                     if now - (j.number("submitted_at") or j.state_at) < self.ceiling]  # fmt: skip
            if young:
                votes += math.log(self.GROW)
            elif not missed and found:
                votes += math.log(self.SHRINK)
            # only old, never-visible credits missed: they say nothing of the lag
        factor = math.exp(min(votes, math.log(self.GROW)))
        value = min(max(current * factor, self.FLOOR), self.ceiling)
        if value != current:
            self.store.set_learned_delay(provider.value, value)
            self._cache[provider] = (value, self.clock())
