"""Three real workers sharing each provider's request budget through Redis, against a
sandbox that enforces the budget the way the providers do."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from celery import Celery

from tests.fixtures.exactly_once import assert_exactly_once, confirmed_count
from tests.fixtures.workers import Fleet, wait_until
from worker.producer import enqueue_many
from worker.sandbox import Sandbox
from worker.store.jobs import JobStore

BUDGET = {
    "CREDITQ_INVETERATE_RATE_LIMIT_PER_MINUTE": "600",
    "CREDITQ_CHARGEBEE_RATE_LIMIT_PER_MINUTE": "600",
}


def member_grants(n: int, prefix: str, per_member: int = 5) -> list[dict[str, Any]]:
    """Half Inveterate (five grants per member), half Chargebee."""
    out = []
    for i in range(n):
        inveterate = i % 2 == 0
        out.append(
            {
                "idempotency_key": f"{prefix}-{i}",
                "provider": "inveterate" if inveterate else "chargebee",
                "customer_id": f"{prefix}-m{(i // 2) // per_member}",
                "amount": f"{1 + i % 9}.{i % 100:02d}",
            }
        )
    return out


def three_workers(fleet: Fleet) -> None:
    for _ in range(3):
        fleet.start_worker(concurrency=8)
    fleet.start_beat()


def test_three_workers_confirm_everything_without_one_429_from_a_budgeted_provider(
    real_store: JobStore,
    celery_app: Celery,
    make_sandbox: Callable[..., Sandbox],
    fleet_factory: Callable[..., Fleet],
) -> None:
    # 10 calls per second over a 3-second sliding window, per provider; creditq at 600/min.
    sandbox = make_sandbox(rate_limit=30, rate_window=3.0, latency=0.02, lag=0.5)
    fleet = fleet_factory(sandbox, **BUDGET)
    three_workers(fleet)
    batch = member_grants(160, "bud")
    enqueue_many(batch, store=real_store, app=celery_app)
    done = wait_until(lambda: confirmed_count(real_store) == 160, timeout=120)
    stats = sandbox.stats()
    assert done, (real_store.count_by_state(), stats)
    assert_exactly_once(real_store, sandbox, [g["idempotency_key"] for g in batch])
    assert stats["inveterate"]["rate_limited"] == 0 and stats["chargebee"]["rate_limited"] == 0
    calls = {p: sum(s["calls"].values()) for p, s in stats.items()}
    print(
        f"\ncalls per confirmed grant: inveterate {calls['inveterate'] / 80:.2f}, "
        f"chargebee {calls['chargebee'] / 80:.2f}; 429s: 0"
    )


def test_a_burst_of_429s_pauses_the_whole_fleet_and_loses_nothing(
    real_store: JobStore,
    celery_app: Celery,
    make_sandbox: Callable[..., Sandbox],
    fleet_factory: Callable[..., Fleet],
) -> None:
    sandbox = make_sandbox(latency=0.02)
    sandbox.fail_next("rate_limited", provider="inveterate", times=3, retry_after=2.0)
    fleet = fleet_factory(sandbox, **BUDGET)
    three_workers(fleet)
    batch = [g for g in member_grants(40, "burst") if g["provider"] == "inveterate"]
    started = time.time()
    enqueue_many(batch, store=real_store, app=celery_app)
    assert wait_until(lambda: confirmed_count(real_store) == len(batch), timeout=60)
    first_credit = min(e.created_at for e in sandbox.entries(provider="inveterate"))
    # The first call was answered 429 with Retry-After 2 s; had the fleet not paused, the
    # other workers would have credited at once.
    assert first_credit - started >= 2.0, first_credit - started
    assert sandbox.stats()["inveterate"]["rate_limited"] >= 1
    jobs = real_store.get_many([g["idempotency_key"] for g in batch])
    assert all(j is not None and j.attempts == 1 for j in jobs)  # 429s used no attempt
    assert_exactly_once(real_store, sandbox, [g["idempotency_key"] for g in batch])
