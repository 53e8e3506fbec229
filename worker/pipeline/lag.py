"""How long a provider's listing takes to show a credit, learned by the fleet."""

from __future__ import annotations

import math
from collections.abc import Callable

from worker.domain.fields import JobField as F
from worker.domain.grant import Provider
from worker.domain.job import Job
from worker.store.jobs import JobStore


class LearnedLag:
    """When to read a listing first after a 2xx: the provider's typical lag, learned.

    Reading before the credit shows spends a call for nothing; reading long after delays
    every confirmation. Each listing read votes: one that missed a young due job (too
    early) for 30% longer, one that found every due job *promptly* (the youngest credit it
    found had waited at most 1.5 times the delay plus the batching window) for 5% shorter.
    That settles just above the lag, with about one early read in six. A read made late
    (a busy fleet, a sweep that came after others) says nothing: it would find every credit
    whatever the lag, and voted for shorter, such reads drove a 2 s lag down to the 0.2 s
    floor under load (issue 20), so every first read came too early and missed. A sweep
    (up to 25 reads) sums its votes, and grows the delay by one step at most: 25 early
    reads would otherwise multiply it by 1.3**25 and push every first read to the ceiling
    (measured: a 2 s lag learned as 60 s, the confirmations of a 6,000-grant run trailing
    by a minute). Prompt reads that found everything still each shorten it, so a delay set
    too long comes down fast (a first read at the delay is prompt by definition).
    One value per provider, shared by the fleet in Redis (a lost update between workers is
    harmless), cached here for a few seconds.
    """

    GROW, SHRINK, FLOOR, CACHE_SECONDS = 1.3, 0.95, 0.2, 5.0
    PROMPT = 1.5  # a read that found its youngest credit within this many delays (+ slack)

    def __init__(
        self,
        store: JobStore,
        initial: float,
        ceiling: float,
        clock: Callable[[], float],
        slack: float = 1.0,
    ) -> None:
        self.store = store
        self.initial = initial
        self.ceiling = ceiling
        self.clock = clock
        self.slack = slack  # the batching window: a first read comes this much after the delay
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

    def learn(self, provider: Provider, reads: list[tuple[float | None, list[Job]]]) -> None:
        """Move the delay once for a sweep's listing reads: per read, how long the youngest
        credit it found had waited since its 2xx (None: it found none) and the due jobs it
        missed; written back once."""
        current = self.delay(provider)
        now = self.clock()
        votes = 0.0
        for found, missed in reads:
            young = [
                j for j in missed if now - (j.number(F.SUBMITTED_AT) or j.state_at) < self.ceiling
            ]
            if young:
                votes += math.log(self.GROW)
            elif not missed and found is not None and found <= self.PROMPT * current + self.slack:
                votes += math.log(self.SHRINK)
            # only old, never-visible credits missed: they say nothing of the lag
        factor = math.exp(min(votes, math.log(self.GROW)))
        value = min(max(current * factor, self.FLOOR), self.ceiling)
        if value != current:
            self.store.set_learned_delay(provider.value, value)
            self._cache[provider] = (value, self.clock())
