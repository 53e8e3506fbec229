"""Retry delays: exponential backoff with full jitter, pure functions of their inputs.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads a fleet of
workers that failed together, so they do not hit a rate-limited provider in lockstep
(AWS Architecture Blog, "Exponential Backoff And Jitter"). The delays are handed to Celery
as a ``countdown``: no worker ever sleeps on them.
"""

from __future__ import annotations

import random

# 2**64 times any sane base is far past any cap; stop growing before floats overflow.
_MAX_DOUBLINGS = 64


def backoff_ceiling(attempt: int, base: float, cap: float) -> float:
    """The upper bound of the draw for ``attempt`` (1-based): ``min(cap, base * 2**(attempt-1))``.

    Monotone non-decreasing in ``attempt``, never above ``cap``.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must not be negative")
    doublings = min(attempt - 1, _MAX_DOUBLINGS)
    return min(cap, base * float(2**doublings))


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before ``attempt`` + 1: uniform in [0, backoff_ceiling(attempt, ...)]."""
    ceiling = backoff_ceiling(attempt, base, cap)
    draw = (rng or random).uniform(0.0, ceiling)
    return min(max(draw, 0.0), ceiling)  # uniform may round a hair past its bounds


def retry_delay(
    attempt: int,
    base: float,
    cap: float,
    retry_after: float | None,
    ceiling: float,
    rng: random.Random | None = None,
) -> float:
    """The jittered backoff, but never sooner than the provider's ``Retry-After``.

    ``ceiling`` is a hard limit above everything, Retry-After included: a provider asking for
    an hour must not park a countdown past the broker's visibility timeout (the message would
    be redelivered while it waits).
    """
    delay = backoff_delay(attempt, base, cap, rng)
    if retry_after is not None and retry_after > delay:
        delay = retry_after
    return max(0.0, min(delay, ceiling))
