"""A worker SIGKILLed mid-batch, and a lagging listing: still one credit per key, on time."""

from __future__ import annotations

import time
from collections.abc import Callable

from celery import Celery

from tests.fixtures.exactly_once import assert_exactly_once, confirmed_count
from tests.fixtures.grants import grants
from tests.fixtures.witnesses import Witnesses
from tests.fixtures.workers import Fleet, wait_until
from worker.domain.states import JobState
from worker.producer import enqueue_many
from worker.sandbox import Sandbox
from worker.store.jobs import JobStore

RECOVERY_BOUND_SECONDS = 60  # lease (14 s with a 1 s HTTP timeout) + sweep grace + work


def test_a_worker_killed_mid_batch_loses_nothing_and_pays_nothing_twice(
    real_store: JobStore,
    celery_app: Celery,
    make_sandbox: Callable[..., Sandbox],
    fleet_factory: Callable[..., Fleet],
) -> None:
    sandbox = make_sandbox(latency=0.1, lag=0.3)
    fleet = fleet_factory(sandbox)
    victim = fleet.start_worker(concurrency=8)
    fleet.start_worker(concurrency=8)
    fleet.start_beat()
    batch = grants(150, prefix="kill")
    keys = [g["idempotency_key"] for g in batch]
    enqueue_many(batch, store=real_store, app=celery_app)

    def started() -> bool:
        counts = real_store.count_by_state()
        return counts["submitted"] + counts["confirmed"] >= 15

    assert wait_until(started, timeout=60, interval=0.02)
    fleet.kill(victim)  # SIGKILL mid-batch: no cleanup, POSTs and messages in flight
    killed_at = time.monotonic()
    in_flight = real_store.count_by_state()
    fleet.start_worker(concurrency=8)
    # The shop keeps selling: a POST the kill cut off may never have reached the provider,
    # and only a later credit shown in the listing lets creditq prove that and POST again.
    shop = Witnesses(real_store, lambda g: enqueue_many(g, store=real_store, app=celery_app))

    def all_confirmed() -> bool:
        shop.tick(keys)
        return confirmed_count(real_store) == 150 + len(shop.sent)

    done = wait_until(all_confirmed, timeout=RECOVERY_BOUND_SECONDS)
    assert done, (in_flight, real_store.count_by_state(), fleet.log_text()[-3000:])
    print(
        f"\nkilled with {in_flight}; all 150 confirmed "
        f"{time.monotonic() - killed_at:.1f}s after the kill ({len(shop.sent)} witnesses)"
    )
    assert_exactly_once(real_store, sandbox, keys + shop.sent)


def test_a_lagging_listing_does_not_hold_worker_slots(
    real_store: JobStore,
    celery_app: Celery,
    make_sandbox: Callable[..., Sandbox],
    fleet_factory: Callable[..., Fleet],
) -> None:
    """Two worker slots, a listing 4 s behind: had a worker waited for the lag, two
    grants would be issued per 4 s. Instead every POST lands before the first credit
    is even visible, and confirmation follows one lag later."""
    lag = 4.0
    sandbox = make_sandbox(latency=0.02, lag=lag)
    fleet = fleet_factory(sandbox, CREDITQ_CONFIRM_FIRST_POLL_SECONDS=str(lag))
    fleet.start_worker(concurrency=2)
    batch = grants(40, prefix="lag")
    keys = [g["idempotency_key"] for g in batch]
    started = time.time()
    enqueue_many(batch, store=real_store, app=celery_app)

    def all_submitted() -> bool:
        jobs = real_store.get_many(keys)
        return all(
            j is not None and j.state in (JobState.SUBMITTED, JobState.CONFIRMED) for j in jobs
        )

    assert wait_until(all_submitted, timeout=30, interval=0.05)
    entries = sandbox.entries()
    last_post = max(e.created_at for e in entries)
    first_visible = min(e.visible_at for e in entries)
    assert last_post < first_visible, "a worker slot waited for the listing"
    assert wait_until(lambda: confirmed_count(real_store) == 40, timeout=60)
    finished = time.time()
    print(
        f"\nlag {lag}s, 2 slots: 40 POSTs in {last_post - started:.2f}s, "
        f"all confirmed in {finished - started:.2f}s; "
        f"{sandbox.stats()['inveterate']['calls'].get('list', 0)}"
        f"+{sandbox.stats()['chargebee']['calls'].get('list', 0)} listing reads"
    )
    assert_exactly_once(real_store, sandbox, keys)
