"""The move before a POST is held by the replicas asked for, or the POST does not leave
(issue 14, point 10; CREDITQ_REDIS_MIN_REPLICAS): a failover must not forget a move whose
POST went out, or the job would be POSTed again from ``queued``."""

from __future__ import annotations

import pytest
import redis

from tests.fixtures.simulation import World
from worker.domain.grant import CreditGrant, Provider
from worker.domain.states import JobState
from worker.store.jobs import JobStore

pytestmark = pytest.mark.integration


def grant() -> CreditGrant:
    return CreditGrant(idempotency_key="held", provider="inveterate", customer_id="m1", amount="5")


def test_a_move_no_replica_holds_is_put_off_and_nothing_is_posted(real_redis: redis.Redis) -> None:
    """No replica answers in time (there is none): the job goes back to queued, the attempt
    given back, and the provider never sees a POST."""
    store = JobStore(real_redis, min_replicas=1)
    world = World(store)
    world.store.create(grant())
    world.pipeline.issue(grant().to_message())
    job = world.store.get("held")
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 0
    assert "not posted" in job.history[-1]["reason"]
    assert world.providers[Provider.INVETERATE].submits == 0
    assert world.scheduler.queue, "the issue is scheduled again"


def test_without_replicas_asked_a_move_is_held_as_it_stands(real_redis: redis.Redis) -> None:
    world = World(JobStore(real_redis, min_replicas=0))
    world.store.create(grant())
    world.scheduler.issue(grant().to_message(), 0.0)
    world.run()
    assert world.store.get("held").state is JobState.CONFIRMED  # type: ignore[union-attr]
