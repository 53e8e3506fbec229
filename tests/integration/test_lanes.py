"""Lanes with real workers, a real Redis and the sandbox enforcing a short budget: an
interactive grant overtakes a bulk backlog, and a bulk grant is not starved by a stream of
interactive ones. The budget is 4 calls a second per provider, as the sandbox counts it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from celery import Celery

from tests.fixtures.exactly_once import assert_exactly_once, confirmed_count
from tests.fixtures.workers import Fleet, wait_until
from worker.domain.fields import JobField as F
from worker.producer import enqueue, enqueue_many
from worker.sandbox import Sandbox
from worker.store.jobs import JobStore

BUDGET = {
    "CREDITQ_INVETERATE_RATE_LIMIT_PER_MINUTE": "240",
    "CREDITQ_CHARGEBEE_RATE_LIMIT_PER_MINUTE": "240",
}


def grants(prefix: str, n: int, **fields: Any) -> list[dict[str, Any]]:
    return [
        {
            "idempotency_key": f"{prefix}-{i:02d}",
            "provider": "chargebee",
            "customer_id": f"{prefix}-c{i}",
            "amount": f"{1 + i % 9}.{i % 100:02d}",
            **fields,
        }
        for i in range(n)
    ]


def first_post(store: JobStore, key: str) -> float:
    job = store.get(key, history=False)
    assert job is not None, key
    at = job.number(F.FIRST_POST_AT)
    assert at is not None, key
    return at


def start(make_sandbox: Callable[..., Sandbox], fleet_factory: Callable[..., Fleet]) -> Sandbox:
    sandbox = make_sandbox(rate_limit=12, rate_window=3.0, latency=0.02, lag=0.5)
    fleet = fleet_factory(sandbox, CREDITQ_CONFIRM_FIRST_POLL_SECONDS="0.5", **BUDGET)
    fleet.start_worker(concurrency=8)
    fleet.start_worker(concurrency=8)
    fleet.start_beat()
    return sandbox


def test_an_interactive_grant_overtakes_a_bulk_backlog(
    real_store: JobStore,
    celery_app: Celery,
    make_sandbox: Callable[..., Sandbox],
    fleet_factory: Callable[..., Fleet],
) -> None:
    sandbox = start(make_sandbox, fleet_factory)
    backlog = grants("bulk", 40, priority="bulk")
    enqueue_many(backlog, store=real_store, app=celery_app)
    assert wait_until(lambda: sandbox.stats()["chargebee"]["applied"] >= 4, timeout=60)
    refund = grants("refund", 1)[0]
    handed_over = time.time()
    enqueue(refund, store=real_store, app=celery_app)
    done = wait_until(lambda: confirmed_count(real_store) == 41, timeout=120)
    assert done, real_store.count_by_state()
    keys = [g["idempotency_key"] for g in [*backlog, refund]]
    assert_exactly_once(real_store, sandbox, keys)
    job = real_store.get(refund["idempotency_key"])
    assert job is not None
    waited = (job.number(F.CONFIRMED_AT) or 0.0) - handed_over
    behind = [
        g
        for g in backlog
        if first_post(real_store, g["idempotency_key"])
        > first_post(real_store, refund["idempotency_key"])
    ]
    # first come, first served would have POSTed all of the ~30 still waiting before it, and
    # confirmed it some 8 s later; its POST and its read both go first
    assert len(behind) >= 20, len(behind)
    assert waited < 5.0, waited
    stats = sandbox.stats()["chargebee"]
    assert stats["rate_limited"] == 0


def test_a_bulk_grant_is_not_starved_by_a_stream_of_interactive_ones(
    real_store: JobStore,
    celery_app: Celery,
    make_sandbox: Callable[..., Sandbox],
    fleet_factory: Callable[..., Fleet],
) -> None:
    sandbox = start(make_sandbox, fleet_factory)
    stream = grants("refund", 40)
    enqueue_many(stream, store=real_store, app=celery_app)
    assert wait_until(lambda: sandbox.stats()["chargebee"]["applied"] >= 2, timeout=60)
    campaign = grants("campaign", 1, priority="bulk")[0]
    enqueue(campaign, store=real_store, app=celery_app)
    done = wait_until(lambda: confirmed_count(real_store) == 41, timeout=120)
    assert done, real_store.count_by_state()
    assert_exactly_once(real_store, sandbox, [g["idempotency_key"] for g in [*stream, campaign]])
    posted = first_post(real_store, campaign["idempotency_key"])
    after = [g for g in stream if first_post(real_store, g["idempotency_key"]) > posted]
    # one slot in ten goes to bulk while interactive grants wait: it does not wait for all
    assert len(after) >= 15, len(after)
