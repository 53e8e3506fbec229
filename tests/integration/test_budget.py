"""The request budget on a real Redis, hammered by many threads over one or two clients."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from worker.budget import ProviderBudget
from worker.domain.grant import Provider
from worker.store.keys import BudgetKeys

PER_MINUTE = 600  # 10 per second, the figure the fleet test runs at
INTERVAL = 60 / PER_MINUTE
HAMMER_SECONDS = 2.0
THREADS = 20
# The budget works in whole microseconds; interval minus this is a gap too short.
ROUNDING = 1e-6


def hammer(budgets: list[ProviderBudget]) -> tuple[list[float], float]:
    """Every thread calls ``try_acquire`` in a tight loop; return the server's time of each
    grant (the caller's clock would add its thread switching to every gap) and the seconds
    the hammering lasted."""
    grants: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS + 1)
    stop = threading.Event()

    def run(budget: ProviderBudget) -> None:
        start.wait()
        while not stop.is_set():
            wait, at = budget.try_acquire_at()
            if wait == 0.0:
                with lock:
                    grants.append(at)

    threads = [
        threading.Thread(target=run, args=(budgets[i % len(budgets)],)) for i in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    began = time.perf_counter()  # before any thread may call: no grant precedes it
    start.wait()
    stop.wait(HAMMER_SECONDS)
    stop.set()
    for thread in threads:
        thread.join()
    return sorted(grants), time.perf_counter() - began


def check_within_rate(grants: list[float], elapsed: float) -> None:
    allowed = elapsed * PER_MINUTE / 60 + 1
    print(f"granted {len(grants)} of at most {allowed:.1f} in {elapsed:.3f} s")
    assert len(grants) <= allowed
    # Nor may the threads starve each other: the budget is spent, not wasted.
    assert len(grants) >= HAMMER_SECONDS * PER_MINUTE / 60 * 0.8
    gaps = [later - earlier for earlier, later in itertools.pairwise(grants)]
    print(f"smallest gap {min(gaps):.6f} s, largest {max(gaps):.6f} s")
    assert min(gaps) >= INTERVAL - ROUNDING


@pytest.fixture
def second_client(redis_url: str) -> Iterator[Callable[[], redis.Redis]]:
    """Clients with their own connection pools, as other worker processes would have."""
    clients: list[redis.Redis] = []

    def make() -> redis.Redis:
        clients.append(redis.Redis.from_url(redis_url, decode_responses=True))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def test_twenty_threads_never_get_more_than_the_rate(real_redis: redis.Redis) -> None:
    budget = ProviderBudget(real_redis, Provider.INVETERATE, PER_MINUTE)
    grants, elapsed = hammer([budget])
    check_within_rate(grants, elapsed)
    assert budget.snapshot()["calls_last_minute"] == len(grants)


def test_two_clients_share_one_budget(
    real_redis: redis.Redis, second_client: Callable[[], redis.Redis]
) -> None:
    budgets = [
        ProviderBudget(real_redis, Provider.CHARGEBEE, PER_MINUTE),
        ProviderBudget(second_client(), Provider.CHARGEBEE, PER_MINUTE),
    ]
    grants, elapsed = hammer(budgets)
    check_within_rate(grants, elapsed)


def test_a_pause_from_one_client_stops_the_other_until_it_ends(
    real_redis: redis.Redis, second_client: Callable[[], redis.Redis]
) -> None:
    paused = ProviderBudget(real_redis, Provider.INVETERATE, PER_MINUTE)
    other = ProviderBudget(second_client(), Provider.INVETERATE, PER_MINUTE)
    paused.pause(0.3)
    wait = other.try_acquire()
    assert 0.2 < wait <= 0.3
    deadline = time.monotonic() + 2
    while (wait := other.try_acquire()) > 0.0:
        assert time.monotonic() < deadline, "the pause never ended"
        time.sleep(min(wait, 0.05))
    assert paused.paused_for() == 0.0


def test_every_budget_key_but_the_429_total_expires(real_redis: redis.Redis) -> None:
    budget = ProviderBudget(real_redis, Provider.CHARGEBEE, PER_MINUTE)
    budget.try_acquire()
    budget.record_confirmed(3)
    assert budget.pause_after_429(None) == 60.0
    keys = real_redis.keys(f"{BudgetKeys.base(Provider.CHARGEBEE)}:*")
    total = BudgetKeys.rate_limited_total(Provider.CHARGEBEE)
    assert total in keys and len(keys) == 5
    assert all(real_redis.ttl(k) > 0 for k in keys if k != total)
    assert budget.snapshot()["calls_per_confirmed_grant"] == round(1 / 3, 3)
