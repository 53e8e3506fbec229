"""Backoff: full jitter, always inside [0, cap], and never sooner than Retry-After."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.domain.backoff import backoff_ceiling, backoff_delay, retry_delay

attempts = st.integers(min_value=1, max_value=10_000)
bases = st.floats(min_value=0.001, max_value=1000, allow_nan=False)
caps = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@given(attempts, bases, caps, st.integers())
def test_delay_within_zero_and_cap(attempt: int, base: float, cap: float, seed: int) -> None:
    delay = backoff_delay(attempt, base, cap, random.Random(seed))
    assert 0.0 <= delay <= min(cap, backoff_ceiling(attempt, base, cap))


@given(attempts, bases, caps)
def test_ceiling_is_monotone_and_capped(attempt: int, base: float, cap: float) -> None:
    assert backoff_ceiling(attempt, base, cap) <= backoff_ceiling(attempt + 1, base, cap) <= cap


@given(
    attempts,
    bases,
    caps,
    st.none() | st.floats(min_value=0, max_value=1e7, allow_nan=False),
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
    st.integers(),
)
def test_retry_delay_honours_retry_after_under_the_ceiling(
    attempt: int, base: float, cap: float, retry_after: float | None, ceiling: float, seed: int
) -> None:
    delay = retry_delay(attempt, base, cap, retry_after, ceiling, random.Random(seed))
    assert 0.0 <= delay <= ceiling
    if retry_after is not None:
        assert delay >= min(retry_after, ceiling)


def test_ceiling_doubles_from_base() -> None:
    assert [backoff_ceiling(n, 2.0, 300.0) for n in range(1, 10)] == [
        2,
        4,
        8,
        16,
        32,
        64,
        128,
        256,
        300,
    ]


def test_same_seed_same_delay() -> None:
    assert backoff_delay(5, 2.0, 300.0, random.Random(7)) == backoff_delay(
        5, 2.0, 300.0, random.Random(7)
    )


def test_jitter_spreads_delays() -> None:
    rng = random.Random(1)
    assert len({round(backoff_delay(6, 2.0, 300.0, rng), 6) for _ in range(50)}) > 40


def test_attempt_counts_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        backoff_delay(0, 2.0, 300.0)
