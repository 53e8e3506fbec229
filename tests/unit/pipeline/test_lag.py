"""The learned first-read delay: one step up per sweep at most, however many listings it read."""

from __future__ import annotations

import math

import pytest

from worker.domain.grant import Provider
from worker.domain.job import Job
from worker.domain.states import JobState
from worker.pipeline.lag import LearnedLag
from worker.store.jobs import JobStore

NOW = 1_800_000_000.0
INV = Provider.INVETERATE


def waiting(submitted_ago: float) -> Job:
    at = NOW - submitted_ago
    return Job(
        "k",
        JobState.SUBMITTED,
        {"provider": "inveterate"},
        "f",
        1,
        3,
        at,
        at,
        at,
        extra={"submitted_at": repr(at)},
    )


@pytest.fixture
def lag(store: JobStore) -> LearnedLag:
    return LearnedLag(store, initial=2.0, ceiling=60.0, clock=lambda: NOW)


def test_a_sweep_of_early_reads_grows_the_delay_one_step_not_one_per_read(lag: LearnedLag) -> None:
    lag.learn(INV, [(None, [waiting(2.0)])] * 25)
    assert lag.delay(INV) == pytest.approx(2.0 * LearnedLag.GROW)


def test_each_read_that_found_everything_promptly_shortens_the_delay(lag: LearnedLag) -> None:
    lag.learn(INV, [(3.0, [])] * 10)
    assert lag.delay(INV) == pytest.approx(2.0 * LearnedLag.SHRINK**10)


def test_reads_made_late_say_nothing_however_much_they_found(lag: LearnedLag) -> None:
    """Under load reads come late and find everything: that is no sign of a short lag."""
    lag.learn(INV, [(4.5, [])] * 25)  # the youngest found had waited 4.5 s, past 1.5 x 2 + 1
    assert lag.delay(INV) == 2.0


def test_one_early_read_among_many_found_weighs_as_much_as_they_do(lag: LearnedLag) -> None:
    early = (None, [waiting(2.0)])
    lag.learn(INV, [early] + [(2.5, [])] * 4)  # 1 in 5 early: above the 1-in-6 balance
    grown = lag.delay(INV)
    assert grown == pytest.approx(2.0 * LearnedLag.GROW * LearnedLag.SHRINK**4)
    assert grown > 2.0
    lag.learn(INV, [early] + [(2.5, [])] * 7)  # 1 in 8: below it
    assert lag.delay(INV) < grown


def test_jobs_missed_long_after_their_post_say_nothing_of_the_lag(lag: LearnedLag) -> None:
    lag.learn(INV, [(None, [waiting(120.0)])] * 3)
    assert lag.delay(INV) == 2.0


def test_the_delay_stays_between_the_floor_and_the_ceiling(store: JobStore) -> None:
    lag = LearnedLag(store, initial=0.21, ceiling=2.5, clock=lambda: NOW)
    lag.learn(INV, [(0.5, [])])
    assert lag.delay(INV) == LearnedLag.FLOOR
    for _ in range(int(math.log(2.5 / 0.2) / math.log(LearnedLag.GROW)) + 2):
        lag.learn(INV, [(None, [waiting(0.5)])])
    assert lag.delay(INV) == 2.5


def test_the_learned_delay_is_shared_through_the_store(store: JobStore) -> None:
    LearnedLag(store, initial=2.0, ceiling=60.0, clock=lambda: NOW).learn(
        INV, [(None, [waiting(1)])]
    )
    fresh = LearnedLag(store, initial=2.0, ceiling=60.0, clock=lambda: NOW)
    assert fresh.delay(INV) == pytest.approx(2.6)
