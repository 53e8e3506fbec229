"""What every benchmark needs: a real Redis of its own, settings pointing at it, test
grants, and the figures read off a run's timeline (rates of the body and end to end, the
tail, confirmation stalls)."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from worker.domain.grant import CreditGrant
from worker.settings import get_settings
from worker.store.embedded import EmbeddedRedis


@contextlib.contextmanager
def settings_for(redis_url: str) -> Iterator[None]:
    """creditq's settings in this process (and so ``create_app``'s broker) pointed at
    ``redis_url`` (CREDITQ_REDIS_URL), put back on the way out."""
    previous = os.environ.get("CREDITQ_REDIS_URL")
    os.environ["CREDITQ_REDIS_URL"] = redis_url
    get_settings.cache_clear()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("CREDITQ_REDIS_URL", None)
        else:
            os.environ["CREDITQ_REDIS_URL"] = previous
        get_settings.cache_clear()


@contextlib.contextmanager
def benchmark_redis(*, appendonly: bool = False) -> Iterator[str]:
    """A private redis-server (never the machine's shared one), exported as CREDITQ_REDIS_URL."""
    with EmbeddedRedis(appendonly=appendonly) as server, settings_for(server.url):
        yield server.url


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s"


def grant_batch(n: int, prefix: str, per_customer: int = 5) -> list[CreditGrant]:
    """Grants alternating between the providers, ``per_customer`` per customer and provider."""
    return [
        CreditGrant(
            idempotency_key=f"{prefix}-{i}",
            provider="chargebee" if i % 2 else "inveterate",
            customer_id=f"{prefix}-cust-{i // (2 * per_customer)}",
            amount=f"{1 + i % 40}.{i % 100:02d}",
            note=f"order {i}",
        )
        for i in range(n)
    ]


def nearest_rank(ordered: Sequence[float], q: float) -> int:
    """The 0-based index of the nearest-rank ``q`` percentile (q in 0..100) of a sorted list."""
    return max(1, min(len(ordered), math.ceil(q / 100 * len(ordered)))) - 1


@dataclass(frozen=True)
class Timeline:
    """When each grant of a run reached the finish line (epoch seconds), from the run's start.

    One run's rate hides two things a reader must tell apart: the pace of the body of the run,
    and a tail (one late grant, a stalled sweep) that can halve the end-to-end figure. The
    body is taken between the 10th and the 90th percentile finish, so neither the ramp-up
    (the first reads wait out the lag) nor the tail counts in it.
    """

    start: float
    ends: tuple[float, ...]  # sorted

    @classmethod
    def of(cls, start: float, ends: Iterable[float]) -> Timeline:
        return cls(start, tuple(sorted(ends)))

    def at(self, q: float) -> float:
        """The nearest-rank ``q`` percentile finish time."""
        return self.ends[nearest_rank(self.ends, q)]

    @property
    def seconds(self) -> float:
        """First enqueue to the last grant's finish."""
        return self.ends[-1] - self.start

    @property
    def end_to_end_rate(self) -> float:
        return len(self.ends) / max(self.seconds, 1e-9)

    @property
    def body_rate(self) -> float | None:
        """Finishes between the 10th and 90th percentile over the time between them; None
        when they coincide (a tiny run confirmed in one read)."""
        low, high = nearest_rank(self.ends, 10), nearest_rank(self.ends, 90)
        span = self.ends[high] - self.ends[low]
        return (high - low) / span if span > 0 else None

    @property
    def tail(self) -> float:
        """From the 99th percentile finish to the last one: what one straggler costs."""
        return self.ends[-1] - self.at(99)


@dataclass(frozen=True)
class Stall:
    """The longest pause of confirmations while an accepted grant waited past its due read."""

    seconds: float
    at: float  # when it began, epoch seconds (0.0 when there was none)
    waiting: int  # accepted grants still unconfirmed and past their due read at its start


def longest_stall(confirmations: Iterable[tuple[float, float | None]], due_after: float) -> Stall:
    """Among the gaps between consecutive confirmations, the longest that began while some
    grant accepted (2xx) more than ``due_after`` seconds earlier was still unconfirmed.

    ``confirmations`` holds (confirmed at, accepted at or None) per grant. A gap while every
    waiting grant is younger than its lag plus the batching window is the pipeline working
    as designed; a gap while an older one waits is a read that was put off (issue 20).
    """
    done = sorted(confirmations, key=lambda pair: pair[0])
    never = math.inf
    # The oldest acceptance among the grants confirmed after position i (i excluded).
    oldest_after = [never] * len(done)
    for i in range(len(done) - 2, -1, -1):
        accepted = done[i + 1][1]
        oldest_after[i] = min(oldest_after[i + 1], never if accepted is None else accepted)
    best, best_i = 0.0, -1
    for i in range(len(done) - 1):
        gap = done[i + 1][0] - done[i][0]
        if gap > best and oldest_after[i] + due_after < done[i][0]:
            best, best_i = gap, i
    if best_i < 0:
        return Stall(0.0, 0.0, 0)
    began = done[best_i][0]
    waiting = sum(
        1
        for _, accepted in done[best_i + 1 :]
        if accepted is not None and accepted + due_after < began
    )
    return Stall(best, began, waiting)
