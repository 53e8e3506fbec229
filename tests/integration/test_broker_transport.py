"""The worker's broker transport: one redis-py client per channel, kombu's behaviour otherwise."""

from __future__ import annotations

import pytest
import redis
from celery import Celery
from kombu import Connection

from worker.app import ISSUE_QUEUE, _worker_transport
from worker.broker import Transport, transport_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "worker.broker:Transport"),
        ("redis://:secret@redis:6379/3", "worker.broker:Transport"),
        ("rediss://redis:6380/0", None),
        ("sentinel://redis:26379", None),
        ("redis+socket:///tmp/redis.sock", None),
        ("amqp://guest:guest@127.0.0.1:5672//", None),
    ],
)
def test_only_plain_redis_urls_take_the_worker_transport(url: str, expected: str | None) -> None:
    assert transport_for(url) == expected


def test_a_starting_worker_switches_its_app_to_the_transport(celery_app: Celery) -> None:
    assert celery_app.conf.broker_transport is None  # producers, beat and Flower: kombu's own
    _worker_transport(conf=celery_app.conf)
    assert celery_app.conf.broker_transport == "worker.broker:Transport"
    with celery_app.connection_for_write() as connection:
        assert isinstance(connection.transport, Transport)


def test_a_worker_of_another_app_is_left_alone(celery_app: Celery) -> None:
    other = Celery("other", broker=celery_app.conf.broker_url)
    _worker_transport(conf=other.conf)
    assert other.conf.broker_transport is None


def test_a_channel_reuses_one_client_and_rebuilds_it_with_a_new_pool(redis_url: str) -> None:
    with Connection(redis_url, transport=Transport) as connection:
        channel = connection.default_channel
        first = channel._create_client()
        assert channel._create_client() is first
        assert first.ping()
        channel._pool = None  # what kombu does after a lost connection
        rebuilt = channel._create_client()
        assert rebuilt is not first
        assert rebuilt.connection_pool is channel.pool
        assert channel._create_client() is rebuilt


def test_messages_published_and_consumed_through_the_transport_arrive_once(
    redis_url: str, real_redis: redis.Redis
) -> None:
    with Connection(redis_url, transport=Transport) as connection:
        queue = connection.SimpleQueue(ISSUE_QUEUE)
        for n in range(20):
            queue.put({"n": n})
        received = []
        for _ in range(20):
            message = queue.get(timeout=5)
            received.append(message.payload["n"])
            message.ack()
        queue.close()
    assert received == list(range(20))
    assert real_redis.llen(ISSUE_QUEUE) == 0
