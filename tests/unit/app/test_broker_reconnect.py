"""A worker rides through a lost broker: it waits for it in place, quietly and briefly,
before Celery's slow retry takes over (a process that never had one is told at once), and its
tasks in flight finish rather than being cancelled."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery.exceptions import CPendingDeprecationWarning
from celery.worker import state as worker_state
from celery.worker.consumer.consumer import CANCEL_TASKS_BY_DEFAULT
from kombu.transport import redis as kombu_redis

from worker.app import _quiet_the_cancel_notice, broker, create_app
from worker.app.broker import Transport


class Flaky:
    """kombu's ``establish_connection`` failing ``failures`` times, then connecting."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or redis.exceptions.ConnectionError("Connection refused")
        self.calls = 0

    def __call__(self, transport: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return transport


class Clock:
    """``time.monotonic`` and ``time.sleep`` of the module: sleeping moves the clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(broker.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(broker.time, "sleep", fake.sleep)
    return fake


@pytest.fixture(autouse=True)
def fresh_process() -> Iterator[None]:
    broker._had_a_broker.clear()
    yield
    broker._had_a_broker.clear()


def transport_with(monkeypatch: pytest.MonkeyPatch, flaky: Flaky) -> Transport:
    monkeypatch.setattr(kombu_redis.Transport, "establish_connection", lambda self: flaky(self))
    return Transport.__new__(Transport)  # establish_connection needs no client here


def test_a_process_that_never_had_its_broker_is_told_at_once(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    flaky = Flaky(failures=1)
    with pytest.raises(redis.exceptions.ConnectionError):
        transport_with(monkeypatch, flaky).establish_connection()
    assert flaky.calls == 1 and clock.sleeps == []


def test_a_lost_broker_is_waited_for_in_place_every_half_second_at_most(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    broker._had_a_broker.set()
    flaky = Flaky(failures=7)
    transport = transport_with(monkeypatch, flaky)
    assert transport.establish_connection() is transport
    assert flaky.calls == 8
    assert clock.sleeps == [0.1, 0.2, 0.4, 0.5, 0.5, 0.5, 0.5]


def test_a_replica_answering_is_waited_for_like_a_broker_gone(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    broker._had_a_broker.set()
    flaky = Flaky(failures=2, error=redis.exceptions.ReadOnlyError("a replica"))
    transport = transport_with(monkeypatch, flaky)
    assert transport.establish_connection() is transport
    assert flaky.calls == 3


def test_the_first_connection_marks_the_process_as_having_had_its_broker(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    transport_with(monkeypatch, Flaky(failures=0)).establish_connection()
    assert broker._had_a_broker.is_set()


def test_a_broker_gone_for_good_goes_back_to_celerys_retry_within_the_wait(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    broker._had_a_broker.set()
    flaky = Flaky(failures=10_000)
    start = clock.now
    with pytest.raises(redis.exceptions.ConnectionError):
        transport_with(monkeypatch, flaky).establish_connection()
    assert clock.now - start <= broker.RECONNECT_WAIT_SECONDS
    assert clock.now - start >= broker.RECONNECT_WAIT_SECONDS - broker.RECONNECT_MAX_DELAY_SECONDS


@pytest.mark.parametrize("flag", ["should_stop", "should_terminate"])
def test_a_worker_asked_to_stop_stops_waiting_and_lets_the_error_go(
    monkeypatch: pytest.MonkeyPatch, clock: Clock, flag: str
) -> None:
    broker._had_a_broker.set()
    monkeypatch.setattr(worker_state, flag, 0)  # what Celery's signal handlers set
    flaky = Flaky(failures=10_000)
    with pytest.raises(redis.exceptions.ConnectionError):
        transport_with(monkeypatch, flaky).establish_connection()
    assert flaky.calls == 1 and clock.sleeps == []


def test_tasks_in_flight_are_not_cancelled_and_celerys_notice_about_it_is_quiet() -> None:
    """The thread pool cannot cancel a task (Celery logged a traceback per task trying), and a
    task cancelled mid-POST would leave its outcome unknown: they finish instead. Celery then
    warns at every lost connection, after its log setup made such warnings always show."""
    assert create_app().conf.worker_cancel_long_running_tasks_on_connection_loss is False
    with warnings.catch_warnings(record=True) as shown:
        warnings.filterwarnings("always", category=CPendingDeprecationWarning)  # Celery's
        _quiet_the_cancel_notice()
        warnings.warn(CANCEL_TASKS_BY_DEFAULT, CPendingDeprecationWarning, stacklevel=1)
        warnings.warn("another notice", CPendingDeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in shown] == ["another notice"]
