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


def test_a_grant_no_replica_holds_is_refused_as_retryable_and_kept(real_redis: redis.Redis) -> None:
    """``enqueue`` returns only once the job is held by the replicas asked for; without them
    it says so in one retryable error, and the job stays (its message is sent: a worker
    POSTs only a held move), so handing it over again is a duplicate, never a second job."""
    from tests.fixtures.celery import PublishRecorder
    from worker.errors import NotReplicated
    from worker.producer import enqueue, enqueue_many

    store, recorder = JobStore(real_redis, min_replicas=1), PublishRecorder()
    with pytest.raises(NotReplicated, match="not yet held by 1 replica"):
        enqueue(grant(), store=store, app=recorder)  # type: ignore[arg-type]
    assert store.get("held") is not None and len(recorder.sent) == 1
    with pytest.raises(NotReplicated):
        enqueue(grant(), store=store, app=recorder)  # type: ignore[arg-type]
    assert len(recorder.sent) == 1  # the second hand-over was a duplicate
    other = CreditGrant(idempotency_key="many", provider="chargebee", customer_id="c", amount="1")
    with pytest.raises(NotReplicated, match="'many'"):
        enqueue_many([other], store=store, app=recorder)  # type: ignore[arg-type]


def test_a_grant_a_replica_holds_is_accepted() -> None:
    from tests.fixtures.celery import PublishRecorder
    from worker.producer import enqueue
    from worker.store.embedded import EmbeddedRedis

    with EmbeddedRedis() as master, EmbeddedRedis() as replica:
        redis.Redis(port=replica.port).execute_command("REPLICAOF", "127.0.0.1", str(master.port))
        client = redis.Redis(port=master.port, decode_responses=True)
        client.set("probe", "1")  # the replica connects, syncs and acknowledges it
        assert any(int(client.execute_command("WAIT", 1, 100)) >= 1 for _ in range(100))
        result = enqueue(grant(), store=JobStore(client, min_replicas=1), app=PublishRecorder())  # type: ignore[arg-type]
        assert result.created
        copy = redis.Redis(port=replica.port, decode_responses=True)
        assert copy.hget("creditq:job:held", "state") == "queued"
