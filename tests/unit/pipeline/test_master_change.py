"""A promotion of the store's master that lost the move before a POST: the job reads as
never POSTed, and only the store's era (``store/lua/era.lua``) stands between it and a
second payment. fakeredis has no INFO, so the promotion is played by hand: the store is put
back as it was before the lost moves (a replica that never received them), and the era is
raised as ``era.lua`` raises it on a promoted replica. ``tests/integration/test_era.py``
plays it with a real replica."""

from __future__ import annotations

import time

import redis

from tests.fixtures.grants import message
from tests.fixtures.simulation import World, state
from worker.domain.grant import CreditGrant, Provider
from worker.domain.states import JobState
from worker.pipeline.results import Result
from worker.store.keys import Keys


def snapshot(client: redis.Redis) -> dict[bytes, bytes]:
    return {key: client.dump(key) for key in client.keys("*")}  # type: ignore[misc]


def promote(world: World, before: dict[bytes, bytes], *, raise_era: bool = True) -> None:
    """The master dies; a replica that holds the store as it was at ``before`` takes over."""
    client = world.store.redis
    client.flushdb()
    for key, value in before.items():
        client.restore(key, 0, value)
    if raise_era:
        raise_the_era(world)


def raise_the_era(world: World) -> None:
    """What ``era.lua`` does on the first script a promoted replica runs."""
    world.store.redis.hincrby(Keys.ERA, "era", 1)
    world.store.redis.hset(Keys.ERA, "since", world.clock.now)


def hand_over(world: World, m: dict[str, object]) -> dict[bytes, bytes]:
    """Create the job, take the replica's copy, then let the old master POST and confirm."""
    world.store.create(CreditGrant.parse(m))
    replica = snapshot(world.store.redis)
    world.scheduler.issue(m, 0.0)
    world.run()
    return replica


def test_a_post_whose_move_the_promotion_lost_is_found_in_the_listing_not_sent_again(
    world: World,
) -> None:
    inv = world.providers[Provider.INVETERATE]
    m = message()
    replica = hand_over(world, m)
    assert state(world) is JobState.CONFIRMED and inv.submits == 1
    promote(world, replica)
    assert state(world) is JobState.QUEUED  # the promotion forgot the POST
    world.scheduler.issue(m, 0.0)  # the reconciler re-drives the queued job
    world.run()
    assert state(world) is JobState.CONFIRMED
    assert inv.submits == 1 and inv.credits_for(world.marker("g1")) == 1
    job = world.store.get("g1")
    assert job is not None
    assert Result.MASTER_CHANGED in world.outcomes
    assert any("master was promoted" in h["reason"] for h in job.history)


def test_without_the_era_the_same_lost_move_pays_twice(world: World) -> None:
    """What the era prevents: the threat is real in this world, so the test above can fail."""
    inv = world.providers[Provider.INVETERATE]
    m = message()
    replica = hand_over(world, m)
    promote(world, replica, raise_era=False)
    world.scheduler.issue(m, 0.0)
    world.run()
    assert inv.credits_for(world.marker("g1")) == 2


def test_a_job_never_posted_before_the_promotion_is_posted_once_the_listing_proves_it(
    world: World,
) -> None:
    inv = world.providers[Provider.INVETERATE]
    inv.lag = 5.0
    m = message()
    world.store.create(CreditGrant.parse(m))
    raise_the_era(world)  # promoted before its first delivery
    # A grant handed over after the promotion is stamped with the new era and POSTed at once;
    # its credit showing is the witness that the listing shows writes that late.
    w = message("witness", customer_id="m-witness")
    world.store.create(CreditGrant.parse(w))
    world.scheduler.issue(m, 0.0)
    world.scheduler.issue(w, 60.0)
    world.run()
    assert state(world) is JobState.CONFIRMED and state(world, "witness") is JobState.CONFIRMED
    assert inv.submits == 2 and inv.credits_for(world.marker("g1")) == 1
    assert world.outcomes[0] == Result.MASTER_CHANGED


def test_chargebee_after_a_lost_move_retries_with_the_same_key_and_pays_once(world: World) -> None:
    world.clock.now = time.time()  # the store stamps its moves with the real clock
    cb = world.providers[Provider.CHARGEBEE]
    cb.lag = 120.0  # not in the listing yet: the idempotency record answers the retry
    m = message(provider="chargebee", customer_id="c-1")
    world.store.create(CreditGrant.parse(m))
    replica = snapshot(world.store.redis)
    world.scheduler.issue(m, 0.0)
    world.run(until=lambda: cb.submits == 1)
    promote(world, replica)
    world.scheduler.queue.clear()  # the old master's schedule went with it
    world.scheduler.issue(m, 0.0)
    world.run()
    assert state(world) is JobState.CONFIRMED
    assert cb.submits == 2 and cb.credits_for(world.marker("g1")) == 1
