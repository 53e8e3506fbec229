"""The sliding-window budget with a hand-moved clock."""

from __future__ import annotations

import pytest

from worker.sandbox.ratelimit import SlidingWindow


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_admits_up_to_the_limit_then_says_how_long_to_wait() -> None:
    clock = Clock()
    window = SlidingWindow(clock)
    assert [window.admit(3, 60) for _ in range(3)] == [None, None, None]
    clock.now += 10
    assert window.admit(3, 60) == pytest.approx(50.0)


def test_the_window_slides_one_call_at_a_time() -> None:
    clock = Clock()
    window = SlidingWindow(clock)
    window.admit(2, 10)
    clock.now += 4
    window.admit(2, 10)
    clock.now += 6  # the first call just left the window
    assert window.admit(2, 10) is None
    assert window.admit(2, 10) == pytest.approx(4.0)  # the second leaves at t+14


def test_refused_calls_do_not_spend_the_budget() -> None:
    clock = Clock()
    window = SlidingWindow(clock)
    window.admit(1, 5)
    for _ in range(10):
        assert window.admit(1, 5) is not None
    clock.now += 5
    assert window.admit(1, 5) is None


def test_reset_restores_the_whole_budget() -> None:
    window = SlidingWindow(Clock())
    window.admit(1, 60)
    window.reset()
    assert window.admit(1, 60) is None
